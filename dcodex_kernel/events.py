"""What the engine says back: a stream of `Output` (and `Phase`) events, then exactly one `Result`."""

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
    """Text a program (phase "run") or its compiler (phase "compile") wrote, as it wrote it
    (what it wrote within a few milliseconds comes as one event)."""

    stream: str  # "stdout" or "stderr"
    text: str
    phase: str = "run"
    # The last of a process's output, read once it had ended (or was being stopped): of a
    # single run, only the Result follows, so the server may send the two in one message
    # (server.py). A hint, not part of what was written: equality ignores it.
    after_exit: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class InputRequest:
    """The program is blocked reading stdin, which is empty (interactive runs only: see
    interactive.py). `prompt` is its last line of stdout so far without a newline ('a? '),
    held back from the Output events so a front door can show it next to the input box; it is
    part of the program's output all the same. Answer through the run's StdinFeed."""

    prompt: str = ""


@dataclass(frozen=True)
class Phase:
    """A step of the run begins: "compile" when a compiler starts (not for a cached build;
    `detail` says what it compiles, e.g. 'main.cpp (g++ -std=gnu++20 -O2 -Wall)'), then "run"
    when the program starts after that compile. Only for showing progress ("compiling… 1.2 s");
    a consumer that does not care skips it."""

    name: str  # "compile" or "run"
    detail: str = ""


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
class RunFigures:
    """What one run of a `--repeat` series took."""

    wall_s: float
    cpu_s: float
    peak_memory: int

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def spread(values) -> dict:
    """{'min', 'median', 'max'} of some numbers (the median of an even count: the mean of the
    middle two)."""
    ordered = sorted(values)
    n, mid = len(ordered), len(ordered) // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"min": ordered[0], "median": median, "max": ordered[-1]}


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
    cached: bool = False  # the build came from the build cache (this run compiled nothing)
    # A server replayed this Result from its result cache (DCodeX's `cache_hit`): nothing ran
    # for it; output and figures are those of the earlier run it keeps. `cached` is then False
    # (nothing was built either).
    replayed: bool = False
    isolation: tuple[str, ...] = ()  # sandbox layers that were active
    # A run with test cases: one CaseResult per case, in the cases' order. Its status is then
    # OK when every case is accepted; CANCELLED when it was interrupted; INTERNAL_ERROR when the
    # engine failed a case; otherwise RUNTIME_ERROR with the message "N of M cases failed" (no
    # new Status: the per-case verdicts say what failed). A compile error is one COMPILE_ERROR
    # Result with no cases. exit_code/signal are None; cpu_s is the cases' sum, peak_memory their
    # largest, wall_s the time from the first case's start to the last one's end.
    cases: tuple[CaseResult, ...] = ()
    # A repeated run (--repeat N, built once): one RunFigures per run that ran, in order. A run
    # that does not end ok stops the series: its status, message, exit_code and signal are the
    # Result's then (the message says which run). wall_s/cpu_s are the runs' medians and
    # peak_memory their largest; `timing()` has min/median/max of each.
    runs: tuple[RunFigures, ...] = ()
    # Filled only by `collect()`, for callers that want the whole output at the end.
    stdout: str = field(default="", repr=False)
    stderr: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def timing(self) -> dict | None:
        """The figures of a repeated run, as data: {'runs': N, 'wall_s': {'min', 'median',
        'max'}, 'cpu_s': {...}, 'peak_memory': {...}}; None for a single run."""
        if not self.runs:
            return None
        return {"runs": len(self.runs),
                **{name: spread([getattr(r, name) for r in self.runs])
                   for name in ("wall_s", "cpu_s", "peak_memory")}}

    def stats(self) -> str:
        """'12 ms wall, 3 ms cpu, 1.2 MiB peak, cached build'; for a repeated run
        '10 runs, wall 51 / 52 / 60 ms, cpu …, peak … (min / median / max), cached build';
        a replayed Result ends "…, replayed from the server's result cache" instead."""
        if self.runs:
            t = self.timing()
            ms = lambda f: " / ".join(_ms(f[k]) for k in ("min", "median", "max"))  # noqa: E731
            mib = " / ".join(f"{t['peak_memory'][k] / (1 << 20):.1f}" for k in ("min", "median", "max"))
            return (f"{t['runs']} runs, wall {ms(t['wall_s'])} ms, cpu {ms(t['cpu_s'])} ms, "
                    f"peak {mib} MiB (min / median / max)" + self._origin())
        stats = f"{self.wall_s * 1000:.0f} ms wall, {self.cpu_s * 1000:.0f} ms cpu"
        if self.peak_memory:
            stats += f", {self.peak_memory / (1 << 20):.1f} MiB peak"
        return stats + self._origin()

    def _origin(self) -> str:
        """Where the program (or the whole Result) came from, when not from a fresh build."""
        if self.replayed:
            return ", replayed from the server's result cache"
        return ", cached build" if self.cached else ""

    def summary(self) -> str:
        """The short line front doors print after a run."""
        head = "ok" if self.ok else f"{self.status.value}: {self.message}"
        return f"[dcodex] {head} ({self.stats()})"

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["status"] = self.status.value
        d["isolation"] = list(self.isolation)
        d["cases"] = [case.to_dict() for case in self.cases]
        d["runs"] = [run.to_dict() for run in self.runs]
        return d


def _ms(seconds: float) -> str:
    """Milliseconds, with a decimal below 10 ms (a hello world's 1.4 ms is not 1 ms)."""
    return f"{seconds * 1000:.1f}" if seconds < 0.01 else f"{seconds * 1000:.0f}"


Event = Union[Output, InputRequest, Phase, Result]


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
        elif isinstance(event, Result):
            result = event
    if result is None:  # the contract says this cannot happen; say so loudly if it does
        raise RuntimeError("event stream ended without a Result")
    return replace(result, stdout="".join(parts["stdout"]), stderr="".join(parts["stderr"]))
