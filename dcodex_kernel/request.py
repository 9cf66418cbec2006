"""What a front door asks the engine to do: one `Request`, with its `Limits`."""

from __future__ import annotations

import math
import os
import re
from decimal import Decimal
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Callable, Union

from .verdicts import MAX_CASES, Case, parse_mode


class Language(str, Enum):
    C = "c"
    CPP = "cpp"
    PYTHON = "python"

    @classmethod
    def parse(cls, name: str) -> "Language":
        """Accept the names people type: c, cpp/c++/cxx, python/py (any case)."""
        key = name.strip().lower()
        for lang, aliases in _ALIASES.items():
            if key in aliases:
                return lang
        known = ", ".join(sorted({a for aliases in _ALIASES.values() for a in aliases}))
        raise ValueError(f"unknown language {name!r} (known: {known})")


    @classmethod
    def of_file(cls, path: str) -> "Language":
        """The language a program file's extension names (.c, .cpp/.cc/.cxx/.c++, .py)."""
        ext = os.path.splitext(path)[1].lower()
        if ext not in _EXTENSIONS:
            raise ValueError(f"cannot tell the language of {path!r} from its extension "
                             f"({', '.join(_EXTENSIONS)}); name it")
        return _EXTENSIONS[ext]


_EXTENSIONS = {".c": Language.C, ".cpp": Language.CPP, ".cc": Language.CPP, ".cxx": Language.CPP,
               ".c++": Language.CPP, ".py": Language.PYTHON}

_ALIASES = {
    Language.C: {"c"},
    Language.CPP: {"cpp", "c++", "cxx", "cc"},
    Language.PYTHON: {"python", "py", "python3"},
}

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """'256M', '2G', '512k', '1.5GiB', '4096' → bytes (binary units). Exact for any length of
    digits: whether the size is too large for a limit is `Limits`' to say."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
        if not m:
            raise ValueError(f"invalid size {text!r} (use e.g. 256M, 2G, 65536)")
        value = int(Decimal(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return value


def parse_seconds(text: str | float) -> float:
    """'10', '2.5', '2.5s', '500ms' → seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?\s*", str(text), re.IGNORECASE)
        if not m:
            raise ValueError(f"invalid duration {text!r} (use e.g. 10, 2.5s, 500ms)")
        value = float(m.group(1)) / (1000 if (m.group(2) or "").lower() == "ms" else 1)
    if math.isnan(value) or value <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    if math.isinf(value):
        raise ValueError(f"duration {text!r} is too large")
    return value


def format_size(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Limits:
    """Resource limits for one step (compile or run) of a program."""

    cpu_s: float = 10.0  # CPU seconds (RLIMIT_CPU, rounded up to whole seconds)
    wall_s: float = 10.0  # wall-clock seconds, enforced by the supervisor
    memory: int = 512 << 20  # address space, bytes
    output: int = 1 << 20  # stdout + stderr together, bytes
    processes: int = 64  # processes/threads of the run's user
    file_size: int = 64 << 20  # largest file the program may write, bytes
    open_files: int = 256
    # Bytes of the run's writable places together (its directory, /tmp, /dev/shm: one
    # size-bounded tmpfs where the sandbox has a mount namespace); inodes scale with it.
    disk: int = 64 << 20

    def __post_init__(self):
        for f in fields(self):
            self.check(f.name, getattr(self, f.name))

    # The largest value of each limit: what the engine can honour everywhere (a selector
    # timeout, an rlimit an ordinary user may set, a tmpfs size). Every front door's values end
    # up here: a Limits above these cannot be made.
    MAX = {
        "wall_s": 3600.0,  # 1 h
        "cpu_s": 3600.0,  # 1 h
        "memory": 64 << 30,  # 64 GiB of address space
        "output": 1 << 30,  # 1 GiB
        "processes": 4096,
        "file_size": 16 << 30,
        "open_files": 4096,  # a common hard RLIMIT_NOFILE, which an ordinary user cannot raise
        "disk": 16 << 30,
    }
    # The smallest, where the engine cannot go lower: memory is set in whole pages (less than one
    # left the sandbox nothing to start in, an internal error).
    # A disk below 1 MiB cannot hold even a program's own files; 4 open files: stdin, stdout,
    # stderr and the one the program opens.
    MIN = {"memory": 4096, "disk": 1 << 20, "open_files": 4}
    # What a person calls each limit (the option or setting that sets it), for messages.
    LABELS = {"cpu_s": "cpu time", "wall_s": "timeout", "memory": "memory",
              "output": "output limit", "processes": "processes", "file_size": "file size",
              "open_files": "open files", "disk": "disk"}
    _SECONDS = ("cpu_s", "wall_s")

    @classmethod
    def check(cls, name: str, value):
        """`value` if it is a valid `name` limit, else ValueError with a message fit to show."""
        label = cls.LABELS.get(name, name)
        seconds = name in cls._SECONDS
        if isinstance(value, bool) or not isinstance(value, (int, float) if seconds else int):
            kind = "a number of seconds" if seconds else "a whole number"
            raise ValueError(f"{label} must be {kind}, got {value!r}")
        if not value > 0:  # NaN too
            raise ValueError(f"{label} must be positive, got {value!r}")
        bottom = cls.MIN.get(name)
        if bottom is not None and value < bottom:
            raise ValueError(f"{label} of {cls.show(name, value)} is below the minimum of "
                             f"{cls.show(name, bottom)}")
        top = cls.MAX.get(name)
        if top is not None and value > top:
            try:
                shown = f" of {cls.show(name, value)}"
            except (OverflowError, ValueError):  # too many digits to print
                shown = ""
            raise ValueError(f"{label}{shown} is above the maximum of {cls.show(name, top)}")
        return value

    @classmethod
    def show(cls, name: str, value) -> str:
        """A limit's value as a person reads it: '3600 s', '64 GiB', '4096'."""
        if name in cls._SECONDS:
            value = float(value)
            return f"{value:.0f} s" if value.is_integer() and value < 1e15 else f"{value:g} s"
        if name in ("processes", "open_files"):
            return str(value)
        return format_size(value)

    @classmethod
    def maxima(cls) -> str:
        """'wall 3600 s, cpu 3600 s, memory 64 GiB, …': the maxima, for help texts."""
        short = {"wall_s": "wall", "cpu_s": "cpu", "output": "output"}  # as describe() says
        return ", ".join(f"{short.get(name, cls.LABELS[name])} {cls.show(name, top)}"
                         for name, top in cls.MAX.items())

    # Environment variables a kernel (or any front door) reads its defaults from.
    ENV = {
        "DCODEX_TIMEOUT": ("wall_s", parse_seconds),
        "DCODEX_CPU_TIME": ("cpu_s", parse_seconds),
        "DCODEX_MEMORY": ("memory", parse_size),
        "DCODEX_OUTPUT_LIMIT": ("output", parse_size),
        "DCODEX_MAX_PROCESSES": ("processes", int),
    }

    @classmethod
    def from_env(cls, environ=None, base: "Limits | None" = None) -> "Limits":
        """Defaults overridden by DCODEX_* variables; a bad value raises ValueError naming it."""
        environ = os.environ if environ is None else environ
        changes = {}
        for var, (name, parse) in cls.ENV.items():
            if environ.get(var):
                try:
                    changes[name] = cls.check(name, parse(environ[var]))
                except ValueError as e:
                    raise ValueError(f"{var}: {e}") from None
        return replace(base or cls(), **changes)

    def describe(self) -> str:
        return (
            f"wall {self.wall_s:g} s, cpu {self.cpu_s:g} s, memory {format_size(self.memory)}, "
            f"output {format_size(self.output)}, processes {self.processes}, "
            f"file size {format_size(self.file_size)}, open files {self.open_files}, "
            f"disk {format_size(self.disk)}"
        )


MAX_CHECKER_BYTES = 1 << 20  # a checker's source, as a program's


@dataclass(frozen=True)
class Checker:
    """A checker program for test cases (`--checker FILE`): built once like the program, then run
    in the sandbox after every case whose run ended ok, with the paths of the case's input, its
    expected output and the program's actual output as argv[1..3]. Exit 0: accepted; exit 1:
    wrong answer; anything else (another code, a signal, a limit): `checker_error`. Its stdout
    is the case's comment. `name` is the file it came from, for messages."""

    language: Language
    code: str
    name: str = "checker"

    def __post_init__(self):
        if not isinstance(self.language, Language):
            object.__setattr__(self, "language", Language.parse(str(self.language)))
        if not isinstance(self.code, str):
            raise ValueError(f"checker {self.name}: the source must be text")
        if len(self.code.encode("utf-8", "surrogatepass")) > MAX_CHECKER_BYTES:
            raise ValueError(f"checker {self.name}: the source is larger than "
                             f"{MAX_CHECKER_BYTES // 1024} KiB")
        if "\0" in self.code:
            raise ValueError(f"checker {self.name}: the source contains a NUL byte")


# What a Python function used as a checker (the magics, this process only) looks like:
# (input, expected, actual) -> bool, or (bool, comment).
CheckerFunction = Callable[[str, str, str], object]


# Compilers are trusted more than programs, but `#include "/dev/urandom"` and template bombs are
# hostile input too: bounded, just more loosely.
COMPILE_LIMITS = Limits(cpu_s=30.0, wall_s=60.0, memory=2 << 30, output=1 << 20, processes=64,
                        disk=512 << 20)


MAX_REPEAT = 1000  # runs of one --repeat series


@dataclass(frozen=True)
class Request:
    """One program to build and run. Every front door produces exactly this."""

    language: Language
    code: str
    stdin: bytes = b""
    limits: Limits = field(default_factory=Limits)
    compile_limits: Limits = COMPILE_LIMITS
    cflags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    cache: bool = True  # use the build cache (never changes what runs, only whether it recompiles)
    color: bool = False  # ask the compiler for coloured diagnostics
    # Test cases: when given, the program is built once and run once per case, with the case's
    # input as stdin (so `stdin` must be empty), and its stdout compared with the case's expected
    # output by `compare` (a mode of `verdicts.parse_mode`: default, exact, tokens, float:TOL).
    cases: tuple[Case, ...] = ()
    compare: str = "default"
    # With cases, a checker decides each case instead of `compare`: a program (`Checker`, run
    # in the sandbox; it travels to a server) or a Python function (LocalBackend only).
    checker: Union[Checker, CheckerFunction, None] = None
    show_output: bool = False  # with cases: stream each case's output, in order, under a header
    # The session workspace (workspace.py): sorted (name, contents) pairs that the compile step
    # and every run get a copy of, and which of them are extra C/C++ sources to compile and link.
    files: tuple[tuple[str, bytes], ...] = ()
    sources: tuple[str, ...] = ()
    # Run the built program this many times, each run a fresh sandbox with these limits and
    # this stdin; the first run's output streams, the others' is not shown (see Result.runs).
    repeat: int = 1

    def __post_init__(self):
        if not isinstance(self.language, Language):
            object.__setattr__(self, "language", Language.parse(str(self.language)))
        if isinstance(self.stdin, str):
            object.__setattr__(self, "stdin", self.stdin.encode())
        for name in ("cflags", "ldflags", "args"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.cases or self.compare != "default" or self.checker is not None or self.show_output:
            self._check_cases()
        if self.files or self.sources:
            self._check_files()
        if self.repeat != 1:
            self._check_repeat()

    def _check_repeat(self):
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int):
            raise ValueError(f"repeat must be a whole number, got {self.repeat!r}")
        if not 1 <= self.repeat <= MAX_REPEAT:
            raise ValueError(f"repeat must be between 1 and {MAX_REPEAT}, got {self.repeat}")
        if self.cases:
            raise ValueError("repeat and cases cannot be used together")

    def _check_files(self):
        from .workspace import SOURCE_EXTENSIONS, check_files

        object.__setattr__(self, "files", check_files(self.files))
        object.__setattr__(self, "sources", tuple(self.sources))
        names = {name for name, _ in self.files}
        if self.sources and self.language is Language.PYTHON:
            raise ValueError("--sources is for C and C++ programs (Python reads its files itself)")
        for source in self.sources:
            if source not in names:
                raise ValueError(f"--sources: {source!r} is not a file of the session workspace "
                                 "(write it first with %%file)")
            if not source.lower().endswith(SOURCE_EXTENSIONS):
                raise ValueError(f"--sources: {source!r} is not a C/C++ source "
                                 f"({', '.join(SOURCE_EXTENSIONS)})")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError("--sources names a file twice")

    def _check_cases(self):
        cases = tuple(self.cases)
        object.__setattr__(self, "cases", cases)
        object.__setattr__(self, "compare", str(parse_mode(self.compare)))
        for case in cases:
            if not isinstance(case, Case):
                raise ValueError(f"cases must be verdicts.Case, got {type(case).__name__}")
        if len(cases) > MAX_CASES:
            raise ValueError(f"{len(cases)} cases is more than the maximum of {MAX_CASES}")
        if cases and self.stdin:
            raise ValueError("stdin and cases cannot be used together (each case gives its own stdin)")
        if self.checker is not None:
            if not cases:
                raise ValueError("--checker needs --cases (it judges each case's output)")
            if not isinstance(self.checker, Checker) and not callable(self.checker):
                raise ValueError(f"a checker must be a Checker or a callable, got "
                                 f"{type(self.checker).__name__}")
            if self.compare != "default":
                raise ValueError("--checker and --compare cannot be used together (the checker "
                                 "does the comparing)")
        if self.show_output and not cases:
            raise ValueError("--show-output needs --cases (without cases the output is shown anyway)")
