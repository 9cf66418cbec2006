"""Where DCodeX keeps its files: one cache directory per user."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$DCODEX_CACHE_DIR, else $XDG_CACHE_HOME/dcodex, else ~/.cache/dcodex (created, mode 0700)."""
    explicit = os.environ.get("DCODEX_CACHE_DIR")
    if explicit:
        path = Path(explicit)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(base) / "dcodex"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
