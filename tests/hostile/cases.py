"""Hostile programs and what the sandbox must make of them, in both engine modes.

A case is a program (with `%%dcodex` header options) and what its run must show: a status
(or, where the two modes legitimately differ, one per accounting kind), text its output must
contain, and text it must never contain (a planted secret, "WROTE", "CONNECTED" ...). Programs
get the host-side facts they attack as `{placeholders}`: the engine user's home and the secrets
planted there, the engine's build cache and launcher, a unix socket and a TCP port the test
listens on. Every case also gets the common checks (within its wall limit + 1 s, nothing left,
no fd leaked, the host unharmed) from test_hostile.py.

This file is also read by runner.py under the engine user's own interpreter: stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MARKER = "dcodex-hostile-marker-7f3a"  # the content of every planted secret


@dataclass(frozen=True)
class Case:
    name: str
    language: str
    code: str
    options: str = ""
    expect: str | dict = "ok"  # a Status value, or {"cgroup": ..., "sampling": ...}
    want: tuple[str, ...] = ()  # each must be in stdout
    forbid: tuple[str, ...] = (MARKER,)  # none may be in stdout or stderr
    max_wall: float | None = None  # tighter than the wall limit + 1 s
    check: str = ""  # the name of an extra check in test_hostile.py
    message: tuple[str, ...] = ()  # each must be in the result's message
    facts: dict = field(default_factory=dict, compare=False)


PY_READ = '''
import os
for path in {paths!r}:
    try:
        data = open(path, "rb").read()
        print("READ", path, data[:200])
    except OSError as e:
        print("denied", path, e.errno)
try:
    print("LISTED", os.listdir({home!r}))
except OSError as e:
    print("denied listing", e.errno)
'''

PY_WRITE = '''
import os
for path in {paths!r}:
    try:
        with open(path, "ab") as f:
            f.write(b"echo pwned\\n")
        print("WROTE", path)
    except OSError as e:
        print("denied", path, e.errno)
'''

C_SYSCALLS = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

static void report(const char *what, long rc) {
    if (rc < 0) printf("%s denied %s\n", what, strerror(errno));
    else printf("%s allowed\n", what);
}

int main(void) {
    report("add_key", syscall(SYS_add_key, "user", "k", "v", 1, KEY_SPEC_PROCESS_KEYRING));
    report("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1));
    report("request_key", syscall(SYS_request_key, "user", "k", NULL, KEY_SPEC_PROCESS_KEYRING));
    report("ptrace", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    report("bpf", syscall(SYS_bpf, 0, NULL, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
    report("unshare_user", unshare(CLONE_NEWUSER));
    report("unshare_net", unshare(CLONE_NEWNET));
    report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    report("chroot", chroot("/tmp"));
    report("tiocsti", ioctl(1, TIOCSTI, "x"));
    report("inet_socket", socket(AF_INET, SOCK_STREAM, 0));
    report("netlink_socket", socket(AF_NETLINK, SOCK_RAW, 0));
    report("unix_socket", socket(AF_UNIX, SOCK_STREAM, 0));
    return 0;
}
'''

# A gcc -wrapper replaces every step of the build (cc1, as, collect2) with this shell script:
# whatever it leaves as `main` is what the engine would take as the program.
def wrapper(script: str) -> str:
    return f"--cflags \"-wrapper '/bin/sh,-c,{script}'\""


HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'

# Compiled with the engine's precompiled <iostream> (shown to the compile step only, read-only):
# the program itself sees neither that store nor the place it was shown at.
CPP_PCH_STORE = r'''#include <iostream>
#include <fcntl.h>
int main() {
    const char *paths[] = {"/pch", "/pch/iostream.gch", "{cache}/pch"};
    for (const char *p : paths) {
        int fd = open(p, O_RDONLY);
        std::cout << (fd >= 0 ? "SEEN " : "hidden ") << p << std::endl;
        fd = open(p, O_WRONLY | O_CREAT, 0644);
        if (fd >= 0) std::cout << "WROTE " << p << std::endl;
    }
}
'''

C_PARENT_WAITS = r'''
#include <sys/wait.h>
#include <unistd.h>
int main(void) { if (fork() == 0) for (;;); wait(NULL); return 0; }
'''

C_FOUR_WORKERS = r'''
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    for (int i = 0; i < 4; i++)
        if (fork() == 0) { while (clock() < 0.9 * CLOCKS_PER_SEC) {} return 0; }
    while (wait(NULL) > 0) {}
    puts("all workers done");
    return 0;
}
'''

C_THREADS = r'''
#include <pthread.h>
static void *spin(void *arg) { (void)arg; for (volatile unsigned long i = 0;; i++) {} return 0; }
int main(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], 0, spin, 0);
    pthread_join(t[0], 0);
    return 0;
}
'''

C_MALLOC_80 = r'''
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    char *p = malloc(80 << 20);
    memset(p, 1, 80 << 20);   /* p is NULL when the allocation failed: a crash */
    printf("%d\n", p[12345]);
    return 0;
}
'''

C_SPIN_UNDER = r'''
#include <stdio.h>
#include <time.h>
int main(void) { while (clock() < 0.5 * CLOCKS_PER_SEC) {} puts("spun 0.5 s"); return 0; }
'''

PY_SPREAD = '''
import os, time
kids = []
for i in range(8):
    pid = os.fork()
    if pid == 0:
        block = bytearray(40 << 20)
        for j in range(0, len(block), 4096):
            block[j] = 1
        time.sleep(1.5)
        os._exit(0)
    kids.append(pid)
killed = sum(os.WIFSIGNALED(os.waitpid(pid, 0)[1]) for pid in kids)
print("children killed:", killed)
'''

PY_FILL = '''
import errno, os
total = 0
for place in ("./big", "/tmp/big", "/dev/shm/big"):
    try:
        with open(place, "wb") as f:
            while True:
                f.write(b"x" * (1 << 20))
                f.flush()
                total += 1
    except OSError as e:
        print(place, errno.errorcode.get(e.errno, e.errno))
print("MiB written", total)
'''

PY_INODES = '''
import errno, os
n = 0
try:
    while True:
        open(f"f{n}", "w").close()
        n += 1
except OSError as e:
    print("files", n, errno.errorcode.get(e.errno, e.errno))
'''

PY_DEEP = '''
import os
for top in (".", "/tmp"):
    os.chdir(top)
    for i in range(1200):
        os.mkdir("d")
        os.chdir("d")
    os.chdir("/")
print("made 2 x 1200 levels")
'''

PY_REPLACE_DIR = '''
import os
cwd = os.getcwd()
os.chdir("/")
for step in (lambda: os.rename(cwd, cwd + "-moved"), lambda: os.symlink("/", cwd),
             lambda: os.chmod(os.path.dirname(cwd) or "/", 0o700)):
    try:
        step()
        print("did a step")
    except OSError as e:
        print("refused", e.errno)
'''

PY_PROC = '''
import os
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print("processes visible:", len(pids))
for pid in pids:
    for name in ("cmdline", "environ"):
        try:
            print(pid, name, open(f"/proc/{pid}/{name}", "rb").read()[:300])
        except OSError as e:
            print(pid, name, "denied", e.errno)
'''

PY_CONNECT_UNIX = '''
import socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({sock!r})
    s.sendall(b"hello")
    print("CONNECTED")
except OSError as e:
    print("refused", e.errno)
'''

PY_CONNECT_TCP = '''
import socket
try:
    s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
    print("CONNECTED")
except OSError as e:
    print("refused", e.errno)
'''

PY_SETUID = '''
import subprocess
for argv in (["/bin/su", "root", "-c", "echo ROOTED"], ["/bin/mount", "-t", "tmpfs", "none", "/tmp"],
             ["/usr/bin/newgrp", "root"]):
    try:
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=5)
        print(argv[0], "exit", out.returncode, out.stdout[:100], out.stderr[:200])
    except (OSError, subprocess.TimeoutExpired) as e:
        print(argv[0], "failed", e)
import os
print("uid", os.getuid(), "euid", os.geteuid())
'''


def cases(facts: dict) -> list[Case]:
    """Every case, its placeholders filled from `facts` (paths and ports of this test run)."""
    home, cache = facts["home"], facts["cache"]
    secrets = [facts["ssh_key"], facts["runtime_file"], f"{home}/.bashrc"]
    return [
        Case("read_home_secrets", "python", PY_READ.format(paths=secrets, home=home),
             forbid=(MARKER, "READ", "LISTED")),
        Case("write_home", "python",
             PY_WRITE.format(paths=[f"{home}/.bashrc", f"{home}/pwned", f"{home}/.ssh/authorized_keys"]),
             forbid=(MARKER, "WROTE"), check="home_unchanged"),
        Case("write_cache_and_launcher", "python",
             PY_WRITE.format(paths=[facts["launcher"], f"{cache}/launcher/evil", f"{cache}/builds/evil"]),
             forbid=(MARKER, "WROTE"), check="cache_unchanged"),
        Case("wrapper_symlinks_a_secret", "c", HELLO_C, wrapper(f"ln -sf {facts['ssh_key']} main"),
             expect="compile_error", message=("refused",)),
        Case("wrapper_symlinks_a_secret_again", "c", HELLO_C, wrapper(f"ln -sf {facts['ssh_key']} main"),
             expect="compile_error", message=("refused",)),  # nothing of the first attempt was cached
        Case("wrapper_plants_a_fifo", "c", HELLO_C, wrapper("rm -f main; mkfifo main"), expect="compile_error",
             message=("refused",), max_wall=10),
        Case("wrapper_plants_a_hardlink", "c", HELLO_C, wrapper("echo x > f; ln -f f main"),
             expect="compile_error", message=("refused",)),
        Case("precompiled_header_store_unseen", "cpp", CPP_PCH_STORE.replace("{cache}", cache),
             want=("hidden /pch\n",), forbid=(MARKER, "SEEN", "WROTE"), check="cache_unchanged"),
        Case("deep_tree", "python", PY_DEEP, want=("made 2 x 1200 levels",)),
        Case("after_deep_tree", "c", HELLO_C, want=("hello",)),
        Case("run_dir_replaced_by_symlink", "python", PY_REPLACE_DIR, check="tmp_unharmed"),
        Case("proc_scan", "python", PY_PROC, forbid=(MARKER, "pytest", "runner.py"),
             check="few_processes"),
        Case("unix_socket_in_tmp", "python", PY_CONNECT_UNIX.format(sock=facts["unix_socket"]),
             forbid=(MARKER, "CONNECTED"), check="no_unix_client"),
        Case("tcp_loopback", "python", PY_CONNECT_TCP.format(port=facts["tcp_port"]),
             forbid=(MARKER, "CONNECTED"), check="no_tcp_client"),
        Case("setuid_binaries", "python", PY_SETUID, forbid=(MARKER, "ROOTED", "exit 0")),
        Case("forbidden_syscalls", "c", C_SYSCALLS,
             want=("unix_socket allowed",), check="syscalls_denied"),
        Case("fill_disk", "python", PY_FILL, "--disk 16M", want=("ENOSPC", "MiB written"),
             check="disk_bounded"),
        Case("many_tiny_files", "python", PY_INODES, "--disk 16M", want=("ENOSPC",),
             check="inodes_bounded"),
        # Whole-run limits.
        Case("parent_waits_on_spinning_child", "c", C_PARENT_WAITS, "--cpu-time 1 --timeout 3",
             expect="time_limit", max_wall=1.6),
        Case("four_workers_together_over", "c", C_FOUR_WORKERS, "--cpu-time 1 --timeout 5",
             expect="time_limit", max_wall=1.5),
        Case("threads_spin", "c", C_THREADS, "--cpu-time 1 --timeout 5", expect="time_limit",
             max_wall=1.5),
        Case("malloc_80mb_at_O0_under_64m", "c", C_MALLOC_80, "--memory 64M --cflags -O0",
             expect="memory_limit"),
        Case("eight_processes_of_40mb_under_256m", "python", PY_SPREAD, "--memory 256M --timeout 5",
             expect={"cgroup": "memory_limit", "sampling": "ok"}, check="spread_peak"),
        Case("just_under_cpu", "c", C_SPIN_UNDER, "--cpu-time 1", want=("spun 0.5 s",)),
        Case("just_under_memory", "python",
             "b = bytearray(30 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('held 30 MB')",
             "--memory 64M", want=("held 30 MB",)),
        Case("just_under_wall", "python", "import time\ntime.sleep(0.5)\nprint('slept')", "--timeout 1",
             want=("slept",)),
        Case("just_under_output", "python", "import sys\nsys.stdout.write('x' * 1000)",
             "--output-limit 1000", want=("x" * 1000,)),
    ]
