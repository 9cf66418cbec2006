"""Run one command in the sandbox: spawn it through the launcher, pump its output live, enforce
the wall clock, the output cap and cancellation, kill the whole run at the end, collect stats."""

from __future__ import annotations

import codecs
import collections
import fcntl
import os
import select
import selectors
import signal
import struct
import subprocess
import termios
import time
from dataclasses import dataclass
from typing import Generator

import psutil

from ..cancel import CancelToken
from ..events import InputRequest, Output
from ..interactive import StdinFeed
from ..request import Limits
from . import cgroups, pool
from .isolation import Capabilities, Workspace
from .launcher import launcher_command, start_launcher
from .limits import rlimit_args
from .stdin_probe import blocked_reading

READ_SIZE = 1 << 16
# A chunk that ends mid-line waits this long for the rest of the line: `print("a", 1)` under
# python -u is three writes, and one event per line is what front doors want to send on.
COALESCE_S = 0.002
# Output read while the program runs is yielded within this long, in one event per stream run:
# fewer events for a chatty program, and a short run's output comes with its end.
HOLD_S = 0.005
STDERR_TAIL = 4096  # bytes of stderr kept to recognise out-of-memory messages
LAUNCH_FAILED = 125  # the launcher's own exit code when it could not start the program
LAUNCH_NO_ROOM = 124  # ... when the program's own files did not fit in its disk
# Interactive runs: how long the output must be quiet before the engine looks whether the program
# is blocked reading stdin, and the longest gap between two looks while it stays quiet.
PROBE_QUIET_S = 0.02
PROBE_MAX_S = 0.25


@dataclass
class ProcessExit:
    """How a sandboxed command ended, before any interpretation."""

    wait_status: int | None  # the program's wait(2) status; None if it never reported one
    cpu_s: float  # the whole run's CPU time (every process and thread)
    wall_s: float
    peak_memory: int  # the run's peak memory (its cgroup's, or the sampled sum of its processes)
    stopped_for: str | None  # "wall", "cpu", "output" or "cancel" when the supervisor ended it
    oom_kills: int  # out-of-memory kills while it ran (its own cgroup's, or the machine's)
    truncated: bool
    stderr_tail: bytes
    launcher_code: int  # exit code of the launcher itself (LAUNCH_FAILED = could not start)
    processes: int = 1  # the most processes of the run seen at once
    output: str = "none"  # the -o file: "none" asked, "taken", "absent", "refused"
    allocation_failed: bool = False  # a C/C++ program's malloc returned NULL
    own_oom: bool = False  # the OOM kill was inside the run's own memory cgroup
    input_wait_s: float = 0.0  # time spent waiting for the user's input (not in wall_s)
    input_timeout_s: float = 0.0  # the wait it was allowed (stopped_for "input": exceeded)


_OUTPUT_STATES = {0: "none", 1: "taken", 2: "absent", 3: "refused"}
# Between checks of the run's CPU total the supervisor sleeps for as long as the run could not
# possibly use up its budget on every core; without a cgroup it also samples the peak memory at
# least this often.
CHECK_MIN_S = 0.01
SAMPLE_MAX_S = 0.25


def truncation_marker(cap: int) -> str:
    # The DCodeX wording, so server clients see the same text.
    return f"\n[Output truncated: exceeded {cap // 1024} KB limit]\n"


def run_process(
    argv: list[str],
    *,
    workspace: Workspace,
    caps: Capabilities,
    env: dict[str, str],
    limits: Limits,
    stdin: bytes = b"",
    cancel: CancelToken | None = None,
    phase: str = "run",
    inputs: tuple[tuple[str, int, int], ...] = (),
    output: tuple[str, int] | None = None,
    python: bool = False,
    binds: tuple[tuple[str, int], ...] = (),
    feed: StdinFeed | None = None,
) -> Generator[Output | InputRequest, None, ProcessExit]:
    """Yield Output events while `argv` runs; return its ProcessExit. `inputs` are
    (name, fd, mode) files copied into the program's work dir first; `output` is (name, fd): that
    file of the work dir is copied to fd afterwards if it is a regular file of the program's.
    `python`: the program is the Python interpreter (its prefixes are shown to it).
    `binds`: (place in the run, an fd of a host dir) pairs, shown read-only where the
    filesystem is confined (elsewhere a program sees the host anyway).
    `feed` (with no `stdin`): stdin stays open and is fed from it; an InputRequest is yielded
    each time the program blocks reading it (see interactive.py).
    Closing the generator early (client gone, exception) still kills every process of the run."""
    binds = binds if caps.filesystem else ()
    fds = [fd for _, fd, _ in inputs] + ([output[1]] if output is not None else [])
    words = sum(len(w) + 16 for w in [*argv, *(name for name, _, _ in inputs),
                                      *(f"{k}={v}" for k, v in env.items())])
    ready = None
    if not binds and workspace.workdir is None and pool.serves(caps, len(fds), words):
        ready = pool.the_pool().take(caps, python)
    if ready is not None:
        if ready.group is not None:
            ready.group.set_limits(limits.memory, limits.processes + 2)
        started = True
        try:
            exit = yield from _run(argv, workspace, ready.uid, caps, env, limits, stdin, cancel,
                                   phase, inputs, output, ready.group, python, binds,
                                   feed if not stdin else None, ready)
            return exit
        except _SandboxGone:  # it died in the instant since take(): nothing started
            started = False
        finally:  # reaped, its uid and cgroup given back, off the run's path
            pool.the_pool().done(ready, started=started)
    group = cgroups.for_run(caps.cgroup, uid=workspace.uid, memory=limits.memory,
                            tasks=limits.processes + 2) if caps.cgroup else None
    try:
        exit = yield from _run(argv, workspace, workspace.uid, caps, env, limits, stdin, cancel,
                               phase, inputs, output, group, python, binds,
                               feed if not stdin else None, None)
    finally:
        if group is not None:
            group.close()
    return exit


class _SandboxGone(Exception):
    """A pre-started sandbox could not take its go message (it had died)."""


def _run(argv, workspace, uid, caps, env, limits, stdin, cancel, phase, inputs, output, group,
         python, binds, feed, ready):
    stats_r, stats_w = os.pipe()
    # The run's own options, the same for a launcher started now and a pre-started one (whose
    # go message names its fds by index: stdin, stdout, stderr, stats, then these).
    fds = [stats_w] + [fd for _, fd, _ in inputs] + ([output[1]] if output is not None else [])
    ref = (lambda fd: str(fd)) if ready is None else (lambda fd: str(3 + fds.index(fd)))
    own = ["-d", str(limits.disk)] if workspace.workdir is None else ["-w", workspace.workdir]
    for name, fd, mode in inputs:
        own += ["-i", f"{ref(fd)}:{mode:o}:{name}"]
    if output is not None:
        own += ["-o", f"{ref(output[1])}:{output[0]}", "-M", str(limits.file_size)]
    own += ["-s", ref(stats_w), *rlimit_args(limits, own_uid=uid is not None,
                                             memory_cgroup=group is not None)]

    oom_before = _oom_kill_count()
    started = time.monotonic()
    try:
        if ready is not None:
            proc, pipes = ready.proc, _go(ready, own, env, argv, fds)
        else:
            proc = _launch(argv, workspace, uid, caps, env, group, python, binds, own, fds)
            pipes = (proc.stdin, proc.stdout, proc.stderr)
    except BaseException:
        os.close(stats_r)
        raise
    finally:
        os.close(stats_w)

    # A pre-started sandbox's run is over when its stats come (its teardown is the pool's).
    pump = _Pump(proc.pid, pipes, limits.output, cancel, end_fd=stats_r if ready else None)
    usage = _Usage(proc.pid, group)
    asker = _Asker(proc.pid, pump, feed, started) if feed is not None else None
    held = _Held(phase)
    stopped_for = None
    try:
        if asker is None:
            pump.feed_stdin(stdin)
        deadline = started + limits.wall_s
        next_check = started + usage.next_interval(limits.cpu_s)
        while not pump.finished():
            now = time.monotonic()
            if asker is not None and asker.waiting:
                # The user's time, not the program's: a deadline of its own.
                until = asker.wait_started + feed.timeout_s
                if now >= until:
                    stopped_for = "input"
                    break
            else:
                until = deadline + (asker.paused if asker is not None else 0.0)
                if now >= until:
                    stopped_for = "wall"
                    break
                if asker is not None and asker.looking:
                    until = min(until, asker.look_at)
            if now >= next_check:
                used = usage.sample()
                if used >= limits.cpu_s:
                    stopped_for = "cpu"
                    break
                next_check = now + usage.next_interval(limits.cpu_s - used)
            outputs = pump.step(max(0.0, min(until, next_check, held.until) - now))
            if asker is not None:
                outputs = asker.hold(outputs)
            held.add(outputs)
            if held.due(pump):
                yield from held.take(after_exit=pump.finished())
            if pump.over_cap:
                stopped_for = "output"
                break
            if cancel is not None and cancel.cancelled:
                stopped_for = "cancel"
                break
            if asker is not None:
                events = asker.look(time.monotonic())
                if events:
                    yield from held.take()  # what came before the prompt goes first
                for event in events:
                    yield event if isinstance(event, InputRequest) else Output(*event, phase)
        yield from held.take(after_exit=True)  # the rest comes at once, then the end
        if asker is not None and asker.held:  # the program's last partial line
            yield Output("stdout", asker.release(), phase, after_exit=True)
        if stopped_for:
            usage.sample()
            if group is not None:
                group.kill()
            _kill_run(proc, caps)
        for stream, text in pump.flush():
            yield Output(stream, text, phase, after_exit=True)
        if pump.over_cap:
            yield Output("stderr", truncation_marker(limits.output), phase, after_exit=True)
    finally:
        # Reached on every path, including GeneratorExit: nothing of the run may survive.
        handed_over = ready is not None and pump.exited and not stopped_for
        if not handed_over and proc.poll() is None:
            _kill_run(proc, caps)
        pump.close()
        waited = asker.waited(time.monotonic()) if asker is not None else 0.0
        wall_s = time.monotonic() - started - waited
        stats = _read_stats(stats_r)
        if handed_over and stats is None:  # it ended without a status: its launcher says why
            _kill_run(proc, caps)

    wait_status, out_state, alloc_failed = None, "none", False
    cpu_s, peak = usage.cpu_s, usage.peak
    if stats:
        wait_status, out_state, alloc_failed = stats[0], stats[3], stats[4]
        cpu_s, peak = max(cpu_s, stats[1]), max(peak, stats[2])
    own_oom = False
    if group is not None:  # the kernel's own figures for the whole run
        if group.counts_cpu:
            cpu_s = max(cpu_s, group.cpu_s())
        peak = group.peak_memory() or peak
        own_oom = group.oom_kills() > 0
    return ProcessExit(
        wait_status=wait_status, cpu_s=cpu_s, wall_s=wall_s, peak_memory=peak,
        stopped_for=stopped_for, oom_kills=_oom_kill_count() - oom_before,
        truncated=pump.over_cap, stderr_tail=bytes(pump.stderr_tail),
        launcher_code=(proc.returncode or 0) if stats else proc.returncode,
        processes=usage.processes, output=out_state,
        allocation_failed=alloc_failed, own_oom=own_oom, input_wait_s=waited,
        input_timeout_s=feed.timeout_s if feed is not None else 0.0,
    )


def _launch(argv, workspace, uid, caps, env, group, python, binds, own, fds):
    """Start a launcher that makes the run's sandbox and runs it."""
    cmd = launcher_command(caps.launcher_flags(python=python), uid, workspace.gid, group)
    cmd += [w for place, fd in binds for w in ("-R", f"{place}:{fd}")]
    return start_launcher(
        [*cmd, *own, "--", *argv], group, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=workspace.workdir or "/", env=env,
        pass_fds=(*fds, *caps.inherited_fds(), *(fd for _, fd in binds)))


def _go(ready: pool.Ready, own: list[str], env: dict, argv: list[str], fds: list[int]):
    """Start the run in a pre-started sandbox; → its (stdin, stdout, stderr) pipe ends."""
    ends = [os.pipe() for _ in range(3)]
    theirs = [ends[0][0], ends[1][1], ends[2][1]]
    try:
        ready.go([*own, *(w for k, v in env.items() for w in ("-e", f"{k}={v}")), "--", *argv],
                 [*theirs, *fds])
    except BaseException as e:
        for r, w in ends:
            os.close(r)
            os.close(w)
        if isinstance(e, (BrokenPipeError, ConnectionError)):
            raise _SandboxGone from e
        raise
    for fd in theirs:
        os.close(fd)
    return (open(ends[0][1], "wb", buffering=0), open(ends[1][0], "rb", buffering=0),
            open(ends[2][0], "rb", buffering=0))


class _Usage:
    """The run's CPU total and (without a cgroup) its summed memory, measured while it runs."""

    def __init__(self, launcher_pid: int, group: cgroups.RunCgroup | None):
        self.launcher_pid = launcher_pid
        self.group = group
        self.cpu_s = 0.0
        self.peak = 0
        self.processes = 1
        self.cores = max(1, len(os.sched_getaffinity(0)))

    def next_interval(self, cpu_left: float) -> float:
        interval = max(CHECK_MIN_S, cpu_left / self.cores)
        return interval if self.group else min(interval, SAMPLE_MAX_S)  # (the peak is sampled)

    def sample(self) -> float:
        if self.group is not None and self.group.counts_cpu:
            self.cpu_s = max(self.cpu_s, self.group.cpu_s())
            self.processes = max(self.processes, self.group.task_count() - 2)  # less L and A
            return self.cpu_s
        cpu, rss, count = _usage_of_tree(self.launcher_pid)
        self.cpu_s = max(self.cpu_s, cpu)
        self.peak = max(self.peak, rss)
        self.processes = max(self.processes, count)
        return self.cpu_s


class _Asker:
    """Interactive stdin: the program's stdin is fed from the StdinFeed; stdout's last partial
    line is held back (it may be the prompt); when the output has been quiet for a while and
    stdin is empty, /proc tells whether the program is blocked reading it, and if so one
    InputRequest goes out. The time until the answer comes is kept off the wall clock.
    Runs that never wait for input pay only for looks while they are quiet, spaced out up to
    PROBE_MAX_S."""

    def __init__(self, launcher_pid: int, pump: "_Pump", feed: StdinFeed, now: float):
        self.launcher_pid = launcher_pid
        self.pump = pump
        self.inode = os.fstat(pump.stdin_fd).st_ino
        pump.attach_feed(feed)
        self.held = ""  # stdout after its last newline, not yet delivered
        self.waiting = False  # an InputRequest is out, not answered yet
        self.wait_started = 0.0
        self.paused = 0.0  # seconds of answered waits
        self.quiet = PROBE_QUIET_S
        self.look_at = now + PROBE_QUIET_S

    @property
    def looking(self) -> bool:
        return not self.waiting and self.pump.stdin_fd >= 0

    def waited(self, now: float) -> float:
        return self.paused + (now - self.wait_started if self.waiting else 0.0)

    def hold(self, outputs: list) -> list:
        """`outputs` with stdout's trailing partial line kept back (and given back before any
        stderr, so the two streams keep their order)."""
        if not outputs:
            return outputs
        self._active(time.monotonic())
        out = []
        for stream, text in outputs:
            if stream == "stdout":
                text = self.held + text
                cut = text.rfind("\n") + 1
                self.held = text[cut:]
                text = text[:cut]
            elif self.held:
                out.append(("stdout", self.release()))
            if text:
                out.append((stream, text))
        return out

    def release(self) -> str:
        held, self.held = self.held, ""
        return held

    def look(self, now: float) -> list:
        """What to deliver now: output and an InputRequest (the program waits), the held partial
        line (it does not), or nothing (not time to look yet). Output items are (stream, text)."""
        if self.pump.took_input:  # an answer (or the end of input) came
            self.pump.took_input = False
            if self.waiting:
                self.waiting = False
                self.paused += now - self.wait_started
            self._active(now)
        if not self.looking or now < self.look_at:
            return []
        if self.pump.stdin_pending() == 0 and blocked_reading(self.launcher_pid, self.inode):
            self.waiting, self.wait_started = True, now
            # What it wrote before it blocked is in the pipes now, though perhaps not read yet
            # (it may have written its prompt just after our last select): that goes first.
            early = self.hold(self.pump.step(0))
            return [*early, InputRequest(self.release())]
        self.quiet = min(self.quiet * 2, PROBE_MAX_S)
        self.look_at = now + self.quiet
        return [("stdout", self.release())] if self.held else []

    def _active(self, now: float) -> None:
        self.quiet = PROBE_QUIET_S
        self.look_at = now + PROBE_QUIET_S


class _Held:
    """Output read but not yet yielded: for at most HOLD_S, and less than READ_SIZE of it."""

    def __init__(self, phase: str):
        self.phase = phase
        self.items: list[tuple[str, str]] = []
        self.size = 0
        self.until = float("inf")

    def add(self, outputs) -> None:
        if outputs and not self.items:
            self.until = time.monotonic() + HOLD_S
        for stream, text in outputs:
            if self.items and self.items[-1][0] == stream:
                self.items[-1] = (stream, self.items[-1][1] + text)
            else:
                self.items.append((stream, text))
            self.size += len(text)

    def due(self, pump: "_Pump") -> bool:
        return bool(self.items) and (pump.finished() or pump.over_cap or self.size >= READ_SIZE
                                     or time.monotonic() >= self.until)

    def take(self, after_exit: bool = False):
        for stream, text in self.items:
            yield Output(stream, text, self.phase, after_exit=after_exit)
        self.items, self.size, self.until = [], 0, float("inf")


class _Pump:
    """Moves bytes between the program's pipes and the caller, never blocking, with an exact
    cap on stdout+stderr together."""

    def __init__(self, pid: int, pipes: tuple, cap: int, cancel: CancelToken | None,
                 end_fd: int | None = None):
        """`pipes`: the program's stdin, stdout and stderr (files); the run is over when the
        launcher `pid` exits, or `end_fd` (not ours to close) becomes readable."""
        self.pipes = pipes
        self.remaining = cap
        self.over_cap = False
        self.stderr_tail = bytearray()
        self.sel = selectors.DefaultSelector()
        self.pidfd = os.pidfd_open(pid) if end_fd is None else -1
        self.end_fd = self.pidfd if end_fd is None else end_fd
        self.exited = False
        self.streams = {pipes[1].fileno(): "stdout", pipes[2].fileno(): "stderr"}
        self.decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for name in ("stdout", "stderr")
        }
        for fd in self.streams:
            self.sel.register(fd, selectors.EVENT_READ)
        self.sel.register(self.end_fd, selectors.EVENT_READ)
        if cancel is not None:
            self.sel.register(cancel.fileno(), selectors.EVENT_READ)
        self.stdin_fd = pipes[0].fileno()
        self.stdin_chunks: collections.deque[memoryview] = collections.deque()
        self.stdin_eof = False  # close stdin once the chunks are written
        self.writing = False  # stdin_fd is registered for EVENT_WRITE
        self.feed: StdinFeed | None = None
        self.took_input = False  # the feed gave something since the caller last looked

    def feed_stdin(self, data: bytes) -> None:
        """All of stdin at once, then end of file (EOF at once for no data)."""
        self.stdin_eof = True
        self._queue(data)

    def attach_feed(self, feed: StdinFeed) -> None:
        """stdin comes from `feed`, as it comes."""
        self.feed = feed
        self.sel.register(feed.fileno(), selectors.EVENT_READ)

    def stdin_pending(self) -> int:
        """Bytes sent to the program it has not read yet."""
        queued = sum(len(chunk) for chunk in self.stdin_chunks)
        if self.stdin_fd < 0:
            return queued
        in_pipe = struct.unpack("i", fcntl.ioctl(self.stdin_fd, termios.FIONREAD, b"\0" * 4))[0]
        return queued + in_pipe

    def _queue(self, data: bytes) -> None:
        if self.stdin_fd < 0:
            return
        if data:
            self.stdin_chunks.append(memoryview(data))
        if self.stdin_chunks and not self.writing:
            os.set_blocking(self.stdin_fd, False)
            self.sel.register(self.stdin_fd, selectors.EVENT_WRITE)
            self.writing = True
        elif not self.stdin_chunks and self.stdin_eof:
            self._close_stdin()

    def finished(self) -> bool:
        return self.exited and not self.streams

    def step(self, timeout: float):
        out = []
        for key, _ in self.sel.select(timeout):
            fd = key.fd
            if fd == self.end_fd:
                self.exited = True
                self.sel.unregister(fd)
            elif fd in self.streams:
                data = os.read(fd, READ_SIZE)
                if not data:
                    self._close_stream(fd)
                    continue
                data = self._rest_of_line(fd, data)
                text = self._accept(self.streams[fd], data)
                if text:
                    out.append((self.streams[fd], text))
                if self.over_cap:
                    break
            elif fd == self.stdin_fd:
                self._write_stdin()
            elif self.feed is not None and fd == self.feed.fileno():
                data, eof = self.feed.take()
                if data or eof:
                    self.took_input = True
                if eof:
                    self.stdin_eof = True
                    self.sel.unregister(fd)
                self._queue(data)
            # else: the cancel eventfd; the caller checks the token.
        return out

    def _rest_of_line(self, fd: int, data: bytes) -> bytes:
        """More of a partial line, if the program writes it within COALESCE_S."""
        deadline = time.monotonic() + COALESCE_S
        while not data.endswith(b"\n") and len(data) < READ_SIZE:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                break
            more = os.read(fd, READ_SIZE - len(data))
            if not more:
                break  # EOF: the next select reports it again
            data += more
        return data

    def _accept(self, stream: str, data: bytes) -> str:
        if len(data) > self.remaining:
            data = data[: self.remaining]
            self.over_cap = True
        self.remaining -= len(data)
        if stream == "stderr":
            self.stderr_tail += data
            del self.stderr_tail[:-STDERR_TAIL]
        return self.decoders[stream].decode(data)

    def _write_stdin(self) -> None:
        try:
            chunk = self.stdin_chunks[0]
            n = os.write(self.stdin_fd, chunk[:READ_SIZE])
            if n < len(chunk):
                self.stdin_chunks[0] = chunk[n:]
                return
            self.stdin_chunks.popleft()
        except BlockingIOError:
            return
        except BrokenPipeError:  # the program stopped reading: that is its business
            self.stdin_chunks.clear()
            self.stdin_eof = True
        if not self.stdin_chunks:
            self.sel.unregister(self.stdin_fd)
            self.writing = False
            if self.stdin_eof:
                self._close_stdin()

    def _close_stdin(self) -> None:
        if self.writing:
            self.sel.unregister(self.stdin_fd)
            self.writing = False
        self.stdin_chunks.clear()
        self.pipes[0].close()
        self.stdin_fd = -1

    def _close_stream(self, fd: int) -> None:
        self.sel.unregister(fd)
        del self.streams[fd]

    def flush(self):
        """Text still held by the decoders (a split or invalid sequence at the very end)."""
        for name, decoder in self.decoders.items():
            text = decoder.decode(b"", final=True)
            if text:
                yield name, text

    def close(self) -> None:
        self.sel.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
        for pipe in self.pipes:
            if pipe and not pipe.closed:
                pipe.close()


def _kill_run(proc: subprocess.Popen, caps: Capabilities) -> None:
    """SIGKILL every process of the run and reap the launcher."""
    try:
        launcher = psutil.Process(proc.pid)
        if caps.pid_namespace:
            # The launcher's only child is the run's pid-namespace init: when it dies the kernel
            # kills everything left in the namespace before the launcher can reap it.
            for init in launcher.children():
                os.kill(init.pid, signal.SIGKILL)
        else:
            # The launcher is a subreaper, so every escaped process is still below it.
            for _ in range(100):
                kids = launcher.children(recursive=True)
                if not kids:
                    break
                for kid in kids:
                    try:
                        os.kill(kid.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                psutil.wait_procs(kids, timeout=0.5)
    except psutil.NoSuchProcess:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:  # whatever stayed in the launcher's process group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _oom_kill_count() -> int:
    """The kernel's count of OOM kills (global and cgroup), to tell its SIGKILL from others."""
    try:
        with open("/proc/vmstat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    at = data.find(b"\noom_kill ")  # one search, not a loop over ~150 lines (twice per run)
    if at < 0:
        return 0
    return int(data[at + 10:data.index(b"\n", at + 1)])


def _usage_of_tree(pid: int) -> tuple[float, int, int]:
    """CPU seconds (including what reaped children used), summed resident memory and number of
    the processes below the launcher `pid`, less the run's init (a launcher process itself)."""
    cpu, rss, count = 0.0, 0, 0
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return cpu, rss, count
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                cpu += t.user + t.system + t.children_user + t.children_system
                if not p.name().startswith("dcodex-launch"):
                    rss += p.memory_info().rss
                    count += 1
        except psutil.Error:
            pass
    return cpu, rss, count


def _read_stats(fd: int) -> tuple[int, float, int, str, bool] | None:
    """The launcher's report: wait status, CPU seconds, peak RSS in bytes, what became of the
    output file, whether an allocation failed."""
    try:
        data = os.read(fd, 256)
    finally:
        os.close(fd)
    try:
        status, utime, stime, maxrss_kb, out, alloc = (int(x) for x in data.split())
    except ValueError:
        return None
    return status, (utime + stime) / 1e6, maxrss_kb * 1024, _OUTPUT_STATES.get(out, "refused"), bool(alloc)

