"""Which isolation layers this machine allows (detected once), and each run's private
workspace: a temp dir and, when the engine runs as root, an unprivileged uid of its own."""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import psutil

from .launcher import launcher_path

# Each concurrent run as root gets its own uid from this range: RLIMIT_NPROC then counts only
# that run's processes, runs cannot signal each other, and the files a run leaves in /tmp can be
# found by owner. The uids need no /etc/passwd entry.
UID_BASE = int(os.environ.get("DCODEX_UID_BASE", "61000"))
UID_COUNT = 256
# Run directories are named after the engine's pid, so a later engine can tell the directories
# of an engine that was killed outright (SIGKILL runs no cleanup) and remove them.
RUN_DIR_PREFIX = "dcodex-run-"
# World-writable places a program could leave files in, outside its own directory.
SHARED_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass(frozen=True)
class Capabilities:
    root: bool
    pid_namespace: bool  # every run gets its own pid namespace (its init kills all on exit)
    user_namespace: bool  # ...made possible for a non-root engine by a user namespace
    netns_fd: int | None = None  # an empty network namespace every run joins (root)

    def launcher_flags(self) -> list[str]:
        if not self.pid_namespace:
            return []
        if self.user_namespace:
            return ["-n", "-N", "-U"]  # a namespace of its own: it cannot join one it does not own
        return ["-n", "-E", str(self.netns_fd)] if self.netns_fd is not None else ["-n"]

    def inherited_fds(self) -> tuple[int, ...]:
        return () if self.netns_fd is None or self.user_namespace else (self.netns_fd,)

    @property
    def network_blocked(self) -> bool:
        return self.pid_namespace and (self.user_namespace or self.netns_fd is not None)

    def layers(self) -> tuple[str, ...]:
        layers = ["rlimits", "private-dir", "clean-env", "new-session"]
        layers.append("pid-namespace" if self.pid_namespace else "subreaper")
        if self.network_blocked:
            layers.append("no-network")
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
        if not self.root:
            out.append("per-run-uid (needs root; runs share your uid and process limit)")
        return tuple(out)


@functools.lru_cache(maxsize=1)
def detect() -> Capabilities:
    if os.geteuid() == 0:
        pidns = _launcher_works(["-n"])
        return Capabilities(root=True, pid_namespace=pidns, user_namespace=False,
                            netns_fd=_empty_network_namespace() if pidns else None)
    userns = _launcher_works(["-n", "-N", "-U"])
    return Capabilities(root=False, pid_namespace=userns, user_namespace=userns)


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
    """A run's private directory and identity; everything is removed on exit.

    Use as a context manager; `uid`/`gid` are None when the engine is not root (the program
    then runs as the engine's own user).
    """

    def __init__(self, caps: Capabilities):
        self.caps = caps
        self.uid: int | None = None
        self.gid: int | None = None
        self.path = ""
        self._lock_fd = -1

    def __enter__(self) -> "Workspace":
        try:
            if self.caps.root:
                self._acquire_uid()
            _sweep_orphaned_run_dirs()
            self.path = tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-")
            if self.uid is not None:
                os.chown(self.path, self.uid, self.gid)
            self._tmp_stamp = _shared_tmp_stamp()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        # Scanning the shared tmp dirs costs ~0.5 ms: do it only if something was created or
        # removed in them during the run (their mtime moved), and once per uid per engine
        # process (for files a crashed engine's run left under this uid).
        tmp_changed = _shared_tmp_stamp() != getattr(self, "_tmp_stamp", None)
        if self.path:
            _remove_tree(self.path)
            self.path = ""
        if self.uid is not None:
            if tmp_changed or self.uid not in _swept_uids:
                _remove_files_owned_by(self.uid)
                _swept_uids.add(self.uid)
            self.uid = self.gid = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock: the uid is free again
            self._lock_fd = -1

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
            self._lock_fd, self.uid, self.gid = fd, uid, uid
            return
        raise NoFreeIdentity(f"all {UID_COUNT} sandbox uids are busy")


@functools.lru_cache(maxsize=1)
def _sweep_orphaned_run_dirs() -> None:
    """Once per engine process: remove run directories whose engine is gone."""
    tmp = tempfile.gettempdir()
    for entry in os.scandir(tmp):
        if not entry.name.startswith(RUN_DIR_PREFIX):
            continue
        pid = entry.name[len(RUN_DIR_PREFIX):].split("-", 1)[0]
        try:
            if pid.isdigit() and not psutil.pid_exists(int(pid)) and \
                    entry.stat(follow_symlinks=False).st_uid in (os.geteuid(), *range(UID_BASE, UID_BASE + UID_COUNT)):
                _remove_tree(entry.path)
        except OSError:
            pass


@functools.lru_cache(maxsize=1)
def _uid_lock_dir() -> str:
    """Where the flocks that hand out sandbox uids live (shared by every engine process)."""
    lock_dir = "/run/dcodex-uids" if os.access("/run", os.W_OK) else os.path.join(
        tempfile.gettempdir(), f"dcodex-uids-{os.geteuid()}")
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    return lock_dir


def _remove_tree(path: str) -> None:
    def make_writable_and_retry(func, p, _exc):
        # A program may chmod 000 its own directories; the engine still removes them.
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except FileNotFoundError:
            pass

    if sys.version_info >= (3, 12):  # onerror is deprecated there; the handler is the same
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)


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
                st = entry.stat(follow_symlinks=False)
                if st.st_uid != uid:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    _remove_tree(entry.path)
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass
