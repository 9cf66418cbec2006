// expect: ok
// stdout: read back 3 lines, total = 60
//
// File I/O in the sandbox: every run gets a private, empty temp directory as
// its working directory. The program may write files there and read them back;
// the directory (and the file) is deleted when the run ends.
#include <stdio.h>

int main(void) {
    FILE *f = fopen("numbers.txt", "w");
    if (!f) { perror("fopen for writing"); return 1; }
    for (int i = 1; i <= 3; i++) fprintf(f, "%d\n", i * 10);
    fclose(f);

    f = fopen("numbers.txt", "r");
    if (!f) { perror("fopen for reading"); return 1; }
    int value, lines = 0, total = 0;
    while (fscanf(f, "%d", &value) == 1) {
        lines++;
        total += value;
    }
    fclose(f);
    printf("read back %d lines, total = %d\n", lines, total);
    return 0;
}
