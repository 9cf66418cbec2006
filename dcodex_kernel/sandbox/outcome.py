"""Read how a process ended (`ProcessExit`) as a Status and a one-line message."""

from __future__ import annotations

import os
import re
import signal

from ..events import Status
from ..request import Limits, format_size
from .process import LAUNCH_FAILED, LAUNCH_NO_ROOM, ProcessExit

# What a program says when an allocation fails under RLIMIT_AS.
_OOM_TEXT = re.compile(
    rb"std::bad_alloc|MemoryError|Cannot allocate memory|out of memory|Out of memory",
)
# A failing program whose peak RSS came this close to the cap ran out of memory.
_NEAR_CAP = 0.75


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def classify(exit: ProcessExit, limits: Limits) -> tuple[Status, str, int | None, int | None]:
    """→ (status, message, exit_code, signal)."""
    code = sig = None
    if exit.wait_status is not None:
        if os.WIFEXITED(exit.wait_status):
            code = os.WEXITSTATUS(exit.wait_status)
        elif os.WIFSIGNALED(exit.wait_status):
            sig = os.WTERMSIG(exit.wait_status)

    if exit.stopped_for == "cancel":
        return Status.CANCELLED, "Interrupted", code, sig
    if exit.stopped_for == "output":
        return (Status.OUTPUT_LIMIT,
                f"Output limit of {format_size(limits.output)} reached; the program was stopped",
                code, sig)
    if exit.stopped_for == "input":
        return (Status.WALL_TIMEOUT, f"No input for {exit.input_timeout_s:g} s: the program was "
                "waiting for stdin (input timeout)", code, sig)
    if exit.stopped_for == "wall":
        return Status.WALL_TIMEOUT, f"Wall-clock limit of {limits.wall_s:g} s exceeded", code, sig
    # The CPU limit is the run's: the supervisor stopped it at the total, or the total reached
    # it anyway (a child killed by its own RLIMIT_CPU while its parent exits 0 is over it too).
    if exit.stopped_for == "cpu" or (exit.wait_status is not None and exit.cpu_s >= limits.cpu_s) \
            or sig == signal.SIGXCPU:
        by = f" by {exit.processes} processes" if exit.processes > 1 else ""
        return (Status.TIME_LIMIT,
                f"CPU time limit of {limits.cpu_s:g} s exceeded ({exit.cpu_s:.2f} s used{by})", code, sig)
    if exit.wait_status is None:
        if exit.own_oom:  # the run's init itself was the OOM killer's choice
            return Status.MEMORY_LIMIT, f"Memory limit of {format_size(limits.memory)} reached", code, sig
        if exit.launcher_code == LAUNCH_NO_ROOM:
            return (Status.REJECTED, f"Disk limit of {format_size(limits.disk)} is too small for the "
                    "program's own files", code, sig)
        if exit.launcher_code == LAUNCH_FAILED:
            detail = exit.stderr_tail.decode(errors="replace").strip().splitlines()
            return Status.INTERNAL_ERROR, (detail[-1] if detail else "sandbox failed to start"), code, sig
        return Status.INTERNAL_ERROR, f"sandbox ended without a status (code {exit.launcher_code})", code, sig

    failed = code != 0
    # Memory is the run's too: a process of it killed at the run's own cgroup limit makes the
    # run memory_limit, even if the main process went on to exit 0.
    if exit.own_oom:
        return Status.MEMORY_LIMIT, f"Memory limit of {format_size(limits.memory)} reached", code, sig
    if sig == signal.SIGKILL and exit.oom_kills > 0:
        return (Status.MEMORY_LIMIT, "Killed by the system's out-of-memory killer "
                "(the machine or its memory cgroup ran out of memory)", code, sig)
    if failed and (
        exit.allocation_failed
        or _OOM_TEXT.search(exit.stderr_tail)
        or exit.peak_memory >= _NEAR_CAP * limits.memory
    ):
        return Status.MEMORY_LIMIT, f"Memory limit of {format_size(limits.memory)} reached", code, sig
    if sig is not None:
        desc = signal.strsignal(sig) or ""
        return Status.SIGNALED, f"Killed by signal {signal_name(sig)} ({desc})", code, sig
    if code == 127 and b"dcodex-launch: cannot run" in exit.stderr_tail:
        return Status.INTERNAL_ERROR, exit.stderr_tail.decode(errors="replace").strip().splitlines()[-1], code, sig
    if failed:
        return Status.RUNTIME_ERROR, f"Exited with status {code}", code, sig
    return Status.OK, "", code, sig
