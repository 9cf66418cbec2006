// expect: wall_timeout
// options: --timeout 1
// stdout: going to sleep
// message: Wall-clock limit
//
// A program that sleeps uses no CPU, so only the wall-clock limit (here 1 s,
// default 10 s) can end it: the status is wall_timeout.
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("going to sleep\n");
    for (;;) pause();  // wait for a signal that never comes
}
