"""Is a run blocked reading its stdin? Asked of the kernel, not of the program: every thread of
every process below the run's launcher is looked at in /proc (its current system call and the
file that call's descriptor names), so a program needs no cooperation to be prompted for input.

/proc/PID/task/TID/syscall and /proc/PID/fd need ptrace-read access to the process. The engine
has it in both modes: as root (CAP_SYS_PTRACE), and as an ordinary user because the run's user
namespace is the engine's own child (its creator holds every capability in it) and the program's
uid maps to the engine's. The run's init is non-dumpable but never reads stdin; a process we may
not look at simply does not count as waiting.

The cost is a few /proc reads per thread (~20 µs each), paid only for interactive runs whose
output has gone quiet (see process.py).
"""

from __future__ import annotations

import os
import platform

# System calls whose first argument is the descriptor they block reading from.
_READS = {"x86_64": {0, 19}, "aarch64": {63, 65}}.get(platform.machine(), set())  # read, readv


def blocked_reading(launcher_pid: int, pipe_inode: int) -> bool:
    """True if some thread of the run sits in read()/readv() on the pipe `pipe_inode`."""
    target = f"pipe:[{pipe_inode}]"
    for pid in _descendants(launcher_pid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            fd = _read_fd(f"/proc/{pid}/task/{tid}/syscall")
            if fd is None:
                continue
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                pass
    return False


def _read_fd(path: str) -> int | None:
    """The descriptor a thread is blocked reading from, if it is in read()/readv()."""
    try:
        with open(path, "rb") as f:
            fields = f.read().split()
    except OSError:  # gone, or not ours to look at
        return None
    if len(fields) < 2 or not fields[0].isdigit() or int(fields[0]) not in _READS:
        return None  # "running", "-1 ..." (not in a system call), or another call
    return int(fields[1], 16)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children files of each thread, breadth first)."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found.extend(kids)
            queue.extend(kids)
    return found
