"""Is a run blocked reading its stdin? Asked of the kernel, not of the program: every thread of
every process below the run's launcher is looked at in /proc (its current system call and the
file that call's descriptor names; for poll and select, the descriptor sets in its memory), so a
program needs no cooperation to be prompted for input. (epoll waits are not seen.)

/proc/PID/task/TID/syscall, /proc/PID/mem and /proc/PID/fd need ptrace access to the process. The engine
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
import struct

_ARCH = platform.machine()
# System calls whose first argument is the descriptor they block reading from: read, readv.
_READS = {"x86_64": {0, 19}, "aarch64": {63, 65}}.get(_ARCH, set())
# Waiting for descriptors to become readable: poll/ppoll (args: struct pollfd *, nfds) and
# select/pselect6 (args: nfds, fd_set *readfds), read from the thread's memory (/proc/PID/mem).
_POLLS = {"x86_64": {7, 271}, "aarch64": {73}}.get(_ARCH, set())
_SELECTS = {"x86_64": {23, 270}, "aarch64": {72}}.get(_ARCH, set())
_MAX_FDS = 1024
_POLLIN = 1


def blocked_reading(launcher_pid: int, pipe_inode: int) -> bool:
    """True if some thread of the run sits in read()/readv() on the pipe `pipe_inode`, or in
    poll()/select() waiting for it to become readable."""
    target = f"pipe:[{pipe_inode}]"
    for pid in _descendants(launcher_pid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            for fd in _waited_fds(pid, tid):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return True
                except OSError:
                    pass
    return False


def _waited_fds(pid: str | int, tid: str) -> list[int]:
    """The descriptors a thread is blocked reading from (read, readv) or waiting to become
    readable (poll, ppoll, select, pselect6)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall", "rb") as f:
            fields = f.read().split()
    except OSError:  # gone, or not ours to look at
        return []
    if len(fields) < 3 or not fields[0].isdigit():
        return []  # "running", or "-1 ..." (not in a system call)
    call, args = int(fields[0]), [int(a, 16) for a in fields[1:7]]
    if call in _READS:
        return [args[0]]
    if call in _POLLS and args[0] and 0 < args[1] <= _MAX_FDS:
        raw = _memory(pid, args[0], args[1] * 8)
        return [fd for fd, events, _ in struct.iter_unpack("ihh", raw[: len(raw) // 8 * 8])
                if fd >= 0 and events & _POLLIN]
    if call in _SELECTS and args[1] and 0 < args[0] <= _MAX_FDS:
        raw = _memory(pid, args[1], (args[0] + 7) // 8)
        return [i for i in range(min(args[0], len(raw) * 8)) if raw[i // 8] >> (i % 8) & 1]
    return []


def _memory(pid, address: int, size: int) -> bytes:
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as f:
            f.seek(address)
            return f.read(size)
    except (OSError, ValueError, OverflowError):
        return b""


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
