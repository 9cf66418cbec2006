"""Turn `Limits` into the launcher's rlimit arguments."""

from __future__ import annotations

import math
import os

from ..request import Limits

STACK = 8 << 20  # the usual Linux default; glibc also sizes each thread's stack by it


# With a memory cgroup the run's memory is bounded by the kernel, counting what it really uses;
# the address-space limit is then only a backstop, generous enough that allocations never fail
# before the cgroup's limit is reached (threads reserve far more address space than they use).
AS_BACKSTOP_FACTOR = 4
AS_BACKSTOP_MIN = 1 << 30


def rlimit_args(limits: Limits, *, own_uid: bool, memory_cgroup: bool = False) -> list[str]:
    # CPU: the supervisor enforces the run's total; RLIMIT_CPU per process stays as a backstop,
    # a second later, so that the supervisor (not a child's own limit) ends a run at its budget.
    cpu = math.ceil(limits.cpu_s) + 1
    memory = limits.memory
    if memory_cgroup:
        memory = max(memory * AS_BACKSTOP_FACTOR, memory + AS_BACKSTOP_MIN)
    nproc = limits.processes
    if not own_uid:
        # RLIMIT_NPROC counts every task of the real uid, so for a run that shares the engine's
        # uid the cap must sit above what that user already runs.
        nproc += _tasks_of_current_user()
    pairs = {
        "CPU": (cpu, cpu + 1),  # soft: SIGXCPU; hard: SIGKILL a second later
        "AS": (memory, memory),
        "FSIZE": (limits.file_size, limits.file_size),
        "NOFILE": (limits.open_files, limits.open_files),
        "NPROC": (nproc, nproc),
        "CORE": (0, 0),
        "STACK": (min(STACK, limits.memory), min(STACK, limits.memory)),
    }
    args = []
    for name, (soft, hard) in pairs.items():
        args += ["-l", f"{name}={soft}:{hard}"]
    return args


def _tasks_of_current_user() -> int:
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass
    return count
