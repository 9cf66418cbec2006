"""What the engine says back: a stream of `Output` events, then exactly one `Result`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable, Iterable, Union


class Status(str, Enum):
    OK = "ok"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"  # non-zero exit
    SIGNALED = "signaled"  # killed by a signal it raised (SIGSEGV, SIGABRT, ...)
    TIME_LIMIT = "time_limit"  # CPU time
    WALL_TIMEOUT = "wall_timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    CANCELLED = "cancelled"  # interrupt, or the client went away
    REJECTED = "rejected"  # the request itself is bad
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class Output:
    """Text a program (phase "run") or its compiler (phase "compile") wrote, as it wrote it."""

    stream: str  # "stdout" or "stderr"
    text: str
    phase: str = "run"


@dataclass(frozen=True)
class InputRequest:
    """The program is blocked reading stdin, which is empty (interactive runs only: see
    interactive.py). `prompt` is its last line of stdout so far without a newline ('a? '),
    held back from the Output events so a front door can show it next to the input box; it is
    part of the program's output all the same. Answer through the run's StdinFeed."""

    prompt: str = ""


ACCEPTED = "accepted"
WRONG_ANSWER = "wrong_answer"
CHECKER_ERROR = "checker_error"  # the checker itself failed (crashed, a limit, a bad answer)


@dataclass(frozen=True)
class CaseResult:
    """How one test case went. `verdict` is "accepted", "wrong_answer", "checker_error" (the
    checker crashed, hit a limit or answered nonsense), or the value of the run's own Status when
    it did not end ok ("time_limit", "runtime_error", "cancelled", …); `message` is '' when
    accepted by a comparison mode, the first difference for a wrong answer ("line 3: expected
    '5', got '6'") or the checker's comment, else the one-line reason."""

    name: str
    verdict: str
    message: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_memory: int = 0
    exit_code: int | None = None
    signal: int | None = None

    @property
    def accepted(self) -> bool:
        return self.verdict == ACCEPTED

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Result:
    status: Status
    message: str = ""  # one line for people; empty when ok
    exit_code: int | None = None
    signal: int | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0
    peak_memory: int = 0  # bytes (peak resident set of the program)
    truncated: bool = False  # the output cap was hit
    cached: bool = False  # the build came from the build cache
    isolation: tuple[str, ...] = ()  # sandbox layers that were active
    # A run with test cases: one CaseResult per case, in the cases' order. Its status is then
    # OK when every case is accepted; CANCELLED when it was interrupted; INTERNAL_ERROR when the
    # engine failed a case; otherwise RUNTIME_ERROR with the message "N of M cases failed" (no
    # new Status: the per-case verdicts say what failed). A compile error is one COMPILE_ERROR
    # Result with no cases. exit_code/signal are None; cpu_s is the cases' sum, peak_memory their
    # largest, wall_s the time from the first case's start to the last one's end.
    cases: tuple[CaseResult, ...] = ()
    # Filled only by `collect()`, for callers that want the whole output at the end.
    stdout: str = field(default="", repr=False)
    stderr: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def stats(self) -> str:
        """'12 ms wall, 3 ms cpu, 1.2 MiB peak, cached build'."""
        stats = f"{self.wall_s * 1000:.0f} ms wall, {self.cpu_s * 1000:.0f} ms cpu"
        if self.peak_memory:
            stats += f", {self.peak_memory / (1 << 20):.1f} MiB peak"
        if self.cached:
            stats += ", cached build"
        return stats

    def summary(self) -> str:
        """The short line front doors print after a run."""
        head = "ok" if self.ok else f"{self.status.value}: {self.message}"
        return f"[dcodex] {head} ({self.stats()})"

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["status"] = self.status.value
        d["isolation"] = list(self.isolation)
        d["cases"] = [case.to_dict() for case in self.cases]
        return d


Event = Union[Output, InputRequest, Result]


def collect(events: Iterable[Event], on_output: Callable[[Output], None] | None = None,
            on_input: Callable[[InputRequest], None] | None = None) -> Result:
    """Drain an event stream; return its Result with the run's stdout/stderr filled in (an
    InputRequest's prompt counts as stdout)."""
    parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
    result = None
    for event in events:
        if isinstance(event, Output):
            if on_output:
                on_output(event)
            if event.phase == "run":
                parts[event.stream].append(event.text)
        elif isinstance(event, InputRequest):
            if on_input:
                on_input(event)
            parts["stdout"].append(event.prompt)
        else:
            result = event
    if result is None:  # the contract says this cannot happen; say so loudly if it does
        raise RuntimeError("event stream ended without a Result")
    return replace(result, stdout="".join(parts["stdout"]), stderr="".join(parts["stderr"]))
