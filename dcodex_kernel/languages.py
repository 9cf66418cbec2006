"""Per language: the source file name, how to compile it, how to run it."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .request import Language

LINEBUF_SOURCE = Path(__file__).with_name("runtime") / "linebuf.c"
LINEBUF_FILE = "dcodex_linebuf.c"
PROGRAM = "main"  # the compiled program's file name in the run directory
CHECK_DIR = "dcodex_check"  # where a checker's run dir holds a case's input, expected, actual


@dataclass(frozen=True)
class Recipe:
    language: Language
    source_file: str
    compiler_env: str | None  # CC / CXX, or None for interpreted languages
    default_compiler: str | None
    default_flags: tuple[str, ...]
    display_name: str

    @property
    def compiles(self) -> bool:
        return self.compiler_env is not None

    def compiler(self) -> list[str]:
        """The compiler command (honours CC/CXX, which may carry arguments), first word resolved."""
        return _resolve_compiler(os.environ.get(self.compiler_env) or self.default_compiler,
                                 self.display_name)

    def compile_argv(self, cflags=(), ldflags=(), color=False, sources=()) -> list[str]:
        """`sources`: more files of the run dir (the session workspace's) to compile and link."""
        color_flag = "-fdiagnostics-color=always" if color else "-fdiagnostics-color=never"
        # ./ keeps a workspace name like `-x.c` from reading as an option.
        return [*self.compiler(), *self.default_flags, color_flag, *cflags,
                self.source_file, *(f"./{s}" for s in sources), LINEBUF_FILE, "-o", PROGRAM,
                *ldflags]

    def run_argv(self, args=(), *, python: str = "") -> list[str]:
        if self.compiles:
            return [f"./{PROGRAM}", *args]
        # -I: ignore PYTHON* variables, user site and the script's dir; -u: unbuffered; -B: no .pyc
        return [python, "-I", "-u", "-B", self.source_file, *args]


@functools.lru_cache(maxsize=None)
def _resolve_compiler(command: str, display_name: str) -> list[str]:
    words = shlex.split(command)
    exe = shutil.which(words[0]) if words else None
    if exe is None:
        raise FileNotFoundError(f"{display_name} compiler {command!r} not found")
    return [os.path.realpath(exe), *words[1:]]


@functools.lru_cache(maxsize=1)
def linebuf_source() -> bytes:
    return LINEBUF_SOURCE.read_bytes()


RECIPES = {
    Language.C: Recipe(Language.C, "main.c", "CC", "gcc", ("-std=c17", "-O2", "-Wall"), "C"),
    Language.CPP: Recipe(Language.CPP, "main.cpp", "CXX", "g++", ("-std=gnu++20", "-O2", "-Wall"), "C++"),
    Language.PYTHON: Recipe(Language.PYTHON, "main.py", None, None, (), "Python"),
}


def recipe(language: Language) -> Recipe:
    return RECIPES[language]


@functools.lru_cache(maxsize=None)
def compiler_banner(exe: str) -> str:
    """The first line of `exe --version`, e.g. 'gcc (Debian 12.2.0-14+deb12u1) 12.2.0'."""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    return out.splitlines()[0] if out else ""


def compiler_identity(exe: str) -> str:
    """What makes two compilers produce different programs: path, binary, version banner."""
    st = os.stat(exe)
    return f"{exe}\0{st.st_size}\0{st.st_mtime_ns}\0{compiler_banner(exe)}"


def python_interpreter(*, confined: bool = False, other_uid: bool = False) -> str:
    """The interpreter Python programs run with: $DCODEX_PYTHON if set, else the engine's own
    (its venv included, so packages installed next to the kernel import in a cell). Without a
    confined filesystem, a sandbox uid (`other_uid`) may not reach it (e.g. under a 0700 /root):
    then the system interpreter of the same version, else any python3."""
    return _python_interpreter(confined, other_uid, os.environ.get("DCODEX_PYTHON", ""))


@functools.lru_cache(maxsize=4)
def _python_interpreter(confined: bool, other_uid: bool, chosen: str) -> str:
    if chosen:
        exe = shutil.which(chosen)
        if exe is None:
            raise FileNotFoundError(f"DCODEX_PYTHON={chosen!r} is not an interpreter found on PATH")
        return os.path.abspath(exe)
    # Not realpath: a venv's python is a link, and the venv is found through the link's path.
    own = os.path.abspath(sys.executable)
    if confined or not other_uid or (_world_reachable(os.path.realpath(own)) and _world_reachable(sys.base_prefix)):
        return own
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
                      "/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and _world_reachable(os.path.realpath(candidate)):
            return os.path.realpath(candidate)
    raise FileNotFoundError(
        f"the sandbox user cannot reach {own} (check the permissions of its directories) "
        "and no system python3 was found")


def _world_reachable(path: str) -> bool:
    """True if 'other' users can traverse every directory down to `path` and read/exec it."""
    path = os.path.abspath(path)
    parts = Path(path).parents
    try:
        for parent in parts:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        return bool(os.stat(path).st_mode & (stat.S_IROTH | stat.S_IXOTH))
    except OSError:
        return False
