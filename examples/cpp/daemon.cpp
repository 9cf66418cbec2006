// expect: ok
// stdout: parent exits now
//
// Double fork + setsid: the daemon leaves the run's session and process group,
// detaches its stdio and sleeps forever, while the parent exits 0 (status ok).
// The sandbox still has to kill the daemon at the end of the run.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

int main() {
    pid_t child = fork();
    if (child < 0) { std::perror("fork"); return 1; }
    if (child == 0) {
        setsid();
        if (fork() > 0) _exit(0);  // the session leader goes; the daemon is its orphan
        // Detach from the run's stdin/stdout/stderr, as a real daemon does.
        std::freopen("/dev/null", "r", stdin);
        std::freopen("/dev/null", "w", stdout);
        std::freopen("/dev/null", "w", stderr);
        for (;;) std::this_thread::sleep_for(std::chrono::minutes(1));
    }
    waitpid(child, nullptr, 0);
    std::cout << "daemon started; parent exits now\n";
    return 0;
}
