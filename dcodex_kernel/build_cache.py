"""Content-addressed cache of compiled programs: an unchanged program is never compiled twice.

An entry is a directory named by a hash of everything that determines the binary, holding the
program and what the compiler said (warnings are replayed on a hit, so a cached build looks like
a fresh one). Writes are atomic (an entry is filled under a temp name, then renamed into place),
readers tolerate an entry vanishing under them (they just compile again), and the size bound is
kept by evicting least recently used entries (a hit bumps the entry's mtime) under an flock, so
several processes can share the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .paths import cache_dir

DEFAULT_MAX_BYTES = 256 << 20
PROGRAM = "program"
DIAGNOSTICS = "diagnostics"


def cache_key(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed: no ambiguity between parts
        h.update(data)
    return h.hexdigest()


class BuildCache:
    def __init__(self, root: Path | None = None, max_bytes: int | None = None):
        self.root = Path(root) if root else cache_dir() / "builds"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        env_max = os.environ.get("DCODEX_CACHE_MAX_BYTES")
        self.max_bytes = max_bytes or (int(env_max) if env_max else DEFAULT_MAX_BYTES)

    def fetch(self, key: str) -> tuple[int, str] | None:
        """(an open read-only fd of the cached program for `key`, the compiler's diagnostics
        ("" if it said nothing)), or None on a miss. The caller closes the fd."""
        entry = self.root / key
        try:
            fd = os.open(entry / PROGRAM, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):  # never stored, or evicted just now
            return None
        try:
            diagnostics = (entry / DIAGNOSTICS).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            os.close(fd)
            return None
        try:
            os.utime(entry)  # LRU: a hit makes the entry young again
        except FileNotFoundError:
            pass
        return fd, diagnostics

    def store(self, key: str, program_fd: int, diagnostics: str = "") -> None:
        """Store the program readable from `program_fd` (read from its start)."""
        tmp = tempfile.mkdtemp(dir=self.root, prefix=".tmp-")
        try:
            with open(os.path.join(tmp, PROGRAM), "wb") as out:
                size = os.fstat(program_fd).st_size
                offset = 0
                while offset < size:
                    sent = os.sendfile(out.fileno(), program_fd, offset, size - offset)
                    if not sent:
                        break
                    offset += sent
            with open(os.path.join(tmp, DIAGNOSTICS), "w", encoding="utf-8") as f:
                f.write(diagnostics)
            os.chmod(tmp, 0o700)
            target = self.root / key
            try:
                os.rename(tmp, target)  # atomic; fails if another process stored it first
            except OSError:
                if target.is_dir():
                    return  # an equal entry is there already
                target.unlink(missing_ok=True)  # not an entry (a stray file): replace it
                os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.evict()

    def evict(self) -> None:
        """Drop least recently used entries until the cache fits its bound."""
        with open(self.root / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another process is evicting right now
            entries = [(e.stat().st_mtime, _entry_size(e.path), e.path) for e in self._entries()]
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                shutil.rmtree(path, ignore_errors=True)
                total -= size

    def size(self) -> int:
        return sum(_entry_size(e.path) for e in self._entries())

    def _entries(self):
        for e in os.scandir(self.root):
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                yield e
            else:  # not an entry (e.g. left by an older version): it only takes room
                os.unlink(e.path)


def _entry_size(path: str) -> int:
    total = 0
    for name in (PROGRAM, DIAGNOSTICS):
        try:
            total += os.stat(os.path.join(path, name)).st_size
        except FileNotFoundError:
            pass
    return total
