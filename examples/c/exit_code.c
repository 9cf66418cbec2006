// expect: runtime_error
// stdout: giving up
// message: status 3
//
// A program that ends with a non-zero exit status is a runtime_error; its
// output up to that point is still shown.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    printf("giving up\n");
    fprintf(stderr, "something went wrong\n");
    exit(3);
}
