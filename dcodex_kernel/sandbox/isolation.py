"""Which isolation layers this machine allows (detected once), and each run's identity and, where
the filesystem cannot be confined, its host-side directory."""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace

import psutil

from ..languages import RECIPES, python_interpreter
from . import cgroups
from .launcher import launcher_features, launcher_path

# Each concurrent run as root gets its own uid from this range: RLIMIT_NPROC then counts only
# that run's processes, runs cannot signal each other, and the files a run leaves can be found
# by owner. The uids need no /etc/passwd entry.
UID_BASE = int(os.environ.get("DCODEX_UID_BASE", "61000"))
UID_COUNT = 256
# Host-side run directories (only where the filesystem is not confined) are named after the
# engine's pid, so a later engine can tell those of an engine killed outright and remove them.
RUN_DIR_PREFIX = "dcodex-run-"
# World-writable places an unconfined program could leave files in, outside its own directory.
SHARED_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
# What a confined program sees of the host, read-only (those that exist here).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# The layers DCODEX_STRICT=1 requires: without any of them a run is refused.
STRICT_LAYERS = ("pid-namespace", "no-network", "filesystem", "seccomp")


@dataclass(frozen=True)
class Capabilities:
    root: bool
    pid_namespace: bool  # every run gets its own pid namespace (its init kills all on exit)
    user_namespace: bool  # ...made possible for a non-root engine by a user namespace
    netns_fd: int | None = None  # an empty network namespace every run joins (root)
    filesystem: bool = False  # a mount namespace: read-only system, private /box, /tmp, /proc, /dev
    seccomp: bool = False  # the launcher's seccomp filter
    cgroup: cgroups.CgroupSupport | None = None  # one memory/pids/cpu cgroup per run
    binds: tuple[str, ...] = field(default=(), compare=False)  # read-only host paths shown
    python_binds: tuple[str, ...] = field(default=(), compare=False)  # ...to Python programs too
    python_exe: str = ""  # the interpreter for Python programs, chosen with the binds
    # Runs may start in sandboxes made ahead of need (pool.py): confined, with a launcher that
    # can wait. Not a layer: the same confinement, off the run's critical path.
    prestart: bool = False

    def launcher_flags(self, *, python: bool = False) -> list[str]:
        """The launcher's options for these layers; `python`: the run needs the interpreter's
        prefixes too (each bind costs ~0.2 ms, so C runs and compiles go without)."""
        flags = []
        if self.pid_namespace:
            if self.user_namespace:
                flags += ["-n", "-N", "-U"]  # a namespace of its own: it cannot join one it does not own
            elif self.netns_fd is not None:
                flags += ["-n", "-E", str(self.netns_fd)]
            else:
                flags += ["-n"]
            if self.filesystem:
                flags.append("-m")
                for path in (*self.binds, *self.python_binds) if python else self.binds:
                    flags += ["-r", path]
        if self.seccomp:
            flags.append("-S")
        return flags

    def inherited_fds(self) -> tuple[int, ...]:
        return () if self.netns_fd is None or self.user_namespace else (self.netns_fd,)

    @property
    def network_blocked(self) -> bool:
        return self.pid_namespace and (self.user_namespace or self.netns_fd is not None)

    def layers(self) -> tuple[str, ...]:
        layers = ["rlimits", "clean-env", "new-session", "no-new-privs"]
        layers.append("pid-namespace" if self.pid_namespace else "subreaper")
        if self.network_blocked:
            layers.append("no-network")
        layers.append("filesystem" if self.filesystem else "private-dir")
        if self.seccomp:
            layers.append("seccomp")
        if self.cgroup:
            layers.append(f"cgroup-v{self.cgroup.version}")
        if self.root:
            layers.append("per-run-uid")
        return tuple(layers)

    def missing(self) -> tuple[str, ...]:
        """Layers that would be active on a better-equipped machine (shown as degraded)."""
        out = []
        if not self.pid_namespace:
            out.append("pid-namespace (daemons are caught by a subreaper instead)")
        if not self.network_blocked:
            out.append("no-network (programs can open sockets)")
        if not self.filesystem:
            out.append("filesystem (programs can read and write whatever your user can)")
        if not self.seccomp:
            out.append("seccomp (no system-call filter: the launcher was built without libseccomp, or it cannot load)")
        if not self.cgroup:
            out.append("cgroup (memory is an address-space limit per process; CPU and peak memory "
                       "are summed by sampling)")
        if not self.root:
            out.append("per-run-uid (needs root; runs share your uid and process limit)")
        return tuple(out)

    def accounting(self) -> str:
        """How the run's CPU and memory limits are enforced (for `dcodex doctor`)."""
        if self.cgroup:
            cpu = "the cgroup's total" if "cpu" in self.cgroup.parents else \
                "summed over the run's processes while it runs"
            return (f"{self.cgroup.describe()}: memory limit = the run's cgroup memory limit "
                    f"(all its processes together), CPU = {cpu}")
        return ("sampling: CPU summed over the run's processes while it runs, memory = address "
                "space per process (RLIMIT_AS), peak = the sum of the processes' resident sets")

    def python(self) -> str:
        """The interpreter Python programs run with under these layers ($DCODEX_PYTHON, read
        when the engine starts, or the engine's own)."""
        return self.python_exe or python_interpreter(confined=self.filesystem, other_uid=self.root)

    def strict_problems(self) -> list[str]:
        have = set(self.layers())
        return [layer for layer in STRICT_LAYERS if layer not in have]


@functools.lru_cache(maxsize=1)
def detect() -> Capabilities:
    binds, python_binds = _visible_paths()
    seccomp = "seccomp" in launcher_features()
    root = os.geteuid() == 0
    if root:
        pidns = _launcher_works(["-n"])
        fs = pidns and _launcher_works(["-n", "-m", *_bind_flags(binds + python_binds)])
        caps = Capabilities(root=True, pid_namespace=pidns, user_namespace=False,
                            netns_fd=_empty_network_namespace() if pidns else None,
                            filesystem=fs, seccomp=seccomp and _launcher_works(["-S"]),
                            cgroup=cgroups.detect(), binds=binds, python_binds=python_binds)
    else:
        userns = _launcher_works(["-n", "-N", "-U"])
        fs = userns and _launcher_works(["-n", "-N", "-U", "-m", *_bind_flags(binds + python_binds)])
        caps = Capabilities(root=False, pid_namespace=userns, user_namespace=userns, filesystem=fs,
                            seccomp=seccomp and _launcher_works(["-S"]), cgroup=cgroups.detect(),
                            binds=binds, python_binds=python_binds)
    caps = replace(caps, prestart=caps.filesystem and "wait" in launcher_features())
    try:
        return replace(caps, python_exe=python_interpreter(confined=caps.filesystem, other_uid=root))
    except FileNotFoundError:
        return caps  # no usable interpreter: Python runs say so when they start


def _visible_paths() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a confined run sees of the host: (the system dirs and compilers installed outside
    them (CC/CXX), the Python interpreter's prefixes (its venv too) for Python runs)."""
    paths = [p for p in SYSTEM_DIRS if os.path.lexists(p)]

    def add(path: str, to: list) -> None:
        if path and path != "/" and os.path.isdir(path) and not any(
                path == p or path.startswith(p.rstrip("/") + "/") for p in paths + to):
            to.append(path)

    for rec in RECIPES.values():
        if rec.compiles:
            try:
                add(os.path.dirname(os.path.dirname(os.path.realpath(rec.compiler()[0]))), paths)
            except FileNotFoundError:
                pass
    python = []
    try:
        for path in interpreter_prefixes(python_interpreter(confined=True)):
            add(path, python)
    except (OSError, subprocess.SubprocessError):
        pass
    return tuple(paths), tuple(python)


def _bind_flags(paths) -> list[str]:
    return [w for p in paths for w in ("-r", p)]


def _launcher_works(flags: list[str]) -> bool:
    try:
        proc = subprocess.run(
            [launcher_path(), *flags, "--", "/bin/true"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _empty_network_namespace() -> int | None:
    """Open (and keep open for the engine's life) a network namespace with no interface up.
    A short-lived launcher creates it; the fd keeps it alive after that process is gone."""
    holder = subprocess.Popen(
        [launcher_path(), "-n", "-N", "--", "/bin/sh", "-c", "echo ready; exec sleep 60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        if holder.stdout.readline() != b"ready\n":
            return None
        return os.open(f"/proc/{holder.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        holder.kill()  # its pid-namespace init dies with it, and the sleep with that
        holder.wait()
        holder.stdout.close()


class NoFreeIdentity(RuntimeError):
    pass


class Workspace:
    """A run's identity and, where the filesystem is not confined, its host-side work dir;
    everything is given back on exit.

    Use as a context manager. `uid`/`gid` are None when the engine is not root (the program then
    runs as the engine's own user). `workdir` is the program's working directory on the host, or
    None when the launcher gives the run a private tmpfs instead (nothing of the run is then on
    the host's disk at all).
    """

    def __init__(self, caps: Capabilities):
        self.caps = caps
        self.uid: int | None = None
        self.gid: int | None = None
        self.path = ""  # the host-side run dir (unconfined only)
        self.workdir: str | None = None
        self._lock_fd = -1
        self._tmp_stamp = None

    def __enter__(self) -> "Workspace":
        try:
            if self.caps.root:
                self._acquire_uid()
            if not self.caps.filesystem:
                _sweep_orphaned_run_dirs()
                # isolate's layout: the run dir is the engine's, only its `box` is the program's,
                # so nothing the program does can replace the dir the engine removes.
                self.path = tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-")
                self.workdir = os.path.join(self.path, "box")
                os.mkdir(self.workdir, 0o755)
                if self.uid is not None:
                    os.chmod(self.path, 0o755)
                    os.chown(self.workdir, self.uid, self.gid)
                self._tmp_stamp = _shared_tmp_stamp()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.path:
                # Scanning the shared tmp dirs costs ~0.5 ms: only if something was created or
                # removed in them during the run (their mtime moved), and once per uid per
                # engine process (for files a crashed engine's run left under this uid).
                tmp_changed = _shared_tmp_stamp() != self._tmp_stamp
                remove_tree(self.path)
                self.path = ""
                if self.uid is not None and (tmp_changed or self.uid not in _swept_uids):
                    _remove_files_owned_by(self.uid)
                    _swept_uids.add(self.uid)
        finally:
            self._release_uid()

    @property
    def lock_fd(self) -> int:
        """The fd whose flock holds the uid (-1: none held)."""
        return self._lock_fd

    def _acquire_uid(self) -> None:
        lock_dir = _uid_lock_dir()
        # Lowest free uid first: an engine then keeps reusing the same few uids.
        for uid in range(UID_BASE, UID_BASE + UID_COUNT):
            fd = os.open(os.path.join(lock_dir, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise
            # A process of an earlier run that still runs as it makes it not free. With a pid
            # namespace a run's processes are all gone when it ends, so this costs a scan of
            # /proc (~5 ms) only the first time this engine hands the uid out (a run of an engine
            # killed outright) or where runs have no pid namespace.
            if (uid not in _checked_uids or not self.caps.pid_namespace) and _uid_in_use(uid):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                continue
            _checked_uids.add(uid)
            self._lock_fd, self.uid, self.gid = fd, uid, uid
            return
        raise NoFreeIdentity(f"all {UID_COUNT} sandbox uids are busy")

    def _release_uid(self) -> None:
        self.uid = self.gid = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock: the uid is free again
            self._lock_fd = -1


_checked_uids: set[int] = set()


def _uid_in_use(uid: int) -> bool:
    """True if any process runs as `uid` (it would share the next run's process limit and could
    signal it)."""
    for p in psutil.process_iter(["uids"]):
        uids = p.info["uids"]
        if uids and uid in (uids.real, uids.effective, uids.saved):
            return True
    return False


@functools.lru_cache(maxsize=1)
def _sweep_orphaned_run_dirs() -> None:
    """Once per engine process: remove run directories whose engine is gone. Never fails a run."""
    tmp = tempfile.gettempdir()
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(RUN_DIR_PREFIX):
            continue
        pid = entry.name[len(RUN_DIR_PREFIX):].split("-", 1)[0]
        try:
            if pid.isdigit() and not psutil.pid_exists(int(pid)) and \
                    entry.stat(follow_symlinks=False).st_uid in (os.geteuid(), *range(UID_BASE, UID_BASE + UID_COUNT)):
                remove_tree(entry.path)
        except OSError:
            pass


@functools.lru_cache(maxsize=1)
def _uid_lock_dir() -> str:
    """Where the flocks that hand out sandbox uids live (shared by every engine process)."""
    lock_dir = "/run/dcodex-uids" if os.access("/run", os.W_OK) else os.path.join(
        tempfile.gettempdir(), f"dcodex-uids-{os.geteuid()}")
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    return lock_dir


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str) -> None:
    """Remove `path` and everything below it without following a link, without recursion (a
    program may leave a tree thousands deep), and changing modes only of directories inside it
    (a program may chmod 000 its own). One entry that cannot go never stops the rest."""
    parent, name = os.path.split(os.path.abspath(path))
    try:
        top_parent = os.open(parent, _DIR_FLAGS)
    except OSError:
        return
    try:
        _remove_entry(top_parent, name)
    finally:
        os.close(top_parent)


def _remove_entry(parent_fd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        _unlink(parent_fd, name, False)
        return
    # An explicit stack of [parent fd, name, dir fd, entries left] instead of recursion. Nothing
    # of the run is alive any more, so each directory is listed once.
    stack = [[parent_fd, name, *_open_dir(parent_fd, name)]]
    while stack:
        dparent, dname, dfd, names = stack[-1]
        if names:
            cname = names.pop()
            try:
                is_dir = stat.S_ISDIR(os.stat(cname, dir_fd=dfd, follow_symlinks=False).st_mode)
            except OSError:
                continue
            if is_dir:
                stack.append([dfd, cname, *_open_dir(dfd, cname)])
            else:
                _unlink(dfd, cname, False)
            continue
        if dfd is not None:
            os.close(dfd)
        stack.pop()
        _unlink(dparent, dname, True)


def _open_dir(parent_fd: int, name: str) -> tuple[int | None, list[str]]:
    """(fd, entries) of a directory, opened without following links; (None, []) if it cannot
    be opened (its removal then fails, and the rest goes on)."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        fd = _open_unreadable_dir(parent_fd, name)
    except OSError:
        fd = None
    if fd is None:
        return None, []
    try:
        return fd, os.listdir(fd)
    except OSError:
        return fd, []


def _open_unreadable_dir(parent_fd: int, name: str) -> int | None:
    """A directory the program made mode 000: chmod this very directory (opened as O_PATH, never
    through a link) so it can be listed, then open it."""
    try:
        path_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            os.chmod(f"/proc/self/fd/{path_fd}", 0o700)
        finally:
            os.close(path_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return None


def _unlink(parent_fd: int, name: str, is_dir: bool) -> None:
    try:
        if is_dir:
            os.rmdir(name, dir_fd=parent_fd)
        else:
            os.unlink(name, dir_fd=parent_fd)
    except OSError:
        pass


_swept_uids: set[int] = set()


def _shared_tmp_stamp() -> tuple:
    stamp = []
    for top in SHARED_TMP_DIRS:
        try:
            stamp.append(os.stat(top).st_mtime_ns)
        except OSError:
            stamp.append(None)
    return tuple(stamp)


def _remove_files_owned_by(uid: int) -> None:
    for top in SHARED_TMP_DIRS:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    remove_tree(entry.path)
            except OSError:
                pass


@functools.lru_cache(maxsize=8)
def interpreter_prefixes(exe: str) -> tuple[str, ...]:
    """The directories a Python interpreter needs to run and import its packages (its prefix and
    base prefix: a venv and the installation it was made from), to show read-only to runs."""
    if os.path.abspath(exe) == os.path.abspath(sys.executable):
        found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    else:
        out = subprocess.run(
            [exe, "-I", "-c", "import sys; print(sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, sep='\\n')"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        found = out.stdout.split("\n") if out.returncode == 0 else []
    # At the paths the interpreter knows them by, and where its links lead.
    found = [os.path.abspath(p) for p in found if p]
    found += [os.path.realpath(p) for p in found]
    found.append(os.path.dirname(os.path.dirname(os.path.realpath(exe))))
    return tuple(dict.fromkeys(found))
