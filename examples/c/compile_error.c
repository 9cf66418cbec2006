// expect: compile_error
// message: error
//
// A program that does not compile: the status is compile_error, the message is
// the first error line, and the full gcc diagnostics are shown. Nothing runs.
#include <stdio.h>

int main(void) {
    int count = "three";  // a warning in C...
    printf("%d\n", count)  // ...and this missing semicolon is the error
    return 0;
}
