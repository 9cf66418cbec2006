"""Pre-started sandboxes: confinement off a run's critical path.

Making a confined sandbox costs ~2.5 ms before the program can start (starting the launcher,
the namespaces, the new root with its binds and tmpfs, the uid, the cgroup). None of it depends
on the program, so a background thread makes sandboxes ahead of need: each is a launcher
started with `-W` (see launcher.c), finished up to the point where it would copy the program's
files in (its program process made and confined too, waiting for its program), waiting on a
unix socket. A run takes one, sends its own options, files, pipes and
program in one "go" message and is under way; the sandbox is used for that one run only, and a
fresh one is made in the background to replace it. After the run the launcher tears the
namespace down off the run's path too: the run is over for the engine when it has the stats
and the program's pipes are closed; reaping the launcher, giving back its uid and removing its
cgroup happen on the pool's thread.

Bounded: at most POOL_SIZE ready per shape (the launcher flags a sandbox is made with: C and
C++ runs share one, Python runs another), at most MAX_SHAPES shapes; DCODEX_POOL=0 turns it off
(every run then makes its own sandbox, as before). A sandbox not yet used is named
`dcodex-ready` in ps, a used one `dcodex-launch`.
"""

from __future__ import annotations

import array
import atexit
import collections
import os
import queue
import socket
import subprocess
import threading
from dataclasses import dataclass

from ..request import Limits
from . import cgroups
from .isolation import Capabilities, Workspace
from .launcher import launcher_command, start_launcher

POOL_SIZE = 2
MAX_SHAPES = 4
READY_TIMEOUT_S = 10.0
MAX_FAILURES = 3  # pre-starts of one shape failing in a row: that shape is made per run again
# The go message's bounds (launcher.c): its words and its fds (the kernel's SCM_MAX_FD).
GO_MAX_BYTES = 160 << 10
GO_MAX_FDS = 253
_DEFAULTS = Limits()


def pool_size(environ=os.environ) -> int:
    try:
        return max(0, int(environ.get("DCODEX_POOL", POOL_SIZE)))
    except ValueError:
        return POOL_SIZE


@dataclass
class Ready:
    """One pre-started sandbox: its launcher, the socket it waits on, the uid it holds (root) and
    its cgroup."""

    proc: subprocess.Popen
    sock: socket.socket
    workspace: Workspace
    group: object  # cgroups.RunCgroup | cgroups.Slot | None
    shape: tuple

    @property
    def uid(self) -> int | None:
        return self.workspace.uid

    def go(self, words: list[str], fds: list[int]) -> None:
        """Start the run: its options and program (`words`), its fds (stdin, stdout, stderr,
        then those the words name by index)."""
        data = b"\0".join(os.fsencode(w) for w in words)
        try:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        finally:
            self.sock.close()

    def release(self, wait_s: float = 10.0) -> None:
        """After its run (or unused): reap the launcher, give back the uid and the cgroup."""
        if self.sock.fileno() != -1:
            self.sock.close()  # an unused sandbox ends at EOF
        try:
            self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.group is not None:
            self.group.close()
        self.workspace.__exit__(None, None, None)


class Pool:
    """The engine's pre-started sandboxes, by shape, and the thread that makes and reaps them."""

    def __init__(self, size: int):
        self.size = size
        self._ready: dict[tuple, collections.deque] = collections.OrderedDict()
        self._making: collections.Counter = collections.Counter()
        self._failures: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # queued or running jobs of the thread
        self._thread: threading.Thread | None = None
        self.served = 0  # runs that started in a pre-started sandbox
        self.missed = 0  # poolable runs that found none ready
        self.last_error = ""

    # ---- for runs ----

    def take(self, caps: Capabilities, python: bool) -> Ready | None:
        """A ready sandbox of this shape, or None (the run then makes its own); either way the
        pool is topped up in the background."""
        shape = _shape(caps, python)
        with self._lock:
            if self._failures[shape] >= MAX_FAILURES:
                return None
            ready = self._ready.get(shape)
            found = None
            while ready:
                candidate = ready.popleft()
                if candidate.proc.poll() is None:
                    found = candidate
                    break
                self._submit(("release", candidate))  # died while waiting (killed by someone)
            if found is None:
                self.missed += 1
            else:
                self.served += 1
            self._top_up(shape, caps, python)
        return found

    def done(self, ready: Ready, started: bool = True) -> None:
        """The run in `ready` is over for the engine (or never `started`: the sandbox had died,
        and the run made its own): reap and release it in the background."""
        with self._lock:
            if not started:
                self.served -= 1
                self.missed += 1
            self._submit(("release", ready))

    # ---- for tests, `dcodex doctor` and shutdown ----

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no sandbox is being made or released."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def held_fds(self) -> set[int]:
        """The fds the pool holds between runs: a ready sandbox's socket and its uid's lock."""
        with self._lock:
            ready = [r for q in self._ready.values() for r in q]
        return {fd for r in ready for fd in (r.sock.fileno(), r.workspace.lock_fd) if fd >= 0}

    def ready_count(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._ready.values())

    def close_idle(self) -> None:
        """End every ready sandbox (and wait for the thread's work)."""
        with self._lock:
            shapes, self._ready = list(self._ready.values()), collections.OrderedDict()
            for ready in (r for q in shapes for r in q):
                self._submit(("release", ready))
        self.wait_idle()

    def describe(self) -> str:
        if self.size == 0:
            return "off (DCODEX_POOL=0)"
        text = (f"up to {self.size} per kind of run, made ahead of need; {self.ready_count()} "
                f"ready now, {self.served} of {self.served + self.missed} runs started in one")
        return text + (f"; last failure: {self.last_error}" if self.last_error else "")

    # ---- the thread ----

    def _submit(self, job) -> None:  # with the lock held
        self._pending += 1
        self._work.put(job)
        if self._thread is None:
            # Long-lived: a launcher dies with the thread that started it (PDEATHSIG).
            self._thread = threading.Thread(target=self._serve, daemon=True, name="dcodex-pool")
            self._thread.start()

    def _top_up(self, shape: tuple, caps: Capabilities, python: bool) -> None:  # lock held
        if shape not in self._ready:
            self._ready[shape] = collections.deque()
            while len(self._ready) > MAX_SHAPES:  # the least recently used shape goes
                _, old = self._ready.popitem(last=False)
                for ready in old:
                    self._submit(("release", ready))
        self._ready.move_to_end(shape)
        for _ in range(self.size - len(self._ready[shape]) - self._making[shape]):
            self._making[shape] += 1
            self._submit(("make", shape, caps, python))

    def _serve(self) -> None:
        while True:
            job = self._work.get()
            try:
                if job[0] == "release":
                    job[1].release()
                else:
                    self._make(*job[1:])
            except Exception as e:  # noqa: BLE001 - the thread must go on; runs fall back
                self.last_error = f"{type(e).__name__}: {e}"
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _make(self, shape: tuple, caps: Capabilities, python: bool) -> None:
        try:
            ready = _prestart(shape, caps, python)
        except Exception as e:
            with self._lock:
                self._making[shape] -= 1
                self._failures[shape] += 1
            raise e
        with self._lock:
            self._making[shape] -= 1
            self._failures[shape] = 0
            if shape in self._ready and len(self._ready[shape]) < self.size:
                self._ready[shape].append(ready)
                return
        ready.release()  # the shape was dropped meanwhile


def _shape(caps: Capabilities, python: bool) -> tuple:
    return tuple(caps.launcher_flags(python=python))


class PrestartFailed(RuntimeError):
    pass


def _prestart(shape: tuple, caps: Capabilities, python: bool) -> Ready:
    workspace = Workspace(caps).__enter__()  # as root: the uid this sandbox's run will have
    group = None
    try:
        if caps.cgroup is not None:
            group = cgroups.for_run(caps.cgroup, uid=workspace.uid, memory=_DEFAULTS.memory,
                                    tasks=_DEFAULTS.processes + 2)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            cmd = [*launcher_command(shape, workspace.uid, workspace.gid, group),
                   "-d", str(_DEFAULTS.disk), "-W", str(theirs.fileno())]
            proc = start_launcher(cmd, group, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, cwd="/", env={},
                                  pass_fds=(theirs.fileno(), *caps.inherited_fds()))
        finally:
            theirs.close()
        ours.settimeout(READY_TIMEOUT_S)
        try:
            said = ours.recv(1)
        except OSError:
            said = b""
        ours.settimeout(None)
        if said != b"R":
            ours.close()
            proc.kill()
            proc.wait()
            why = proc.stderr.read().decode(errors="replace").strip()
            proc.stderr.close()
            raise PrestartFailed(why.splitlines()[-1] if why else f"launcher exited {proc.returncode}")
        proc.stderr.close()  # what it says from now on goes to its run's stderr
    except BaseException:
        if group is not None:
            group.close()
        workspace.__exit__(None, None, None)
        raise
    return Ready(proc, ours, workspace, group, shape)


_pool: Pool | None = None
_pool_lock = threading.Lock()


def the_pool() -> Pool:
    """This engine process's pool (made on first use, sized by DCODEX_POOL)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool(pool_size())
            atexit.register(_pool.close_idle)
        return _pool


def _forget_in_child() -> None:
    # A forked child is another engine: the parent's sandboxes are the parent's.
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_in_child)


def serves(caps: Capabilities, nfds: int, words: int) -> bool:
    """Whether a run with `nfds` fds of its own and go-message words of `words` bytes can start
    in a pre-started sandbox (the engine's layers allow it, DCODEX_POOL is not 0)."""
    return (caps.prestart and caps.filesystem and caps.pid_namespace and nfds + 4 <= GO_MAX_FDS
            and words < GO_MAX_BYTES and the_pool().size > 0)
