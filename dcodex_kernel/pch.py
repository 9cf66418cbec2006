"""Precompiled C++ headers: `#include <bits/stdc++.h>` compiled once per compiler and flags.

A cold compile of a program starting with `<bits/stdc++.h>` spends ~3.5 s of its ~4 s parsing
the header; with a precompiled one it takes under a second. What must not change is the
program's meaning and what the compiler says about it:

- GCC itself decides whether a `.gch` may be used (same compiler, same options, no macro defined
  before the include that the header looks at, the include being the first thing) and silently
  reads the real header otherwise. A store entry is keyed by the compiler's identity and every
  flag, so different `-std=` never share one.
- The one visible difference is in diagnostics located inside the header (their "In file
  included from" chain ends at the precompiling wrapper, not at the program). So a compile with a
  precompiled header is kept only if everything the compiler said is located in the program's
  own files; otherwise the engine compiles again without it and shows that (see LocalBackend).

An entry is a directory (mode 0755, shown read-only at PCH_PLACE to the compile step, passed
to the sandbox as an fd) holding `bits/stdc++.h.gch`, `iostream.gch`, ... Each file is built in
the sandbox the first time a program needs it (in the background: that program compiles as
before), written to an unnamed file and linked into place, so concurrent engines never see a
partial one. Directories not used for a while are removed beyond MAX_ENTRIES.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

from .build_cache import cache_key
from .paths import cache_dir
from .request import COMPILE_LIMITS

log = logging.getLogger(__name__)

# The headers worth precompiling: what most C++ exercise programs start with.
HEADERS = ("bits/stdc++.h", "iostream")
PCH_PLACE = "/pch"  # where a compile step sees its entry (an -I dir holding only .gch files)
MAX_ENTRIES = 4  # compiler + flag combinations kept (bits/stdc++.h.gch is ~120 MB each)
# Building one is a bigger compile than a program's: the .gch is the output file.
BUILD_LIMITS = replace(COMPILE_LIMITS, cpu_s=120.0, wall_s=300.0, file_size=512 << 20,
                       disk=768 << 20)

# Flags a precompiled header is built for by itself: the ones people choose a standard, an
# optimisation level and warnings with. Anything else (-D, -I, -f..., -wrapper) compiles as
# before: each new combination would cost a ~8 s build and ~120 MB, which a server's clients
# must not be able to ask for at will.
_ORDINARY_FLAG = re.compile(r"^(-std=[\w+]+|-O[0-3sgz]?|-g[0-3]?|-W[\w=+-]*|-pedantic(-errors)?)$")
_FIRST_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*[<"]([^>"\n]+)[>"]', re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[mK]")
_EXCERPT = re.compile(r"^ *(\d+ )? *\|")  # gcc's source excerpt lines: "    5 |   int x;"


def wanted_header(source: str) -> str | None:
    """The header a program includes first, if it is one we precompile (GCC uses a .gch only
    for the first include; anything before it that is not a directive makes GCC ignore it)."""
    match = _FIRST_INCLUDE.search(source)
    return match.group(1) if match and match.group(1) in HEADERS else None


def ordinary_flags(flags) -> bool:
    return all(_ORDINARY_FLAG.match(flag) for flag in flags)


def only_own_diagnostics(stderr: str, own_files: tuple[str, ...]) -> bool:
    """True if every line the compiler printed is about the program's own files (a location in
    one of them, or a source excerpt): those read the same with or without a precompiled header."""
    for line in _ANSI.sub("", stderr).splitlines():
        if _EXCERPT.match(line):
            continue
        if not any(line.startswith(f"{name}:") for name in own_files):
            return False
    return True


class PchStore:
    def __init__(self, root: Path | None = None, enabled: bool | None = None):
        self.root = Path(root) if root else cache_dir() / "pch"  # beside the build cache
        if enabled is None:
            enabled = os.environ.get("DCODEX_PCH", "1").strip().lower() not in ("0", "no", "off", "false")
        self.enabled = enabled
        self._lock = threading.Lock()
        self._building: set[tuple[str, str]] = set()
        self._failed: set[tuple[str, str]] = set()  # (entry, header) that would not build here

    def entry_key(self, compiler_id: str, flags: list[str]) -> str:
        return cache_key("pch", compiler_id, "\0".join(flags))[:32]

    def open_entry(self, key: str, header: str) -> int | None:
        """An O_RDONLY fd of the entry directory if it holds `header`'s .gch, else None."""
        entry = self.root / key
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            os.stat(f"{header}.gch", dir_fd=fd, follow_symlinks=False)
            os.utime(fd)  # recently used: kept by the eviction
        except FileNotFoundError:
            os.close(fd)
            return None
        return fd

    def build_soon(self, key: str, header: str, build) -> None:
        """Build `header` for entry `key` in a background thread unless it is being built or
        failed before. `build(header_source_fd, gch_fd)` runs the compiler in the sandbox and
        returns True if it produced the .gch."""
        if not self.enabled:
            return
        with self._lock:  # one build at a time: the next program asks again
            if self._building or (key, header) in self._failed:
                return
            self._building.add((key, header))
        threading.Thread(target=self._build, args=(key, header, build), daemon=True,
                         name="dcodex-pch").start()

    def _build(self, key: str, header: str, build) -> None:
        ok = False
        try:
            ok = self.build_now(key, header, build)
        except Exception:
            log.exception("precompiling %s failed", header)
        finally:
            with self._lock:
                self._building.discard((key, header))
                if not ok:
                    self._failed.add((key, header))

    def build_now(self, key: str, header: str, build) -> bool:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        entry = self.root / key
        entry.mkdir(mode=0o755, exist_ok=True)
        os.chmod(entry, 0o755)  # the compile step's uid reads it (root mode)
        target = entry / f"{header}.gch"
        target.parent.mkdir(mode=0o755, exist_ok=True)
        with open(entry / ".lock", "a") as lock:  # one builder per entry across engines
            fcntl.flock(lock, fcntl.LOCK_EX)
            if target.exists():
                return True
            gch = os.open(target.parent, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o644)
            try:
                if not build(f"#include <{header}>\n".encode(), gch):
                    return False
                os.fchmod(gch, 0o644)
                _link_unnamed(gch, target)
            finally:
                os.close(gch)
        log.info("precompiled %s into %s", header, entry)
        self.evict()
        return True

    def evict(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            entries = sorted((e.stat().st_mtime, e.path) for e in os.scandir(self.root)
                             if e.is_dir(follow_symlinks=False))
            for _, path in entries[:-MAX_ENTRIES]:
                shutil.rmtree(path, ignore_errors=True)

    @property
    def building(self) -> tuple[str, ...]:
        """The headers being precompiled right now."""
        with self._lock:
            return tuple(header for _, header in self._building)

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Wait until no build runs (a command about to exit, tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while self.building and time.monotonic() < deadline:
            time.sleep(0.05)


def _link_unnamed(fd: int, target: Path) -> None:
    """Give the O_TMPFILE open on `fd` the name `target` (linkat with AT_SYMLINK_FOLLOW through
    /proc/self/fd: os.link without a dir fd calls link(2), which would not follow it)."""
    fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), target, src_dir_fd=fds, follow_symlinks=True)
    finally:
        os.close(fds)
