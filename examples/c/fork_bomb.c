// expect: ok
// options: --timeout 5
// stdout: fork() failed after
//
// A fork bomb that ends: every process keeps forking, and every child joins
// in, so the number of processes doubles until fork() fails. The sandbox's
// process limit (64 by default) is what makes it fail - without it this would
// fill the machine's process table. The first process then reports how many
// children it made and exits 0, so the status is ok; the engine kills the
// sleeping rest of the tree when the run ends. --timeout 5 bounds the run in
// case the limit did not hold.
#define _POSIX_C_SOURCE 200809L  // fork, setsid, pid_t: -std=c17 alone is strict ISO C
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    const pid_t first = getpid();
    int children = 0;
    for (;;) {
        pid_t pid = fork();
        if (pid < 0) break;  // the process limit was reached
        if (pid > 0) children++;
        // pid == 0: a new child, which keeps forking too
    }
    int err = errno;
    if (getpid() != first) {
        for (;;) pause();  // the rest of the bomb just sits there, holding its process slot
    }
    printf("fork() failed after %d children of the first process: %s\n", children, strerror(err));
    return 0;
}
