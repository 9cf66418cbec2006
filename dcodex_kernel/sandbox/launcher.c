/* dcodex-launch: start one sandboxed program and make sure nothing of it survives.
 *
 * Python cannot set rlimits or drop privileges in a child without preexec_fn (unsafe in the
 * threaded kernel and server), and chaining util-linux prlimit + setpriv + unshare costs one exec
 * each. This launcher does all of it in one exec:
 *
 *   launcher (L) --unshare(CLONE_NEWPID)--> init (A, pid 1 of the run) --> program (B)
 *
 * B: setrlimit, drop to the run's uid/gid, exec. A waits for B, writes B's wait status and rusage
 * to the stats fd, and exits: the kernel then kills every other process of the namespace, so a
 * double-forked setsid daemon dies with the run. A dies with L (PDEATHSIG), so the supervisor
 * ends everything by SIGKILLing L. Without a pid namespace (-N absent) A is a child subreaper
 * instead and kills every descendant it inherits before exiting. With -n the run also gets its own
 * IPC namespace, and with -N / -E a network namespace with no way out.
 *
 * usage: dcodex-launch [-n [-N|-E FD]] [-U] [-P PID] [-u UID -g GID] [-s STATSFD] [-l RES=SOFT:HARD]... -- PROG ARGS...
 *   -n  new pid namespace (needs root, or -U for a user namespace)
 *   -P  the engine's pid: die with it (PDEATHSIG)
 *   -s  fd to write "WAITSTATUS UTIME_US STIME_US MAXRSS_KB" of the program to
 *   -N  with -n: also a new network namespace (nothing but a down `lo`: no way out)
 *   -E  with -n: join the (empty) network namespace open on this fd instead
 *   -U  new user namespace mapping the caller's uid (unprivileged pid namespace)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LIMITS 16

static struct { int res; rlim_t soft, hard; } limits[MAX_LIMITS];
static int nlimits;

static void die(const char *what) {
    fprintf(stderr, "dcodex-launch: %s: %s\n", what, strerror(errno));
    _exit(125);
}

static int resource_by_name(const char *name) {
    static const struct { const char *name; int res; } table[] = {
        {"CPU", RLIMIT_CPU},     {"AS", RLIMIT_AS},       {"FSIZE", RLIMIT_FSIZE},
        {"NOFILE", RLIMIT_NOFILE}, {"NPROC", RLIMIT_NPROC}, {"CORE", RLIMIT_CORE},
        {"STACK", RLIMIT_STACK}, {"MEMLOCK", RLIMIT_MEMLOCK}, {"MSGQUEUE", RLIMIT_MSGQUEUE},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0) return table[i].res;
    return -1;
}

static void parse_limit(char *spec) {
    char *eq = strchr(spec, '='), *colon;
    if (!eq || !(colon = strchr(eq, ':')) || nlimits == MAX_LIMITS) {
        fprintf(stderr, "dcodex-launch: bad limit '%s'\n", spec);
        _exit(125);
    }
    *eq = 0;
    int res = resource_by_name(spec);
    if (res < 0) {
        fprintf(stderr, "dcodex-launch: unknown resource '%s'\n", spec);
        _exit(125);
    }
    limits[nlimits].res = res;
    limits[nlimits].soft = strtoull(eq + 1, NULL, 10);
    limits[nlimits].hard = strtoull(colon + 1, NULL, 10);
    nlimits++;
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0 || write(fd, text, strlen(text)) < 0) die(path);
    close(fd);
}

/* Without a pid namespace: kill every process that was reparented to us (we are a subreaper)
 * until none is left. Killed children's own children are reparented to us in turn. */
static void kill_descendants(void) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    for (;;) {
        FILE *f = fopen(path, "r");
        int pid, found = 0;
        if (f) {
            while (fscanf(f, "%d", &pid) == 1) {
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
                found = 1;
            }
            fclose(f);
        }
        while (waitpid(-1, NULL, WNOHANG) > 0) found = 1;
        if (!found) {
            if (waitpid(-1, NULL, 0) < 0 && errno == ECHILD) return;
        }
    }
}

int main(int argc, char **argv) {
    int newpid = 0, userns = 0, newnet = 0, netfd = -1, statsfd = -1, opt;
    long uid = -1, gid = -1, engine = -1;
    while ((opt = getopt(argc, argv, "+nNE:UP:u:g:s:l:")) != -1) {
        switch (opt) {
        case 'n': newpid = 1; break;
        case 'N': newnet = 1; break;
        case 'E': netfd = (int)strtol(optarg, NULL, 10); break;
        case 'U': userns = 1; break;
        case 'P': engine = strtol(optarg, NULL, 10); break;
        case 'u': uid = strtol(optarg, NULL, 10); break;
        case 'g': gid = strtol(optarg, NULL, 10); break;
        case 's': statsfd = (int)strtol(optarg, NULL, 10); break;
        case 'l': parse_limit(optarg); break;
        default: _exit(125);
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: dcodex-launch [-n [-N|-E FD]] [-U] [-P PID] [-u UID -g GID] [-s FD] [-l RES=S:H]... -- PROG...\n");
        _exit(125);
    }
    char **prog = argv + optind;

    /* If the engine dies (kernel killed on restart, server crash), the run dies with it:
     * nobody would enforce its wall clock any more. */
    if (engine > 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != (pid_t)engine) _exit(125); /* it died before we armed that */
    }

    if (newpid) {
        uid_t outer_uid = getuid();
        gid_t outer_gid = getgid();
        int flags = CLONE_NEWPID | CLONE_NEWIPC | (userns ? CLONE_NEWUSER : 0);
        if (newnet) flags |= CLONE_NEWNET;
        if (unshare(flags) < 0) die("unshare");
        if (userns) {
            char map[64];
            write_file("/proc/self/setgroups", "deny");
            snprintf(map, sizeof map, "%u %u 1\n", outer_uid, outer_uid);
            write_file("/proc/self/uid_map", map);
            snprintf(map, sizeof map, "%u %u 1\n", outer_gid, outer_gid);
            write_file("/proc/self/gid_map", map);
        }
        /* Joining the engine's one empty network namespace costs microseconds; creating one per
         * run costs about a millisecond. */
        if (netfd >= 0) {
            if (setns(netfd, CLONE_NEWNET) < 0) die("setns");
            close(netfd);
        }
        int alive[2]; /* A sees POLLHUP on alive[0] once L is gone */
        if (pipe(alive) < 0) die("pipe");
        pid_t init = fork();
        if (init < 0) die("fork");
        if (init > 0) {
            close(alive[0]);
            /* L: wait for the run's init; its exit tears the namespace down. */
            if (statsfd >= 0) close(statsfd);
            int st;
            while (waitpid(init, &st, 0) < 0 && errno == EINTR) {}
            _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(alive[1]);
        struct pollfd pfd = {alive[0], POLLIN, 0};
        if (poll(&pfd, 1, 0) != 0) _exit(125); /* L died before PDEATHSIG was armed */
        close(alive[0]);
    } else {
        prctl(PR_SET_CHILD_SUBREAPER, 1);
    }

    /* A: start the program. */
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        if (statsfd >= 0) close(statsfd);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* When memory runs out, the program is the out-of-memory killer's first choice, not
         * the kernel, the notebook server or the engine. Best effort. */
        int adj = open("/proc/self/oom_score_adj", O_WRONLY);
        if (adj >= 0) {
            if (write(adj, "1000", 4) < 0) {}
            close(adj);
        }
        for (int i = 0; i < nlimits; i++) {
            struct rlimit rl = {limits[i].soft, limits[i].hard};
            if (setrlimit(limits[i].res, &rl) < 0) die("setrlimit");
        }
        if (gid >= 0) {
            if (setgroups(0, NULL) < 0) die("setgroups");
            if (setresgid(gid, gid, gid) < 0) die("setgid");
        }
        if (uid >= 0 && setresuid(uid, uid, uid) < 0) die("setuid");
        execvp(prog[0], prog);
        fprintf(stderr, "dcodex-launch: cannot run %s: %s\n", prog[0], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(child, &status, 0, &ru) < 0) {
        if (errno != EINTR) die("wait4");
    }
    if (statsfd >= 0) {
        dprintf(statsfd, "%d %ld %ld %ld\n", status,
                (long)(ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec),
                (long)(ru.ru_stime.tv_sec * 1000000L + ru.ru_stime.tv_usec), ru.ru_maxrss);
        close(statsfd);
    }
    if (!newpid) kill_descendants();
    /* As the namespace's init, exiting kills every process left in it. */
    _exit(0);
}
