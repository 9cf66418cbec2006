"""Content-addressed cache of compiled programs: an unchanged program is never compiled twice.

Entries are files named by a hash of everything that determines the binary. Writes are atomic
(copy to a temp name in the same directory, then rename), readers tolerate an entry vanishing
under them (they just compile again), and the size bound is kept by evicting least recently
used entries (mtime is bumped on every hit) under an flock, so several processes can share it.
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

    def fetch(self, key: str, dest: str) -> bool:
        """Copy the cached program for `key` to `dest`; False on a miss."""
        entry = self.root / key
        try:
            shutil.copyfile(entry, dest)
        except FileNotFoundError:
            return False
        os.chmod(dest, 0o755)
        try:
            os.utime(entry)  # LRU: a hit makes the entry young again
        except FileNotFoundError:
            pass
        return True

    def store(self, key: str, program: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, open(program, "rb") as src:
                shutil.copyfileobj(src, out)
            os.chmod(tmp, 0o755)
            os.replace(tmp, self.root / key)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        self.evict()

    def evict(self) -> None:
        """Drop least recently used entries until the cache fits its bound."""
        with open(self.root / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another process is evicting right now
            entries = []
            for e in os.scandir(self.root):
                if e.name.startswith("."):
                    continue
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, e.path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                total -= size

    def size(self) -> int:
        return sum(e.stat().st_size for e in os.scandir(self.root) if not e.name.startswith("."))
