// expect: ok
// stdout: parent exits now
//
// A daemon escapes its parent the classic way: fork, setsid (a new session,
// out of the run's process group), fork again, close stdio - then sleeps
// forever. The parent exits 0 at once, so the status is ok; the sandbox must
// still find and kill the daemon when the run ends (the test checks that no
// process of the run is left).
#define _POSIX_C_SOURCE 200809L  // fork, setsid, pid_t: -std=c17 alone is strict ISO C
#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child == 0) {
        setsid();         // leave the run's session and process group
        if (fork() > 0) _exit(0);  // the session leader exits; its child is the daemon
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0); // detach from the run's stdin/stdout/stderr
        dup2(devnull, 1);
        dup2(devnull, 2);
        for (;;) sleep(60);
    }
    waitpid(child, NULL, 0);  // the first child exits at once; the daemon lives on
    printf("daemon started; parent exits now\n");
    return 0;
}
