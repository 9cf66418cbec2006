"""Request and Events <-> the wire messages of dcodex.proto. The messages are only an encoding:
the meaning stays with `Request`, `Output` and `Result`. (Imports protobuf, not grpc.)"""

from __future__ import annotations

import re
import signal

from ..events import CaseResult, Event, InputRequest, Output, Phase, Result, RunFigures, Status
from ..request import Checker, Limits, Request
from ..verdicts import Case
from ..workspace import digest as workspace_digest
from . import dcodex_pb2 as pb

STATUS_TO_PB = {status: pb.Status.Value(status.name) for status in Status}
STATUS_FROM_PB = {number: status for status, number in STATUS_TO_PB.items()}
PHASE_TO_PB = {"run": pb.RUN, "compile": pb.COMPILE}
PHASE_FROM_PB = {pb.RUN: "run", pb.COMPILE: "compile", pb.PHASE_UNSPECIFIED: "run"}

# Limits field -> its field in the wire `Limits` message.
LIMIT_FIELDS = {"cpu_s": "cpu_time_s", "wall_s": "wall_time_s", "memory": "memory_bytes",
                "output": "output_bytes", "processes": "processes",
                "file_size": "file_size_bytes", "open_files": "open_files", "disk": "disk_bytes"}


def limits_to_pb(limits: Limits) -> pb.Limits:
    return pb.Limits(**{wire: getattr(limits, name) for name, wire in LIMIT_FIELDS.items()})


def request_to_pb(request: Request, *, strict: bool = False, session: str = "",
                  upload: dict | None = None, full: bool = True) -> pb.CodeRequest:
    """The wire request. With `session`, the workspace files go to that session on the server:
    `upload` are those to send (default: all, then `full`), and the digest of all of them says
    what the run must see (see sessions.py)."""
    message = pb.CodeRequest(
        language=request.language.value, code=request.code,
        limits=limits_to_pb(request.limits), cflags=request.cflags, ldflags=request.ldflags,
        args=request.args, cache=request.cache, color=request.color, strict=strict,
        cases=[pb.TestCase(name=c.name, input=c.input, expected=c.expected) for c in request.cases],
        compare=request.compare, files=dict(request.files if upload is None else upload),
        sources=request.sources, show_output=request.show_output,
        repeat=request.repeat if request.repeat > 1 else 0, output_in_result=True)
    if isinstance(request.checker, Checker):
        message.checker.CopyFrom(pb.CheckerProgram(language=request.checker.language.value,
                                                   code=request.checker.code, name=request.checker.name))
    elif request.checker is not None:
        raise ValueError("a Python function as the checker runs only on this machine; through "
                         "a server give --checker a C, C++ or Python file")
    if session:
        message.session = session
        message.workspace_full = full if upload is not None else True
        message.workspace_digest = workspace_digest(request.files)
    try:
        message.stdin_data = request.stdin.decode("utf-8")
    except UnicodeDecodeError:
        message.stdin_bytes = request.stdin
    return message


def text(value: str) -> str:
    """`value` as valid UTF-8 (protobuf refuses lone surrogates)."""
    return value.encode("utf-8", "replace").decode("utf-8")


def output_to_pb(event: Output) -> pb.ExecutionLog:
    log = pb.ExecutionLog(phase=PHASE_TO_PB.get(event.phase, pb.RUN))
    if event.stream == "stdout":
        log.stdout_chunk = text(event.text)
    else:
        log.stderr_chunk = text(event.text)
    return log


def input_to_pb(event: InputRequest) -> pb.ExecutionLog:
    return pb.ExecutionLog(phase=pb.RUN, input_wanted=pb.InputWanted(prompt=text(event.prompt)))


def phase_to_pb(event: Phase) -> pb.ExecutionLog:
    return pb.ExecutionLog(phase=PHASE_TO_PB.get(event.name, pb.RUN), phase_start=True,
                           phase_detail=text(event.detail))


def dcodex_note(result: Result) -> str:
    """What a DCodeX server tells a failure as on stderr, for clients that know only that."""
    lines = []
    if result.status is Status.WALL_TIMEOUT:
        lines.append("ERROR: Wall-clock timeout exceeded")
    elif result.signal:
        lines.append(f"ERROR: Process killed by signal: {result.signal}")
    elif result.exit_code:
        lines.append(f"ERROR: Process exited with non-zero status: {result.exit_code}")
    if result.status not in (Status.OK, Status.WALL_TIMEOUT, Status.SIGNALED, Status.RUNTIME_ERROR):
        what = "Compilation failed: " if result.status is Status.COMPILE_ERROR else ""
        lines.append(f"ERROR: {what}{result.message or result.status.value}")
    return "".join(f"{line}\n" for line in lines)


def result_to_pb(result: Result, *, elapsed_s: float = 0.0) -> pb.ExecutionLog:
    """The last message of a run: DCodeX's statistics and notes, and our Result fields."""
    wall_ms = result.wall_s * 1000 if result.wall_s > 0 else elapsed_s * 1000
    log = pb.ExecutionLog(
        status=STATUS_TO_PB[result.status], message=text(result.message),
        signal=result.signal or 0, cpu_time_s=result.cpu_s, wall_time_s=result.wall_s,
        peak_memory_bytes=result.peak_memory, execution_time_ms=max(wall_ms, 0.001),
        wall_clock_timeout=result.status is Status.WALL_TIMEOUT,
        output_truncated=result.truncated, build_cached=result.cached, cache_hit=result.replayed,
        isolation=result.isolation, phase=pb.NOTE, stderr_chunk=dcodex_note(result))
    if result.exit_code is not None:
        log.exit_code = result.exit_code
    for run in result.runs:
        log.runs.add(wall_time_s=run.wall_s, cpu_time_s=run.cpu_s, peak_memory_bytes=run.peak_memory)
    for case in result.cases:
        wire = log.cases.add(name=text(case.name), verdict=case.verdict, message=text(case.message),
                             wall_time_s=case.wall_s, cpu_time_s=case.cpu_s,
                             peak_memory_bytes=case.peak_memory, signal=case.signal or 0)
        if case.exit_code is not None:
            wire.exit_code = case.exit_code
    return log


def cases_from_pb(message: pb.CodeRequest) -> tuple[Case, ...]:
    return tuple(Case(c.name, c.input, c.expected) for c in message.cases)


def checker_from_pb(message: pb.CodeRequest) -> Checker | None:
    """The request's checker program, or None; ValueError for a bad one."""
    if not message.HasField("checker"):
        return None
    wire = message.checker
    return Checker(wire.language, wire.code, name=wire.name or "checker")


def _case_from_pb(case: pb.CaseResult) -> CaseResult:
    return CaseResult(case.name, case.verdict, case.message, wall_s=case.wall_time_s,
                      cpu_s=case.cpu_time_s, peak_memory=case.peak_memory_bytes,
                      exit_code=case.exit_code if case.HasField("exit_code") else None,
                      signal=case.signal or None)


def events_from_pb(log: pb.ExecutionLog) -> list[Event]:
    """The events one message carries: output chunks, or (the last message) the Result after
    the run's closing stdout, if the server sent it there (`output_in_result`). The last
    message's stderr text is the server's note for DCodeX clients, not program output."""
    if log.status != pb.STATUS_UNSPECIFIED:
        closing = [Output("stdout", log.stdout_chunk)] if log.stdout_chunk else []
        return [*closing, Result(
            STATUS_FROM_PB.get(log.status, Status.INTERNAL_ERROR), log.message,
            exit_code=log.exit_code if log.HasField("exit_code") else None,
            signal=log.signal or None, cpu_s=log.cpu_time_s, wall_s=log.wall_time_s,
            peak_memory=log.peak_memory_bytes, truncated=log.output_truncated,
            # A replay built nothing (a server before `replayed` kept the first run's flag).
            cached=log.build_cached and not log.cache_hit, replayed=log.cache_hit,
            isolation=tuple(log.isolation),
            cases=tuple(_case_from_pb(case) for case in log.cases),
            runs=tuple(RunFigures(r.wall_time_s, r.cpu_time_s, r.peak_memory_bytes) for r in log.runs))]
    if log.phase == pb.NOTE:
        return []
    if log.HasField("input_wanted"):
        return [InputRequest(log.input_wanted.prompt)]
    if log.phase_start:
        return [Phase(PHASE_FROM_PB.get(log.phase, "run"), log.phase_detail)]
    phase = PHASE_FROM_PB.get(log.phase, "run")
    events = []
    if log.stdout_chunk:
        events.append(Output("stdout", log.stdout_chunk, phase))
    if log.stderr_chunk:
        events.append(Output("stderr", log.stderr_chunk, phase))
    return events


_KILLED = re.compile(r"ERROR: Process killed by signal: (\d+)")
_EXITED = re.compile(r"ERROR: Process exited with non-zero status: (\d+)")


def dcodex_result(last: pb.ExecutionLog, stderr: str) -> Result:
    """The Result of a run on a server that sends no status (DCodeX itself), read from its
    conventions: the last message's flags and statistics, and its ERROR lines on stderr."""
    stats = dict(wall_s=last.execution_time_ms / 1000, peak_memory=last.peak_memory_bytes,
                 truncated=last.output_truncated, replayed=last.cache_hit)
    killed, exited = _KILLED.search(stderr), _EXITED.search(stderr)
    if last.wall_clock_timeout:
        return Result(Status.WALL_TIMEOUT, "Wall-clock limit exceeded",
                      signal=int(killed.group(1)) if killed else None, **stats)
    if last.output_truncated:
        return Result(Status.OUTPUT_LIMIT, "Output limit reached; the program was stopped", **stats)
    if killed:
        number = int(killed.group(1))
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return Result(Status.SIGNALED, f"Killed by signal {name} ({signal.strsignal(number) or ''})",
                      signal=number, **stats)
    if exited:
        code = int(exited.group(1))
        return Result(Status.RUNTIME_ERROR, f"Exited with status {code}", exit_code=code, **stats)
    return Result(Status.OK, exit_code=0, **stats)
