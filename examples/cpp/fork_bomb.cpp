// expect: ok
// options: --timeout 5
// stdout: fork() failed after
//
// The classic fork bomb, made to end: every process forks in a loop and every
// child joins in, until the sandbox's process limit (64 by default) makes
// fork() fail. The first process reports and exits 0 (status ok); the engine
// kills the rest when the run ends. --timeout 5 bounds it should the limit fail.
#include <cerrno>
#include <cstring>
#include <iostream>
#include <unistd.h>

int main() {
    const pid_t first = getpid();
    int children = 0;
    pid_t pid;
    while ((pid = fork()) >= 0)  // a child (pid == 0) keeps looping too
        if (pid > 0) children++;
    const int err = errno;
    if (getpid() != first)
        for (;;) pause();  // the others hold their process slots until the run ends
    std::cout << "fork() failed after " << children << " children of the first process: "
              << std::strerror(err) << '\n';
    return 0;
}
