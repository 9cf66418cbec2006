// expect: ok
// options: --stdin '3 4 5\n10\n'
// stdout: read 4 numbers, sum = 22
//
// Reading standard input: the numbers come from `--stdin` (escapes like \n
// are understood). Without --stdin the program sees end-of-file at once.
#include <stdio.h>

int main(void) {
    long value, sum = 0;
    int count = 0;
    while (scanf("%ld", &value) == 1) {
        sum += value;
        count++;
    }
    printf("read %d numbers, sum = %ld\n", count, sum);
    return 0;
}
