"""The text every front door shows when asked "what will run my code, and how?"
(`%dcodex` in the kernel and the magics, `dcodex doctor`)."""

from __future__ import annotations

from . import __version__
from .request import COMPILE_LIMITS, Limits


def describe(backend, limits: Limits) -> str:
    info = backend.describe()
    lines = [f"DCodeX {__version__}"]
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(value) or "none"
        lines.append(f"  {key.replace('_', ' '):<13} {value}")
    lines.append(f"  {'run limits':<13} {limits.describe()}")
    lines.append(f"  {'compile':<13} {COMPILE_LIMITS.describe()}")
    return "\n".join(lines)
