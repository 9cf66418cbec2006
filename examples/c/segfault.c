// expect: signaled
// stdout: about to dereference NULL
// message: SIGSEGV
//
// A crash: writing through a NULL pointer raises SIGSEGV, and the status is
// signaled with the signal's name. The line printed before the crash is still
// delivered (C stdout is line-buffered in the sandbox).
#include <stdio.h>

int main(void) {
    volatile int *volatile p = NULL;  // volatile: the compiler must really do the store
    printf("about to dereference NULL\n");
    *p = 42;
    printf("not reached\n");
    return 0;
}
