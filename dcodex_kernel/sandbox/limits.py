"""Turn `Limits` into the launcher's rlimit arguments."""

from __future__ import annotations

import math
import os

from ..request import Limits

STACK = 8 << 20  # the usual Linux default; glibc also sizes each thread's stack by it


def rlimit_args(limits: Limits, *, own_uid: bool) -> list[str]:
    cpu = max(1, math.ceil(limits.cpu_s))
    nproc = limits.processes
    if not own_uid:
        # RLIMIT_NPROC counts every task of the real uid, so for a run that shares the engine's
        # uid the cap must sit above what that user already runs.
        nproc += _tasks_of_current_user()
    pairs = {
        "CPU": (cpu, cpu + 1),  # soft: SIGXCPU; hard: SIGKILL a second later
        "AS": (limits.memory, limits.memory),
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
