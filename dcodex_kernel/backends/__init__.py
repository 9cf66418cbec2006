"""Execution backends: something with `execute(request, cancel=None) -> Iterator[Event]`."""

from __future__ import annotations

from typing import Iterator, Protocol

from ..cancel import CancelToken
from ..events import Event
from ..request import Request


class Backend(Protocol):
    def execute(self, request: Request, cancel: CancelToken | None = None) -> Iterator[Event]:
        """Yield Output events as the program writes, then exactly one Result."""

    def describe(self) -> dict:
        """What a person should know about this backend (shown by `%dcodex` and `dcodex doctor`)."""


def get_backend(*, strict: bool | None = None) -> Backend:
    """The backend front doors run on. `strict`: refuse to run where a sandbox layer is missing
    (None: $DCODEX_STRICT decides)."""
    from .local import LocalBackend

    return LocalBackend(strict=strict)
