// expect: ok
// stdout: Hello, world!
//
// The smallest program: print one line and exit with status 0.
#include <stdio.h>

int main(void) {
    printf("Hello, world!\n");
    return 0;
}
