/* dcodex-launch: start one sandboxed program, confine what it can touch, and make sure nothing
 * of it survives.
 *
 * Python cannot set rlimits, build a mount namespace or drop privileges in a child without
 * preexec_fn (unsafe in the threaded kernel and server), and chaining util-linux prlimit +
 * setpriv + unshare costs one exec each. This launcher does all of it in one exec:
 *
 *   launcher (L) --unshare(CLONE_NEWPID ...)--> init (A, pid 1 of the run) --> program (B)
 *
 * L: joins the run's cgroups (-C), unshares the namespaces, forks A and waits for it.
 * A: builds the run's filesystem (-m), copies the input files (-i) into the work dir, forks B,
 *    waits for it, kills every other process of the run, copies the output file (-o) out of
 *    the work dir (a regular file owned by the program, never through a link), writes the stats
 *    line and exits: as the namespace's init its exit kills whatever is left. A dies with L
 *    (PDEATHSIG), so the supervisor ends everything by SIGKILLing L. Without a pid namespace
 *    (-n absent) A is a child subreaper instead and kills every descendant it inherits.
 * B: no capabilities (empty bounding set), the run's uid, PDEATHSIG (after the uid change,
 *    which clears it), no_new_privs, the seccomp filter (-S), rlimits, exec.
 *
 * With -m the program sees a new root: read-only binds of the -r paths (system dirs, the
 * interpreter's prefixes), a fresh /proc of its pid namespace, a /dev of null, zero, full,
 * random and urandom, and one size-bounded tmpfs (-d bytes) holding its work dir /box, /tmp and
 * /dev/shm. Nothing else of the host: no home, no runtime dirs, no cache, no launcher, no /run.
 *
 * usage: dcodex-launch [options] -- PROG ARGS...
 *   -n          new pid + IPC namespace (needs root, or -U for a user namespace)
 *   -N | -E FD  with -n: a new empty network namespace | join the empty one open on FD
 *   -U          new user namespace mapping the caller's uid (unprivileged namespaces)
 *   -m          with -n: confine the filesystem (mount namespace, new root)
 *   -r PATH     with -m: bind PATH read-only at the same place (a symlink is recreated)
 *   -R TARGET:FD  with -m: bind the directory open on FD read-only at TARGET (e.g. a
 *               precompiled-header dir of the engine's cache: by fd, so no argument names a
 *               host path the run could read in /proc/1/cmdline)
 *   -d BYTES    with -m: size of the run's tmpfs (inodes: one per 16 KiB, at least 1024)
 *   -w DIR      without -m: the work dir (default: the current dir)
 *   -i FD:MODE:NAME  copy the file open on FD into the work dir as NAME (octal MODE); NAME may
 *               name subdirectories (a/b.h: made as needed, never through a link), never ..
 *   -o FD:NAME  after the run, copy the work dir's NAME to FD (regular files only)
 *   -M BYTES    largest output file taken with -o
 *   -C DIR      join the cgroup DIR (writes our pid to DIR/cgroup.procs); repeatable
 *   -P PID      the engine's pid: die with it (PDEATHSIG)
 *   -u UID -g GID  run the program as this uid/gid (root only)
 *   -s FD       write "WAITSTATUS UTIME_US STIME_US MAXRSS_KB OUTPUT ALLOCFAIL" to FD, where
 *               OUTPUT is 0 no -o, 1 taken, 2 absent, 3 refused (not a regular file of the
 *               program's, or too big); ALLOCFAIL 1 when the program reported a failed
 *               allocation on the note fd (see runtime/linebuf.c)
 *   -S          load the seccomp filter (see install_seccomp) before exec
 *   -l RES=SOFT:HARD  an rlimit for the program; repeatable
 *   -W FD       (with -m) a pre-started sandbox: build everything that does not depend on the
 *               program (B too, confined up to its rlimits and exec), say "R" on the unix
 *               socket FD, then wait there for the run's "go" message (below). Until then its
 *               processes are named dcodex-ready; EOF on FD ends it.
 *   -e NAME=VALUE  (go message only) an environment variable of the program
 *   -V          print the compiled-in features ("seccomp") and exit
 *   -X          (a build linked with libseccomp) write the seccomp filter as BPF and exit
 *
 * The go message (one SOCK_SEQPACKET datagram: NUL-separated words, the fds as SCM_RIGHTS) is
 * the run's own options in the command line's syntax, `-d -i -o -M -s -l -e` then `--` and the
 * program: everything else was fixed when the sandbox was made. An option's FD is an index
 * into the fds that came with it; the first three are the program's stdin, stdout and stderr.
 * A pre-started sandbox's run ends for the engine when the stats line is written and the
 * program's stdout/stderr are closed: the namespace's teardown happens after, off its path.
 *
 * Exit codes of its own: 125 it could not start the program, 124 the input files do not fit
 * the run's tmpfs (-d too small).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(DCODEX_SECCOMP) && defined(DCODEX_SECCOMP_BPF)
#include <linux/filter.h>
#include <linux/seccomp.h>
#elif defined(DCODEX_SECCOMP)
#include <seccomp.h>
#include <sys/ioctl.h>
#endif

#define MAX_LIMITS 16
#define MAX_LIST 32
#define MAX_INPUTS 256 /* the session workspace's files travel as inputs too */
#define NOTE_FD 1023
#define NO_ROOM 124 /* exit code: the input files do not fit the run's tmpfs */ /* where the program's runtime reports a failed allocation */
#define STAGE "/tmp"  /* where A stages the new root, inside its own mount namespace */

static struct { int res; const char *name; rlim_t soft, hard; } limits[MAX_LIMITS];
static int nlimits;
static struct { int fd; mode_t mode; const char *name; } inputs[MAX_INPUTS];
static int ninputs;
static const char *binds[MAX_LIST], *cgroups[MAX_LIST];
static int nbinds, ncgroups;
static struct { const char *target; int fd; } fd_binds[MAX_LIST];
static int nfd_binds;

static void die(const char *what) {
    fprintf(stderr, "dcodex-launch: %s: %s\n", what, strerror(errno));
    _exit(125);
}

static void fail(const char *what, const char *arg) {
    fprintf(stderr, "dcodex-launch: %s '%s'\n", what, arg);
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
    if (!eq || !(colon = strchr(eq, ':')) || nlimits == MAX_LIMITS) fail("bad limit", spec);
    *eq = 0;
    int res = resource_by_name(spec);
    if (res < 0) fail("unknown resource", spec);
    limits[nlimits].res = res;
    limits[nlimits].name = spec;
    limits[nlimits].soft = strtoull(eq + 1, NULL, 10);
    limits[nlimits].hard = strtoull(colon + 1, NULL, 10);
    nlimits++;
}

/* A relative path of plain components: no empty, "." or ".." one, not absolute. */
static int plain_path(const char *name) {
    for (const char *p = name;;) {
        const char *end = strchrnul(p, '/');
        size_t n = (size_t)(end - p);
        if (n == 0 || n > 255 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        if (!*end) return 1;
        p = end + 1;
    }
}

/* The go message's fds (see -W), and whether options are being read from it. */
#define MAX_GO_FDS 253 /* the kernel's SCM_MAX_FD */
static int go_fds[MAX_GO_FDS], ngo_fds, in_go;

/* An option's FD: a number on the command line, an index into the fds that came with it in a
 * go message. */
static int fd_arg(const char *text) {
    char *end;
    long n = strtol(text, &end, 10);
    if (end == text || n < 0) fail("bad fd", text);
    if (!in_go) return (int)n;
    if (n >= ngo_fds) fail("no such fd in the go message", text);
    return go_fds[n];
}

static void parse_input(char *spec) {
    char *a = strchr(spec, ':'), *b = a ? strchr(a + 1, ':') : NULL;
    if (!b || ninputs == MAX_INPUTS || !plain_path(b + 1)) fail("bad input", spec);
    inputs[ninputs].fd = fd_arg(spec);
    inputs[ninputs].mode = (mode_t)strtol(a + 1, NULL, 8);
    inputs[ninputs].name = b + 1;
    ninputs++;
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) < 0) die(path);
    close(fd);
}

/* Copy everything readable from `in` (from its start) to `out`; -1 if more than `max` bytes. */
static int copy_fd(int in, int out, off_t max) {
    off_t offset = 0, total = 0;
    for (;;) {
        ssize_t n = sendfile(out, in, &offset, 1 << 20);
        if (n < 0) return -1;
        if (n == 0) return 0;
        total += n;
        if (max > 0 && total > max) return -1;
    }
}

/* ---- the filesystem view (A, in its own mount namespace) ------------------------------- */

static void mkdirs(const char *path, mode_t mode) {
    char buf[4096];
    if (strlen(path) >= sizeof buf) fail("path too long", path);
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        /* Directories made only to reach a bind (e.g. /root for /root/.pyenv/...) can be
         * passed through but not listed. */
        if (mkdir(buf, 0711) < 0 && errno != EEXIST) die(buf);
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST) die(buf);
}

static void make_file(const char *path) {
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) die(path);
    close(fd);
}

/* Remount `target` (a bind) read-only, keeping the flags the source mount is locked with (a
 * user namespace may not drop nosuid/nodev/noexec of a mount it did not make). */
static void remount_readonly(const char *target) {
    struct statvfs sv;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV;
    if (statvfs(target, &sv) == 0 && (sv.f_flag & ST_NOEXEC)) flags |= MS_NOEXEC;
    if (mount(NULL, target, NULL, flags, NULL) < 0) die(target);
}

static void bind_mount(const char *source, const char *target, int readonly) {
    struct stat st;
    if (stat(source, &st) < 0) die(source);
    if (S_ISDIR(st.st_mode)) mkdirs(target, 0755);
    else make_file(target);
    if (mount(source, target, NULL, MS_BIND | MS_REC, NULL) < 0) die(target);
    if (readonly) remount_readonly(target);
}

/* `path` of the host (seen under /oldroot) at the same place in the new root. */
static void bind_host_path(const char *path) {
    char source[4096], target[4096], link[4096];
    struct stat st;
    snprintf(source, sizeof source, "/oldroot%s", path);
    snprintf(target, sizeof target, "/newroot%s", path);
    if (lstat(source, &st) < 0) return; /* absent on this machine: nothing to show */
    if (S_ISLNK(st.st_mode)) { /* e.g. /bin -> usr/bin on a merged-/usr system */
        ssize_t n = readlink(source, link, sizeof link - 1);
        if (n < 0) die(source);
        link[n] = 0;
        char *slash = strrchr(target, '/');
        *slash = 0;
        mkdirs(target, 0755);
        *slash = '/';
        if (symlink(link, target) < 0 && errno != EEXIST) die(target);
        return;
    }
    bind_mount(source, target, 1);
}

static void build_root(long tmpfs_bytes, uid_t owner) {
    char opts[128];
    /* Nothing we mount may reach the host's mount tree, and nothing of the host's reaches us. */
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) die("make / a slave");
    if (mount("tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") < 0) die("stage tmpfs");
    if (chdir(STAGE) < 0) die("chdir stage");
    mkdirs("newroot", 0755);
    mkdirs("oldroot", 0755);
    mkdirs("scratch", 0755);
    if (mount("tmpfs", "newroot", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0) die("root tmpfs");
    long inodes = tmpfs_bytes / 16384 < 1024 ? 1024 : tmpfs_bytes / 16384;
    snprintf(opts, sizeof opts, "mode=0755,size=%ld,nr_inodes=%ld", tmpfs_bytes, inodes);
    if (mount("tmpfs", "scratch", "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) die("run tmpfs");
    if (syscall(SYS_pivot_root, STAGE, STAGE "/oldroot") < 0) die("pivot_root");
    if (chdir("/") < 0) die("chdir /");

    mkdirs("/newroot/proc", 0555);
    if (mount("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) die("mount /proc");

    mkdirs("/newroot/dev", 0755);
    if (mount("tmpfs", "/newroot/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") < 0) die("/dev tmpfs");
    static const char *devices[] = {"null", "zero", "full", "random", "urandom"};
    for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
        char source[64], target[64];
        snprintf(source, sizeof source, "/oldroot/dev/%s", devices[i]);
        snprintf(target, sizeof target, "/newroot/dev/%s", devices[i]);
        bind_mount(source, target, 0);
    }
    static const char *links[][2] = {{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
                                     {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        char target[64];
        snprintf(target, sizeof target, "/newroot/dev/%s", links[i][1]);
        if (symlink(links[i][0], target) < 0) die(target);
    }

    /* One bounded tmpfs for every writable place: the work dir, /tmp and /dev/shm. */
    static const char *places[][3] = {{"/scratch/box", "/newroot/box", "0755"},
                                      {"/scratch/tmp", "/newroot/tmp", "1777"},
                                      {"/scratch/shm", "/newroot/dev/shm", "1777"}};
    for (size_t i = 0; i < 3; i++) {
        mode_t mode = (mode_t)strtol(places[i][2], NULL, 8);
        if (mkdir(places[i][0], mode) < 0 || chmod(places[i][0], mode) < 0) die(places[i][0]);
        if (i == 0 && owner != (uid_t)-1 && chown(places[i][0], owner, owner) < 0) die("chown /box");
        bind_mount(places[i][0], places[i][1], 0);
    }

    /* After the private places: a bound path under /tmp (a venv in a temp dir) then lands in
     * the run's own /tmp instead of being hidden by it. */
    for (int i = 0; i < nbinds; i++) bind_host_path(binds[i]);
    /* An fd opened before the new mount namespace names a mount of the engine's namespace,
     * which cannot be bound here: bind its path (seen under /oldroot) if it is still the same
     * directory. */
    for (int i = 0; i < nfd_binds; i++) {
        char link[64], path[4096], source[4200];
        struct stat by_fd, by_path;
        snprintf(link, sizeof link, "/oldroot/proc/self/fd/%d", fd_binds[i].fd);
        ssize_t n = readlink(link, path, sizeof path - 1);
        if (n < 0) die(link);
        path[n] = 0;
        snprintf(source, sizeof source, "/oldroot%s", path);
        if (fstat(fd_binds[i].fd, &by_fd) < 0 || lstat(source, &by_path) < 0) die(source);
        if (!S_ISDIR(by_path.st_mode) || by_fd.st_dev != by_path.st_dev || by_fd.st_ino != by_path.st_ino)
            fail("bind source moved", fd_binds[i].target);
        char target[4096];
        snprintf(target, sizeof target, "/newroot%s", fd_binds[i].target);
        bind_mount(source, target, 1);
        close(fd_binds[i].fd);
    }

    if (mount(NULL, "/newroot/dev", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) < 0)
        die("remount /dev read-only");
    if (umount2("/oldroot", MNT_DETACH) < 0) die("detach the host root");
    if (chdir("/newroot") < 0) die("chdir /newroot");
    if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root newroot");
    if (umount2(".", MNT_DETACH) < 0) die("detach the stage");
    if (chdir("/") < 0) die("chdir /");
    /* The root itself (mount points only) is read-only. */
    if (mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        die("remount / read-only");
}

/* ---- the work dir's files --------------------------------------------------------------- */

static void no_room(const char *name) { /* the program's own files do not fit its disk (-d) */
    fprintf(stderr, "dcodex-launch: no room for %s in the run's disk\n", name);
    _exit(NO_ROOM);
}

/* The directory of input `name` under `dirfd` (its subdirectories made as needed, owned by the
 * program, opened without following a link: unconfined, the compiler may have left one); *base
 * gets the name's last component. */
static int input_dir(int dirfd, const char *name, uid_t owner, const char **base) {
    int fd = dup(dirfd);
    if (fd < 0) die(name);
    *base = name;
    for (const char *p = name, *slash; (slash = strchr(p, '/')); p = slash + 1) {
        char part[256];
        memcpy(part, p, (size_t)(slash - p)); /* at most 255: parse_input checked */
        part[slash - p] = 0;
        if (mkdirat(fd, part, 0755) == 0) {
            if (owner != (uid_t)-1 && fchownat(fd, part, owner, owner, AT_SYMLINK_NOFOLLOW) < 0) die(name);
        } else if (errno != EEXIST) {
            if (errno == ENOSPC) no_room(name);
            die(name);
        }
        int next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) die(name);
        close(fd);
        fd = next;
        *base = slash + 1;
    }
    return fd;
}

static void copy_inputs(int workfd, uid_t owner) {
    for (int i = 0; i < ninputs; i++) {
        const char *base;
        int dirfd = input_dir(workfd, inputs[i].name, owner, &base);
        /* Unconfined, the work dir is shared by the compile and run steps: replace what the
         * compiler left (unlinkat never follows a link; a directory there makes this fail). */
        if (unlinkat(dirfd, base, 0) < 0 && errno != ENOENT) die(inputs[i].name);
        int out = openat(dirfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                         inputs[i].mode);
        if (out < 0) {
            if (errno == ENOSPC) no_room(inputs[i].name);
            die(inputs[i].name);
        }
        close(dirfd);
        if (copy_fd(inputs[i].fd, out, 0) < 0) {
            if (errno == ENOSPC) no_room(inputs[i].name);
            die(inputs[i].name);
        }
        if (fchmod(out, inputs[i].mode) < 0) die(inputs[i].name);
        if (owner != (uid_t)-1 && fchown(out, owner, owner) < 0) die(inputs[i].name);
        close(out);
        close(inputs[i].fd);
    }
}

/* The program's output file, taken only if it is a regular file the program owns (never a
 * link, FIFO or device it planted), at most `max` bytes. */
static int take_output(int dirfd, const char *name, int outfd, uid_t owner, off_t max) {
    int in = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (in < 0) return errno == ENOENT ? 2 : 3;
    struct stat st;
    int state = 3;
    if (fstat(in, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
        (owner == (uid_t)-1 || st.st_uid == owner) && (max <= 0 || st.st_size <= max))
        state = copy_fd(in, outfd, max) == 0 ? 1 : 3;
    close(in);
    return state;
}

/* ---- the program's privileges ------------------------------------------------------------ */

static void drop_capability_bounding_set(void) {
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno == EINVAL) break; /* past the last */
        /* EPERM: no CAP_SETPCAP (an engine without root or a user namespace): nothing to drop
         * that the program could gain anyway. */
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

#if defined(DCODEX_SECCOMP) && defined(DCODEX_SECCOMP_BPF)
/* The filter below, compiled by libseccomp once when this launcher was built (launcher.py runs
 * a first build with -X and includes its output here): building it with libseccomp on every run
 * cost ~1 ms of each program's start. */
static const struct sock_filter seccomp_filter[] = {
#include DCODEX_SECCOMP_BPF
};

static void install_seccomp(void) {
    struct sock_fprog prog = {sizeof seccomp_filter / sizeof seccomp_filter[0],
                              (struct sock_filter *)seccomp_filter};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) die("seccomp");
}
#elif defined(DCODEX_SECCOMP)
/* Deny what a program has no business doing and what widens the kernel's attack surface:
 * debugging other processes, the kernel keyring, BPF, perf, userfaultfd, io_uring, mounting and
 * namespaces, modules and kexec, faking terminal input, and any socket but a unix one. */
static scmp_filter_ctx seccomp_rules(void) {
    static const char *denied[] = {
        "ptrace", "process_vm_readv", "process_vm_writev", "keyctl", "add_key", "request_key",
        "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
        "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "name_to_handle_at", "open_by_handle_at", "swapon", "swapoff", "reboot", "acct",
        "quotactl", "syslog", "lookup_dcookie", "vhangup", "fanotify_init", "pidfd_getfd",
    };
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW); /* other ABIs (int 0x80) are killed */
    if (!ctx) fail("seccomp", "init");
    int rc = 0;
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr != __NR_SCMP_ERROR) rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    static const unsigned long namespaces[] = {CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID,
        CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWCGROUP, 0x80 /* CLONE_NEWTIME */};
    for (size_t i = 0; i < sizeof namespaces / sizeof namespaces[0]; i++)
        rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                               SCMP_A0(SCMP_CMP_MASKED_EQ, namespaces[i], namespaces[i]));
    /* clone3 passes its flags in memory a filter cannot read: say it does not exist, and libc
     * falls back to clone, whose flags are checked above. */
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                           SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, TIOCSTI));
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                           SCMP_A0(SCMP_CMP_NE, AF_UNIX));
    if (rc != 0) fail("seccomp", "rules");
    return ctx;
}

static void install_seccomp(void) {
    scmp_filter_ctx ctx = seccomp_rules();
    if (seccomp_load(ctx) != 0) fail("seccomp", "load");
    seccomp_release(ctx);
}

/* -X: the filter as the kernel takes it (struct sock_filter[]), for a build that embeds it. */
static int export_seccomp(void) {
    scmp_filter_ctx ctx = seccomp_rules();
    if (seccomp_export_bpf(ctx, STDOUT_FILENO) != 0) fail("seccomp", "export");
    seccomp_release(ctx);
    return 0;
}
#endif

/* ---- supervision ------------------------------------------------------------------------- */

/* Without a pid namespace: kill every process that was reparented to us (we are a subreaper)
 * until none is left. Killed children's own children are reparented to us in turn. */
static void kill_descendants(void) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    for (;;) {
        FILE *f = fopen(path, "re");
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

/* As pid 1 of the run's namespace: kill everything else in it and reap it. */
static void kill_namespace(void) {
    kill(-1, SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {}
}

static void join_cgroups(void) {
    char path[4096], pid[32];
    snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    for (int i = 0; i < ncgroups; i++) {
        snprintf(path, sizeof path, "%s/cgroup.procs", cgroups[i]);
        write_file(path, pid);
    }
}

/* ---- options: the command line's, and a pre-started sandbox's go message ---------------- */

static struct {
    int newpid, userns, newnet, confine, seccomp, netfd, statsfd, outfd, waitfd;
    long uid, gid, engine, tmpfs_bytes;
    off_t output_max;
    const char *outname, *workdir;
} o = {.netfd = -1, .statsfd = -1, .outfd = -1, .waitfd = -1, .uid = -1, .gid = -1, .engine = -1,
       .tmpfs_bytes = 64L << 20, .workdir = "."};
static char **env; /* -e: the program's environment (else the launcher's own) */
static int nenv;

#define RUN_OPTIONS "d:i:o:M:s:l:e:" /* what a go message may say: the rest shapes the sandbox */

static void take_option(int opt, char *arg) {
    switch (opt) {
    case 'n': o.newpid = 1; break;
    case 'N': o.newnet = 1; break;
    case 'E': o.netfd = (int)strtol(arg, NULL, 10); break;
    case 'U': o.userns = 1; break;
    case 'm': o.confine = 1; break;
    case 'r':
        if (nbinds == MAX_LIST || arg[0] != '/') fail("bad bind", arg);
        binds[nbinds++] = arg;
        break;
    case 'R': {
        char *colon = strrchr(arg, ':');
        if (nfd_binds == MAX_LIST || arg[0] != '/' || !colon) fail("bad bind", arg);
        *colon = 0;
        fd_binds[nfd_binds].target = arg;
        fd_binds[nfd_binds].fd = (int)strtol(colon + 1, NULL, 10);
        if (fcntl(fd_binds[nfd_binds].fd, F_SETFD, FD_CLOEXEC) < 0) fail("bad bind fd", colon + 1);
        nfd_binds++;
        break;
    }
    case 'd': o.tmpfs_bytes = strtol(arg, NULL, 10); break;
    case 'w': o.workdir = arg; break;
    case 'i': parse_input(arg); break;
    case 'o': {
        char *colon = strchr(arg, ':');
        if (!colon || !colon[1] || strchr(colon + 1, '/')) fail("bad output", arg);
        o.outfd = fd_arg(arg);
        o.outname = colon + 1;
        break;
    }
    case 'M': o.output_max = strtoll(arg, NULL, 10); break;
    case 'C':
        if (ncgroups == MAX_LIST) fail("too many cgroups", arg);
        cgroups[ncgroups++] = arg;
        break;
    case 'P': o.engine = strtol(arg, NULL, 10); break;
    case 'u': o.uid = strtol(arg, NULL, 10); break;
    case 'g': o.gid = strtol(arg, NULL, 10); break;
    case 's': o.statsfd = fd_arg(arg); break;
    case 'S': o.seccomp = 1; break;
    case 'l': parse_limit(arg); break;
    case 'e':
        if (!in_go || !strchr(arg, '=')) fail("bad environment entry", arg);
        env[nenv++] = arg;
        break;
    case 'W': o.waitfd = (int)strtol(arg, NULL, 10); break;
    default: _exit(125);
    }
}

/* ---- B: the program ------------------------------------------------------------------- */

/* B's part that does not depend on the run: the run's identity and confinement, in this order
 * (a change of credentials clears the parent-death signal, so that comes after it). */
static void become_program(int dirfd, int note[2]) {
    /* Dumpable again: its own /proc files must be its own; exec decides for the program. */
    prctl(PR_SET_DUMPABLE, 1);
    if (o.statsfd >= 0) close(o.statsfd);
    if (o.outfd >= 0) close(o.outfd);
    if (o.waitfd >= 0) close(o.waitfd);
    if (fchdir(dirfd) < 0) die("chdir");
    close(dirfd);
    close(note[0]);
    if (dup2(note[1], NOTE_FD) < 0) die("note fd"); /* dup2 clears CLOEXEC */
    close(note[1]);
    /* When memory runs out, the program is the out-of-memory killer's first choice, not the
     * kernel, the notebook server or the engine. Best effort. */
    int adj = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (adj >= 0) {
        if (write(adj, "1000", 4) < 0) {}
        close(adj);
    }
    drop_capability_bounding_set();
    if (o.gid >= 0) {
        if (setgroups(0, NULL) < 0) die("setgroups");
        if (setresgid(o.gid, o.gid, o.gid) < 0) die("setgid");
    }
    if (o.uid >= 0 && setresuid(o.uid, o.uid, o.uid) < 0) die("setuid");
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
#ifdef DCODEX_SECCOMP
    if (o.seccomp) install_seccomp();
#endif
}

/* The run's rlimits, set after the credentials change (so also in a program forked before its
 * run was known): a limit above what the launcher itself was given is lowered to that, never
 * the other way. */
static void set_limits(void) {
    for (int i = 0; i < nlimits; i++) {
        struct rlimit now, rl = {limits[i].soft, limits[i].hard};
        if (getrlimit(limits[i].res, &now) == 0 && now.rlim_max != RLIM_INFINITY) {
            if (rl.rlim_max > now.rlim_max) rl.rlim_max = now.rlim_max;
            if (rl.rlim_cur > rl.rlim_max) rl.rlim_cur = rl.rlim_max;
        }
        if (setrlimit(limits[i].res, &rl) < 0) die("setrlimit");
    }
}

static void start_program(char **prog) {
    if (env) {
        extern char **environ;
        environ = env; /* execvp searches this PATH */
    }
    execvp(prog[0], prog);
    fprintf(stderr, "dcodex-launch: cannot run %s: %s\n", prog[0], strerror(errno));
    _exit(127);
}

/* One datagram on `sock` (A: the engine's go message; B: A's part of it for the program):
 * NUL-separated words and fds, the first three of which become this process's stdin, stdout
 * and stderr (the rest are go_fds[3..]). Returns the words as an argv for getopt, argv[0]
 * `name`, with options read as a go message's from here on. EOF (the sender is gone, or
 * ended the sandbox unused) exits with `eof_code`. */
static char **receive_run(int sock, const char *name, int *nargs, int eof_code) {
    static char words[192 << 10];
    union { char buf[CMSG_SPACE(sizeof(int) * MAX_GO_FDS)]; struct cmsghdr align; } control;
    struct iovec iov = {words, sizeof words - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t n;
    while ((n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {}
    if (n <= 0) _exit(eof_code);
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) fail("go message", "too long");
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        memcpy(go_fds + ngo_fds, CMSG_DATA(c), count * sizeof(int));
        ngo_fds += (int)count;
    }
    if (ngo_fds < 3) fail("go message", "without stdin, stdout and stderr");
    for (int fd = 0; fd < 3; fd++) { /* from here on, what it says goes to the run's stderr */
        if (dup2(go_fds[fd], fd) < 0) die("stdio");
        if (go_fds[fd] > 2) close(go_fds[fd]);
    }
    words[n] = 0;
    int count = 1;
    for (ssize_t i = 0; i < n; i++) count += words[i] == 0;
    char **args = calloc((size_t)count + 2, sizeof *args);
    env = calloc((size_t)count + 1, sizeof *env);
    if (!args || !env) die("go message");
    *nargs = 0;
    args[(*nargs)++] = (char *)name;
    for (char *w = words; w < words + n; w += strlen(w) + 1) args[(*nargs)++] = w;
    in_go = 1;
    optind = 0; /* glibc: start a new scan */
    return args;
}

/* A pre-started sandbox's B, made before its run is known: confined, it waits on `sock` for
 * what A passes on of the go message (its stdin, stdout and stderr, rlimits, environment and
 * program), then starts it. EOF (the sandbox ended unused) ends it. */
static void program_waits(int sock) {
    int nargs;
    char **args = receive_run(sock, "program", &nargs, 125);
    close(sock);
    nlimits = nenv = 0;
    /* The words are A's own go options, checked there: -l, -e, then -- and the program. */
    int opt;
    while ((opt = getopt(nargs, args, "+l:e:")) != -1) take_option(opt, optarg);
    set_limits();
    start_program(args + optind);
}

/* A, at go: give B its part of the go message. */
static void tell_program(int sock, char **prog) {
    char buf[192 << 10];
    size_t len = 0;
    int fds[3] = {0, 1, 2};
    for (int i = 0; i < nlimits; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "-l%c%s=%llu:%llu%c", 0, limits[i].name,
                                (unsigned long long)limits[i].soft, (unsigned long long)limits[i].hard, 0);
    for (int i = 0; i < nenv; i++) {
        size_t n = strlen(env[i]) + 1;
        if (len + n + 3 > sizeof buf) fail("go message", "too long");
        memcpy(buf + len, "-e", 3);
        memcpy(buf + len + 3, env[i], n);
        len += n + 3;
    }
    memcpy(buf + len, "--", 3);
    len += 3;
    for (char **p = prog; *p; p++) {
        size_t n = strlen(*p) + 1;
        if (len + n > sizeof buf) fail("go message", "too long");
        memcpy(buf + len, *p, n);
        len += n;
    }
    union { char buf[CMSG_SPACE(sizeof fds)]; struct cmsghdr align; } control;
    struct iovec iov = {buf, len - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    if (sendmsg(sock, &msg, 0) < 0) die("start the program");
    close(sock);
}

/* A pre-started sandbox (-W): say ready, wait for the go message, take its options and fds.
 * Returns the program's argv. EOF instead of a message (the engine closed its pool, or is
 * gone) ends the sandbox quietly. */
static char **await_go(int tell_launcher) {
    if (write(o.waitfd, "R", 1) != 1) _exit(0);
    int nargs;
    char **args = receive_run(o.waitfd, "go", &nargs, 0);
    close(o.waitfd);
    prctl(PR_SET_NAME, "dcodex-launch"); /* a run's launcher from here on */
    if (write(tell_launcher, "G", 1) < 0) {} /* ... L renames itself too */
    close(tell_launcher);
    int opt;
    while ((opt = getopt(nargs, args, "+" RUN_OPTIONS)) != -1) take_option(opt, optarg);
    if (optind >= nargs) fail("go message", "without a program");
    return args + optind;
}

/* The go message's disk size, where it differs from the one the sandbox was made with. */
static void resize_disk(long made_with) {
    if (o.tmpfs_bytes == made_with) return;
    char opts[128];
    long inodes = o.tmpfs_bytes / 16384 < 1024 ? 1024 : o.tmpfs_bytes / 16384;
    snprintf(opts, sizeof opts, "size=%ld,nr_inodes=%ld", o.tmpfs_bytes, inodes);
    if (mount(NULL, "/box", NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, opts) < 0) die("resize the run's disk");
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "+nNE:Umr:R:d:w:i:o:M:C:P:u:g:s:Sl:W:VX")) != -1) {
        switch (opt) {
        case 'V':
#ifdef DCODEX_SECCOMP
            puts("seccomp");
#endif
            puts("wait");
            return 0;
#if defined(DCODEX_SECCOMP) && !defined(DCODEX_SECCOMP_BPF)
        case 'X': return export_seccomp();
#endif
        default: take_option(opt, optarg);
        }
    }
    int waiting = o.waitfd >= 0;
    if (!waiting && optind >= argc) {
        fprintf(stderr, "usage: dcodex-launch [options] -- PROG ARGS... (see launcher.c)\n");
        _exit(125);
    }
#ifndef DCODEX_SECCOMP
    if (o.seccomp) fail("built without libseccomp; cannot honour", "-S");
#endif
    if (o.confine && !o.newpid) fail("needs -n", "-m");
    if (waiting && (!o.confine || ninputs || o.outfd >= 0 || o.statsfd >= 0 || nlimits))
        fail("-W needs -m, and the run's own options come in its go message", "-W");
    char **prog = argv + optind;
    if (waiting) {
        if (fcntl(o.waitfd, F_SETFD, FD_CLOEXEC) < 0) die("-W");
        prctl(PR_SET_NAME, "dcodex-ready");
    }

    /* If the engine dies (kernel killed on restart, server crash), the run dies with it:
     * nobody would enforce its wall clock any more. */
    if (o.engine > 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != (pid_t)o.engine) _exit(125); /* it died before we armed that */
    }
    join_cgroups();

    int go_told[2] = {-1, -1}; /* a pre-started A tells L when its run begins */
    if (o.newpid) {
        uid_t outer_uid = getuid();
        gid_t outer_gid = getgid();
        int flags = CLONE_NEWPID | CLONE_NEWIPC | (o.userns ? CLONE_NEWUSER : 0);
        if (o.newnet) flags |= CLONE_NEWNET;
        if (o.confine) flags |= CLONE_NEWNS | CLONE_NEWUTS;
        if (unshare(flags) < 0) die("unshare");
        if (o.userns) {
            char map[64];
            write_file("/proc/self/setgroups", "deny");
            snprintf(map, sizeof map, "%u %u 1\n", outer_uid, outer_uid);
            write_file("/proc/self/uid_map", map);
            snprintf(map, sizeof map, "%u %u 1\n", outer_gid, outer_gid);
            write_file("/proc/self/gid_map", map);
        }
        /* Joining the engine's one empty network namespace costs microseconds; creating one per
         * run costs about a millisecond. */
        if (o.netfd >= 0) {
            if (setns(o.netfd, CLONE_NEWNET) < 0) die("setns");
            close(o.netfd);
        }
        int alive[2]; /* A sees POLLHUP on alive[0] once L is gone */
        if (pipe2(alive, O_CLOEXEC) < 0 || (waiting && pipe2(go_told, O_CLOEXEC) < 0)) die("pipe");
        pid_t init = fork();
        if (init < 0) die("fork");
        if (init > 0) {
            close(alive[0]);
            /* L: wait for the run's init; its exit tears the namespace down. */
            if (o.statsfd >= 0) close(o.statsfd);
            if (waiting) {
                close(o.waitfd);
                close(go_told[1]);
                char byte;
                if (read(go_told[0], &byte, 1) == 1) prctl(PR_SET_NAME, "dcodex-launch");
                close(go_told[0]);
            }
            int st;
            while (waitpid(init, &st, 0) < 0 && errno == EINTR) {}
            _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(alive[1]);
        if (waiting) close(go_told[0]);
        struct pollfd pfd = {alive[0], POLLIN, 0};
        if (poll(&pfd, 1, 0) != 0) _exit(125); /* L died before PDEATHSIG was armed */
        close(alive[0]);
    } else {
        prctl(PR_SET_CHILD_SUBREAPER, 1);
    }
    /* A holds the way out of the sandbox until the program starts (and, as root, more
     * privilege than it): a process of the run must not be able to read or trace it. */
    prctl(PR_SET_DUMPABLE, 0);

    /* A: the program's filesystem and files. */
    uid_t owner = o.uid >= 0 ? (uid_t)o.uid : (uid_t)-1;
    if (o.confine) {
        build_root(o.tmpfs_bytes, owner);
        o.workdir = "/box";
        sethostname("dcodex", 6);
    }
    int dirfd = open(o.workdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0) die(o.workdir);
    int note[2], program[2] = {-1, -1};
    if (pipe2(note, O_CLOEXEC | O_NONBLOCK) < 0) die("pipe");
    pid_t child = -1;
    if (waiting) {
        /* Pre-started: B is made (confined, its uid, seccomp) before the run is known too, and
         * waits on a socket for its stdio, limits and program. */
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, program) < 0) die("socketpair");
        child = fork();
        if (child < 0) die("fork");
        if (child == 0) {
            close(program[0]);
            become_program(dirfd, note);
            program_waits(program[1]);
        }
        close(program[1]);
        long made_with = o.tmpfs_bytes;
        prog = await_go(go_told[1]);
        resize_disk(made_with);
    }
    copy_inputs(dirfd, owner);
    if (waiting) {
        tell_program(program[0], prog);
    } else {
        child = fork();
        if (child < 0) die("fork");
        if (child == 0) {
            become_program(dirfd, note);
            set_limits();
            start_program(prog);
        }
    }
    close(note[1]);
    int status;
    struct rusage ru;
    while (wait4(child, &status, 0, &ru) < 0) {
        if (errno != EINTR) die("wait4");
    }
    /* Nothing of the run may still be writing the output file (or anything else) now. */
    if (o.newpid) kill_namespace();
    else kill_descendants();
    int out_state = 0;
    if (o.outfd >= 0) out_state = take_output(dirfd, o.outname, o.outfd, owner, o.output_max);
    char byte;
    int alloc_failed = read(note[0], &byte, 1) == 1;
    if (waiting) { /* the run is over for the engine once its pipes are closed and it has the stats */
        for (int fd = 0; fd < 3; fd++) close(fd);
    }
    if (o.statsfd >= 0) {
        dprintf(o.statsfd, "%d %ld %ld %ld %d %d\n", status,
                (long)(ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec),
                (long)(ru.ru_stime.tv_sec * 1000000L + ru.ru_stime.tv_usec), ru.ru_maxrss,
                out_state, alloc_failed);
        close(o.statsfd);
    }
    /* As the namespace's init, exiting also tears down its mounts and tmpfs. */
    _exit(0);
}
