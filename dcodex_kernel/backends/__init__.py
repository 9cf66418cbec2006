"""Execution backends: something with `execute(request, cancel=None) -> Iterator[Event]`."""

from __future__ import annotations

from typing import Iterator, Protocol

from ..cancel import CancelToken
from ..events import Event
from ..interactive import StdinFeed
from ..request import Request


class Backend(Protocol):
    def execute(self, request: Request, cancel: CancelToken | None = None,
                feed: StdinFeed | None = None) -> Iterator[Event]:
        """Yield Output events as the program writes, then exactly one Result. With a `feed`
        (and no request stdin) also an InputRequest each time the program waits for input,
        answered through the feed (interactive.py)."""

    def describe(self) -> dict:
        """What a person should know about this backend (shown by `%dcodex` and `dcodex doctor`)."""


def get_backend(*, strict: bool | None = None, server: str | None = None,
                token: str | None = None, tls_ca: str | bytes | None = None,
                environ=None) -> Backend:
    """The backend front doors run on: a remote DCodeX server if `server` (or $DCODEX_SERVER)
    names one, else (or for `server="local"`) this machine's sandbox. `token` (else $DCODEX_TOKEN, or the file
    $DCODEX_TOKEN_FILE) and `tls_ca` (a PEM path or bytes, else $DCODEX_TLS_CA) are for the
    server. `strict`: refuse to run where a sandbox layer is missing (None: $DCODEX_STRICT)."""
    import os

    environ = os.environ if environ is None else environ
    server = server or environ.get("DCODEX_SERVER", "").strip() or None
    if server and server != "local":  # "local": this machine, whatever $DCODEX_SERVER says
        from .local import strict_from_env
        from .remote import RemoteBackend

        if token is None:
            token = token_from_env(environ)
        if tls_ca is None:
            tls_ca = environ.get("DCODEX_TLS_CA") or None
        return RemoteBackend(server, token=token, tls_ca=tls_ca,
                             strict=strict_from_env(environ) if strict is None else strict)
    from .local import LocalBackend

    return LocalBackend(strict=strict)


def token_from_env(environ) -> str | None:
    """$DCODEX_TOKEN, else the contents of the file $DCODEX_TOKEN_FILE (OSError if unreadable)."""
    if environ.get("DCODEX_TOKEN", "").strip():
        return environ["DCODEX_TOKEN"].strip()
    path = environ.get("DCODEX_TOKEN_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    return None


class BackendChoice:
    """A front door's backends: its default one, and one per set of `--server` options a cell
    names (kept: a channel to a server is worth reusing across cells)."""

    def __init__(self):
        self._backends: dict = {}

    def get(self, default, options: dict):
        if not options:
            return default
        key = tuple(sorted(options.items()))
        if key not in self._backends:
            self._backends[key] = get_backend(**options)
        return self._backends[key]
