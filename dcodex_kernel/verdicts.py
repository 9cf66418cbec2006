"""Test cases and verdicts: loading input/expected pairs, and comparing a program's output with
the expected one. Pure (standard library only, no engine, no front door): the engine, every
front door and the server share it.

Cases on disk use the common judge layout: a directory holding `NAME.in` and `NAME.out` (or
`NAME.ans`) for each case, in natural order (`2` before `10`); other files are ignored.

Comparison modes (`parse_mode`):

- ``default``: lines compared after removing trailing whitespace from each, and blank lines at
  the end (so a missing final newline or `\\r\\n` line ends do not matter);
- ``exact``: byte for byte (as text);
- ``tokens``: the whitespace-separated words, whatever the whitespace between them;
- ``float:TOL`` (``float`` alone: TOL = 1e-6): tokens, where an expected number accepts any
  number within TOL absolutely or relatively (``|got - want| <= TOL`` or
  ``<= TOL * |want|``); other tokens must be equal.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass

# Bounds of what `load_cases` (and a Request) accepts: an expected output is compared in memory,
# and a program's output cannot be larger than the output limit (at most 1 GiB) anyway.
MAX_CASES = 1000
MAX_INPUT_BYTES = 64 << 20  # one case's input (its stdin)
MAX_EXPECTED_BYTES = 16 << 20  # one case's expected output
MAX_TOTAL_BYTES = 256 << 20  # all inputs and expected outputs together
DEFAULT_FLOAT_TOL = 1e-6

_SHOW = 40  # characters of a value shown in a detail


@dataclass(frozen=True)
class Case:
    name: str
    input: bytes
    expected: bytes

    def __post_init__(self):
        for attr in ("input", "expected"):
            value = getattr(self, attr)
            if isinstance(value, str):
                object.__setattr__(self, attr, value.encode())
            elif not isinstance(value, (bytes, bytearray, memoryview)):
                raise ValueError(f"case {self.name!r}: {attr} must be str or bytes, "
                                 f"got {type(value).__name__}")
            else:
                object.__setattr__(self, attr, bytes(value))


# ---------------------------------------------------------------- loading

def natural_key(name: str) -> tuple:
    """Sort key putting '2' before '10' ('case2' before 'case10'); ties broken by the name."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name


def load_cases(path: str | os.PathLike) -> list[Case]:
    """The cases of a judge-layout directory, in natural order. Any problem (not a directory, no
    cases, an `.in` without its `.out`/`.ans`, an unreadable, binary or too large file) is one
    ValueError whose message names the path and what is wrong."""
    path = os.fspath(path)
    try:
        entries = os.listdir(path)
    except NotADirectoryError:
        raise ValueError(f"cases: {path} is not a directory") from None
    except FileNotFoundError:
        raise ValueError(f"cases: no such directory: {path}") from None
    except OSError as e:
        raise ValueError(f"cases: cannot read {path}: {e.strerror}") from None
    return _cases_of(path, entries, lambda entry, cap, what: _read(os.path.join(path, entry), cap, what),
                     lambda entry: os.path.join(path, entry))


def cases_in_files(files, directory: str) -> list[Case] | None:
    """The cases of `directory` among a session workspace's (name, contents) files (`%%file
    cases/1.in` …), or None when no file is in that directory. Problems as `load_cases`'."""
    prefix = directory.strip("/") + "/"
    if prefix == "/":
        return None
    inside = {name[len(prefix):]: data for name, data in files
              if name.startswith(prefix) and "/" not in name[len(prefix):]}
    if not inside and not any(name.startswith(prefix) for name, _ in files):
        return None

    def read(entry, cap, what):
        data = inside[entry]
        if len(data) > cap:
            raise ValueError(f"cases: {prefix}{entry} ({what}) is larger than the maximum of {_mib(cap)}")
        return data

    return _cases_of(f"{directory} (session workspace)", list(inside), read,
                     lambda entry: prefix + entry)


def _cases_of(where: str, entries: list[str], read, label) -> list[Case]:
    """The cases among a directory's `entries`; `read(entry, cap, what)` gives one's bytes,
    `label(entry)` its name in messages."""
    files = {}
    for entry in entries:
        stem, ext = os.path.splitext(entry)
        if ext in (".in", ".out", ".ans") and stem:
            files.setdefault(stem, {})[ext] = entry
    stems = sorted(files, key=natural_key)
    problems = []
    for stem in stems:
        kinds = files[stem]
        if ".in" not in kinds:
            problems.append(f"{stem}{'.out' if '.out' in kinds else '.ans'} has no {stem}.in")
        elif ".out" not in kinds and ".ans" not in kinds:
            problems.append(f"{stem}.in has no {stem}.out or {stem}.ans")
        elif ".out" in kinds and ".ans" in kinds:
            problems.append(f"{stem} has both {stem}.out and {stem}.ans")
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"cases: {where}: {'; '.join(problems[:3])}{more}")
    if not stems:
        raise ValueError(f"cases: {where} holds no cases (expected NAME.in with NAME.out or NAME.ans)")
    if len(stems) > MAX_CASES:
        raise ValueError(f"cases: {where} holds {len(stems)} cases, more than the maximum of {MAX_CASES}")
    cases, total = [], 0
    for stem in stems:
        kinds = files[stem]
        answer = kinds.get(".out") or kinds[".ans"]
        data = read(kinds[".in"], MAX_INPUT_BYTES, "input")
        expected = read(answer, MAX_EXPECTED_BYTES, "expected output")
        check_expected(expected, label(answer))
        total += len(data) + len(expected)
        if total > MAX_TOTAL_BYTES:
            raise ValueError(f"cases: {where}: the cases are larger than {_mib(MAX_TOTAL_BYTES)} together")
        cases.append(Case(stem, data, expected))
    return cases


def check_expected(expected: bytes, what: str) -> None:
    """ValueError if `expected` cannot be an expected output: binary (a NUL byte), not UTF-8,
    or above MAX_EXPECTED_BYTES."""
    if len(expected) > MAX_EXPECTED_BYTES:
        raise ValueError(f"cases: {what} is larger than the maximum of {_mib(MAX_EXPECTED_BYTES)}")
    if b"\0" in expected:
        raise ValueError(f"cases: {what} is binary (it holds a NUL byte); expected output must be text")
    try:
        expected.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"cases: {what} is not UTF-8 text (byte {e.start}); expected output "
                         "must be text") from None


def _read(path: str, cap: int, what: str) -> bytes:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"cases: {path} is not a regular file")
        if st.st_size > cap:
            raise ValueError(f"cases: {path} ({what}) is larger than the maximum of {_mib(cap)}")
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise ValueError(f"cases: cannot read {path}: {e.strerror}") from None
    if len(data) > cap:  # grew since the stat
        raise ValueError(f"cases: {path} ({what}) is larger than the maximum of {_mib(cap)}")
    return data


def _mib(n: int) -> str:
    return f"{n >> 20} MiB"


# ---------------------------------------------------------------- comparing

@dataclass(frozen=True)
class Mode:
    kind: str  # "default", "exact", "tokens", "float"
    tol: float = 0.0

    def __str__(self) -> str:
        return f"float:{self.tol:g}" if self.kind == "float" else self.kind


MODES = ("default", "exact", "tokens", "float:TOL")


def parse_mode(text: str | Mode) -> Mode:
    """'default', 'exact', 'tokens', 'float', 'float:1e-6' → Mode; ValueError for anything else."""
    if isinstance(text, Mode):
        return text
    if not isinstance(text, str):
        raise ValueError(f"comparison mode must be a string, got {type(text).__name__}")
    key = text.strip().lower()
    if key in ("default", "exact", "tokens"):
        return Mode(key)
    kind, sep, tol = key.partition(":")
    if kind == "float":
        if not sep:
            return Mode("float", DEFAULT_FLOAT_TOL)
        try:
            value = float(tol)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"comparison float:TOL needs a tolerance that is a number >= 0, got {tol!r}")
        return Mode("float", value)
    raise ValueError(f"unknown comparison mode {text!r} (use {', '.join(MODES)})")


def compare(expected: bytes | str, actual: bytes | str, mode: str | Mode = "default") -> tuple[bool, str]:
    """(accepted, detail): detail is '' when accepted, else the first difference, e.g.
    "line 3: expected '5', got '6'" (values escaped and cut short)."""
    mode = parse_mode(mode)
    want = expected.decode("utf-8", "replace") if isinstance(expected, (bytes, bytearray)) else expected
    got = actual.decode("utf-8", "replace") if isinstance(actual, (bytes, bytearray)) else actual
    if mode.kind == "exact":
        if want == got:
            return True, ""
        return False, _first_line_difference(want.splitlines(keepends=True), got.splitlines(keepends=True))
    if mode.kind == "default":
        a, b = _normalized_lines(want), _normalized_lines(got)
        if a == b:
            return True, ""
        return False, _first_line_difference(a, b)
    return _compare_tokens(want, got, mode.tol if mode.kind == "float" else None)


def _normalized_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _first_line_difference(want: list[str], got: list[str]) -> str:
    for i, (a, b) in enumerate(zip(want, got)):
        if a != b:
            return f"line {i + 1}: expected {show(a)}, got {show(b)}"
    n = min(len(want), len(got))
    if len(want) > n:
        return f"line {n + 1}: expected {show(want[n])}, got end of output"
    return f"line {n + 1}: expected end of output, got {show(got[n])}"


def _tokens(text: str) -> list[tuple[int, str]]:
    """(line number, token) for every whitespace-separated token."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        out.extend((number, token) for token in line.split())
    return out


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _compare_tokens(want: str, got: str, tol: float | None) -> tuple[bool, str]:
    a, b = _tokens(want), _tokens(got)
    for (line, x), (_, y) in zip(a, b):
        if x == y:
            continue
        if tol is not None and _NUMBER.fullmatch(x) and _NUMBER.fullmatch(y):
            fx, fy = float(x), float(y)
            diff = abs(fx - fy)
            if diff <= tol or diff <= tol * abs(fx):
                continue
            return False, f"line {line}: expected {show(x)}, got {show(y)} (off by {diff:.3g} > {tol:g})"
        return False, f"line {line}: expected {show(x)}, got {show(y)}"
    if len(a) > len(b):
        return False, f"line {a[len(b)][0]}: expected {show(a[len(b)][1])}, got end of output"
    if len(b) > len(a):
        return False, f"line {b[len(a)][0]}: expected end of output, got {show(b[len(a)][1])}"
    return True, ""


def show(text: str, width: int = _SHOW) -> str:
    """A value as a detail shows it: quoted, escaped, cut to `width` characters with '…'."""
    if len(text) > width:
        cut = repr(text[:width])
        return cut[:-1] + "…" + cut[-1]
    return repr(text)


# ---------------------------------------------------------------- checkers

COMMENT_WIDTH = 100  # characters of a checker's comment kept


def comment(text: str, width: int = COMMENT_WIDTH) -> str:
    """A checker's stdout as a table shows it: one line (whitespace runs become one space),
    control characters escaped, cut to `width` characters with '…'."""
    line = " ".join(text.split())
    line = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in line)
    return line if len(line) <= width else line[:width - 1] + "…"


def checker_answer(value) -> tuple[bool, str]:
    """What a Python checker function returned → (accepted, comment): a bool, or a pair (bool,
    comment). ValueError (a checker error) for anything else."""
    if isinstance(value, bool):
        return value, ""
    if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], bool):
        return value[0], comment(str(value[1]))
    shown = show(repr(value))
    raise ValueError(f"the checker returned {shown}, not a bool or (bool, comment)")
