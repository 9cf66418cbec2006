// expect: ok
// options: --args 'first "second word" 3'
// stdout: argc = 4
// stdout: argv[2] = second word
//
// Command-line arguments come from `--args` (split like a shell would).
#include <stdio.h>

int main(int argc, char **argv) {
    printf("argc = %d\n", argc);
    for (int i = 1; i < argc; i++) printf("argv[%d] = %s\n", i, argv[i]);
    return 0;
}
