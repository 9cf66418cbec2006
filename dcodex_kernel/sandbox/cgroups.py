"""One cgroup per run where the machine lets the engine make them: the run's memory (every
process together, tmpfs included), its task count and its CPU time, measured and bounded by the
kernel rather than per process.

cgroup v1 (a `memory` hierarchy writable as root) and v2 (one unified tree, usable where the
engine's own cgroup delegates `memory` and `pids` to its children) are both understood.

Cost, measured here (kernel 6.18, v1): moving a process into a cgroup waits for an RCU grace
period unless another move happened just before — ~5 ms per hierarchy for a cell run on its
own. So on v1 a run uses only `memory` (the one limit no rlimit can express: its task count is
already bounded by RLIMIT_NPROC of its own uid, and its CPU total is summed from its process tree
by the supervisor), and it is never moved at all: each sandbox uid has a memory cgroup of its
own (a *slot*, made once per engine) with a spawner thread living in it, and the run's launcher
is started by that thread, so it is born in the slot (v1 places threads, and memory is charged to
the cgroup of the process that owns the memory: the run's, not the engine's). Between runs the
slot's limit is set anew and its peak and failure counts are reset. On v2 (memory is not a
threaded controller there) each run gets a fresh group, joined in one move for memory, pids and
cpu together. Each run's group is made *below the engine's own cgroup*, so the
limits of whatever contains the engine (a test's pids cap, a container, a systemd slice) still
hold for its runs.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import os
import queue
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import psutil

ROOT = "/sys/fs/cgroup"
RUN_PREFIX = "dcodex-run-"
OWN_LIMIT_REACHED = 0.9  # an OOM kill with the run's peak this close to its limit is the run's
_counter = itertools.count()


@dataclass(frozen=True)
class CgroupSupport:
    version: int  # 1 or 2
    parents: dict  # controller ("memory", and on v2 "pids", "cpu") -> directory runs are made in

    def describe(self) -> str:
        return f"cgroup v{self.version} ({', '.join(self.parents)} per run)"


@functools.lru_cache(maxsize=1)
def detect() -> CgroupSupport | None:
    """Where runs' cgroups can be made, or None (then limits fall back to rlimits + sampling)."""
    try:
        support = _detect_v2() if _is_v2() else _detect_v1()
    except OSError:
        return None
    if support is None:
        return None
    try:  # prove it: make one, set a limit, remove it
        group = RunCgroup(support, memory=64 << 20, tasks=8)
        group.close()
    except OSError:
        return None
    _sweep_orphans(support)
    return support


def _is_v2() -> bool:
    return os.path.exists(os.path.join(ROOT, "cgroup.controllers"))


def _own_path(controller: str | None) -> str:
    """This process's cgroup path in the hierarchy of `controller` (None: the v2 tree)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            names = controllers.split(",") if controllers else []
            if (controller is None and not names) or (controller and controller in names):
                return path
    raise OSError(f"no {controller or 'v2'} cgroup for this process")


def current_parents(support: CgroupSupport) -> dict:
    """Where this process's runs' groups go now: below its own cgroup in each hierarchy."""
    if support.version == 2:
        parent = os.path.join(ROOT, _own_path(None).lstrip("/"))
        return {"memory": parent, "pids": parent, "cpu": parent}
    return {c: os.path.join(ROOT, mount, _own_path(mount).lstrip("/")) for c, mount in _V1_MOUNTS}


_V1_MOUNTS = (("memory", "memory"),)


def _detect_v1() -> CgroupSupport | None:
    parents = {}
    for controller, mount in _V1_MOUNTS:
        top = os.path.join(ROOT, mount)
        if not os.path.isdir(top):
            return None
        parent = os.path.join(top, _own_path(mount).lstrip("/"))
        if not os.access(parent, os.W_OK):
            return None
        parents[controller] = parent
    return CgroupSupport(1, parents)


def _detect_v2() -> CgroupSupport | None:
    parent = os.path.join(ROOT, _own_path(None).lstrip("/"))
    with open(os.path.join(parent, "cgroup.subtree_control")) as f:
        enabled = set(f.read().split())
    if not {"memory", "pids"} <= enabled or not os.access(parent, os.W_OK):
        return None  # not delegated to us: a child would get neither limit
    return CgroupSupport(2, {"memory": parent, "pids": parent, "cpu": parent})


def for_run(support: CgroupSupport, *, uid: int | None, memory: int, tasks: int):
    """The cgroup of one run: a v1 slot of its uid (see the module's doc), else a fresh group."""
    if support.version == 1 and uid is not None:
        return Slot.lease(support, uid, memory)
    return RunCgroup(support, memory=memory, tasks=tasks)


class RunCgroup:
    """The cgroup(s) of one run: made with its limits, read after it, removed at the end."""

    def __init__(self, support: CgroupSupport, *, memory: int, tasks: int):
        self.support = support
        self.memory = memory
        name = f"{RUN_PREFIX}{os.getpid()}-{next(_counter)}"
        # Below where the engine is *now* (it may have been moved since it started).
        self.dirs = {c: os.path.join(p, name) for c, p in current_parents(support).items()}
        self.made: list[str] = []
        try:
            for path in dict.fromkeys(self.dirs.values()):
                os.mkdir(path, 0o755)
                self.made.append(path)
            if support.version == 2:
                self._write("memory", "memory.swap.max", 0, optional=True)
            self.set_limits(memory, tasks)
        except BaseException:
            self.close()
            raise

    def set_limits(self, memory: int, tasks: int) -> None:
        """The run's limits (again, for a group made ahead of its run: see pool.py)."""
        self.memory = memory
        if self.support.version == 1:
            self._write("memory", "memory.limit_in_bytes", memory)
            # Without swap accounting the limit could be dodged by swapping (none here).
            self._write("memory", "memory.memsw.limit_in_bytes", memory, optional=True)
        else:
            self._write("memory", "memory.max", memory)
            self._write("pids", "pids.max", tasks)

    def _write(self, controller: str, name: str, value: int, optional: bool = False) -> None:
        try:
            with open(os.path.join(self.dirs[controller], name), "w") as f:
                f.write(str(value))
        except FileNotFoundError:
            if not optional:
                raise

    def _read(self, controller: str, name: str) -> str:
        try:
            with open(os.path.join(self.dirs[controller], name)) as f:
                return f.read()
        except OSError:
            return ""

    def paths(self) -> list[str]:
        """Directories the launcher joins (one per hierarchy)."""
        return list(self.made)

    def spawn(self, start):
        """Run `start()` (which starts the launcher) where its child lands in this group."""
        return start()

    @property
    def counts_cpu(self) -> bool:
        """Whether cpu_s() and task_count() are the kernel's (v2); else the supervisor samples."""
        return "cpu" in self.dirs

    def cpu_s(self) -> float:
        m = re.search(r"^usage_usec (\d+)", self._read("cpu", "cpu.stat"), re.MULTILINE)
        return int(m.group(1)) / 1e6 if m else 0.0

    def peak_memory(self) -> int:
        name = "memory.max_usage_in_bytes" if self.support.version == 1 else "memory.peak"
        text = self._read("memory", name).strip()
        return int(text) if text.isdigit() else 0

    _oom_base = 0  # the kernel's count when this run began (a slot counts on across runs)

    def _oom_count(self) -> int:
        name = "memory.oom_control" if self.support.version == 1 else "memory.events"
        m = re.search(r"^oom_kill (\d+)", self._read("memory", name), re.MULTILINE)
        return int(m.group(1)) if m else 0

    def oom_kills(self) -> int:
        """OOM kills of the run's processes *because the run reached its own limit*: an OOM
        caused by a parent's limit or the whole machine is not the run's memory limit. (v1's
        failcnt stays 0 here even then, so "reached" is read from the peak.)"""
        kills = self._oom_count() - self._oom_base
        return kills if kills and self.peak_memory() >= OWN_LIMIT_REACHED * self.memory else 0

    def kill(self) -> None:
        """SIGKILL every task of the run at once where the kernel offers it (v2's cgroup.kill);
        elsewhere the run's pid namespace (or the subreaper) does the same."""
        if self.support.version == 2:
            try:
                with open(os.path.join(self.dirs["pids"], "cgroup.kill"), "w") as f:
                    f.write("1")
            except OSError:
                pass

    def task_count(self) -> int:
        return len(self._read("pids", "cgroup.procs").split())

    def close(self) -> None:
        """Remove the groups. Called once nothing of the run is left; a group still busy for a
        moment (a task being reaped) is retried briefly, then left for the next sweep."""
        for path in reversed(self.made):
            _rmdir_soon(path)
        self.made = []


def _rmdir_soon(path: str, within: float = 1.0) -> None:
    """rmdir a cgroup, retrying while its last task is still leaving it; given up after
    `within` seconds (the orphan sweep removes it later)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)


def _sweep_orphans(support: CgroupSupport) -> None:
    """Remove (empty) run groups left by engines that were killed outright."""
    for parent in set(support.parents.values()):
        try:
            entries = os.listdir(parent)
        except OSError:
            continue
        for name in entries:
            if not name.startswith(RUN_PREFIX):
                continue
            pid = name[len(RUN_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not psutil.pid_exists(int(pid)):
                try:
                    os.rmdir(os.path.join(parent, name))
                except OSError:
                    pass


class Slot(RunCgroup):
    """A v1 memory cgroup kept for one sandbox uid of this engine, and the thread that starts
    that uid's runs from inside it. A uid runs one run at a time, so a slot serves one run at a
    time; `lease` readies it for the next run (its limit, peak and OOM count) and `close` gives it back."""

    _slots: dict[int, "Slot"] = {}
    _lock = threading.Lock()

    @classmethod
    def lease(cls, support: CgroupSupport, uid: int, memory: int) -> "Slot":
        with cls._lock:
            slot = cls._slots.get(uid)
            if slot is None or not slot._in_place():
                if not cls._slots:
                    atexit.register(cls.remove_all)
                slot = cls._slots[uid] = cls(support, uid)
        slot._ready(memory)
        return slot

    def _in_place(self) -> bool:
        """The slot is still below the engine's memory cgroup and its thread still in it (the
        engine may have been moved since: its threads move with it)."""
        parent = current_parents(self.support)["memory"]
        if os.path.dirname(self.dirs["memory"]) != parent.rstrip("/"):
            return False
        try:
            with open(f"/proc/self/task/{self._tid}/cgroup") as f:
                for line in f:
                    _, controllers, path = line.rstrip("\n").split(":", 2)
                    if "memory" in controllers.split(","):
                        return self.dirs["memory"].endswith(path)
        except OSError:
            pass
        return False

    def __init__(self, support: CgroupSupport, uid: int):  # noqa: super().__init__ not wanted
        self.support = support
        self.memory = 1 << 62  # a new group's limit: none
        parent = current_parents(support)["memory"]
        self.dirs = {"memory": os.path.join(parent.rstrip("/"), f"{RUN_PREFIX}{os.getpid()}-slot-{uid}")}
        self.made = []
        os.makedirs(self.dirs["memory"], 0o755, exist_ok=True)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        joined: Future = Future()
        threading.Thread(target=self._serve, args=(joined,), daemon=True,
                         name=f"dcodex-slot-{uid}").start()
        joined.result()  # raises if the thread could not join the slot

    def _serve(self, joined: Future) -> None:
        self._tid = threading.get_native_id()
        try:  # v1 `tasks` moves this one thread (once per slot: the only move it ever makes)
            with open(os.path.join(self.dirs["memory"], "tasks"), "w") as f:
                f.write(str(self._tid))
        except OSError as e:
            joined.set_exception(e)
            return
        joined.set_result(None)
        while True:
            start, done = self._requests.get()
            if start is None:  # the engine is exiting: leave the slot so it can be removed
                done.set_result(None)
                return
            try:
                done.set_result(start())
            except BaseException as e:
                done.set_exception(e)

    def spawn(self, start):
        done: Future = Future()
        self._requests.put((start, done))
        return done.result()

    def _ready(self, memory: int) -> None:
        # memsw must stay >= the memory limit: raise it first, lower it after.
        order = (("memory.memsw.limit_in_bytes", True), ("memory.limit_in_bytes", False))
        if memory < self.memory:
            order = order[::-1]
        for name, optional in order:
            try:
                self._write("memory", name, memory, optional=optional)
            except OSError:  # charges left from an earlier run sit above the new limit
                self._write("memory", "memory.force_empty", 0)
                self._write("memory", name, memory, optional=optional)
        self.memory = memory
        # What earlier runs of this uid left charged here (the page cache of files they read
        # first: headers, a precompiled header of 150 MB) would count in this run's peak, and a
        # failing run near its limit reads as out of memory: drop it while it is a large part.
        used = self._read("memory", "memory.usage_in_bytes").strip()
        if used.isdigit() and int(used) > memory // 8:
            try:
                self._write("memory", "memory.force_empty", 0)
            except OSError:
                pass
        # The peak and the OOM count are the run's own from here on.
        self._oom_base = self._oom_count()
        self._write("memory", "memory.max_usage_in_bytes", 0)

    def paths(self) -> list[str]:
        return []  # born in the slot: nothing to join

    def set_limits(self, memory: int, tasks: int) -> None:
        # Readied again when its run starts, not only when its sandbox was made: the peak must
        # be the run's own, whatever was still charged to the slot in between.
        self._ready(memory)

    @classmethod
    def remove_all(cls) -> None:
        """At engine exit: end the spawner threads and remove the slots (a cgroup someone else
        made around the engine must not be left with our children in it)."""
        with cls._lock:
            slots, cls._slots = list(cls._slots.values()), {}
        for slot in slots:
            done: Future = Future()
            slot._requests.put((None, done))
            try:
                done.result(timeout=1)
            except Exception:
                pass
            _rmdir_soon(slot.dirs["memory"])  # the thread may still be leaving it

    def close(self) -> None:
        pass  # kept for the uid's next run
