"""Server-side session workspaces: what `dcodex serve` keeps for each client session.

A client's session id is only half of the key: the other half is who sent it (a hash of its
bearer token, else its address without the port), so a guessed id of someone else's session
opens an empty one of the guesser's own. Each session is one `workspace.Workspace` (its own
0700 directory under the server's, with a size quota), deleted after `ttl_s` without use (a
janitor thread sweeps), and has a turnstile: its runs are served one at a time, in the order
they came, while different sessions run in parallel (the scheduler's slots permitting).

The protocol (dcodex.proto): a request names its session and carries the files the client
believes the server lacks (or, with `workspace_full`, all of them) and the digest of the whole
workspace it expects the run to see. The server stores the files, compares digests, and answers
a mismatch (an expired session, a restarted server) with `workspace_stale`: the client then
sends the whole workspace again. So the client never has to know whether the server kept it.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time

from .workspace import Workspace, WorkspaceError, base_dir, digest, private_dir, remove_orphans

MAX_SESSION_ID = 128
ROOT_PREFIX = "dcodex-serve-sessions-"


class SessionError(ValueError):
    """A request's session part the server refuses (a bad id, too many sessions)."""


class Session:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.last_used = time.monotonic()
        self.users = 0  # requests holding or waiting for this session's turn
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def take_turn(self, gone) -> bool:
        """Wait until every earlier request of this session is done (FIFO); False if `gone()`
        turned true meanwhile (the turn is then given up in its place)."""
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while self._serving != ticket:
                self._cond.wait(0.05)
                if self._serving != ticket and gone():
                    # Our turn must still pass: hand it on when it comes, without waiting here.
                    threading.Thread(target=self._skip, args=(ticket,), daemon=True,
                                     name="dcodex-session-skip").start()
                    return False
            return True

    def _skip(self, ticket: int) -> None:
        with self._cond:
            while self._serving != ticket:
                self._cond.wait()
        self.end_turn()

    def end_turn(self) -> None:
        with self._cond:
            self._serving += 1
            self.last_used = time.monotonic()
            self._cond.notify_all()


class SessionStore:
    def __init__(self, *, quota_bytes: int, max_files: int, ttl_s: float, max_sessions: int):
        self.quota_bytes, self.max_files = quota_bytes, max_files
        self.ttl_s, self.max_sessions = ttl_s, max_sessions
        remove_orphans(base_dir(), ROOT_PREFIX)  # a server killed outright left its sessions
        self.root = private_dir(base_dir(), ROOT_PREFIX)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._janitor = threading.Thread(target=self._sweep_loop, name="dcodex-session-janitor",
                                         daemon=True)
        self._janitor.start()

    @staticmethod
    def scope(metadata, peer: str) -> str:
        """Whose sessions these are: the bearer token's hash, else the peer's address."""
        for key, value in metadata or ():
            if key == "authorization" and value:
                return "token:" + hashlib.sha256(str(value).encode()).hexdigest()
        host = (peer or "?").rsplit(":", 1)[0]  # ipv4:127.0.0.1:54321 -> ipv4:127.0.0.1
        return "peer:" + host

    def acquire(self, scope: str, session_id: str) -> Session:
        """The session (made if new), counted as in use until `release`."""
        if len(session_id) > MAX_SESSION_ID or not session_id.isprintable():
            raise SessionError(f"a session id is at most {MAX_SESSION_ID} printable characters")
        key = f"{scope}\0{session_id}"
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                if len(self._sessions) >= self.max_sessions:
                    self._sweep_locked()
                    if len(self._sessions) >= self.max_sessions:
                        raise SessionError(f"the server holds {len(self._sessions)} sessions, "
                                           "its maximum; try again later")
                session = Session(Workspace(self.root, max_files=self.max_files,
                                            max_bytes=self.quota_bytes, remove_at_exit=False))
                self._sessions[key] = session
            session.users += 1
            session.last_used = time.monotonic()
            return session

    def release(self, session: Session) -> None:
        with self._lock:
            session.users -= 1
            session.last_used = time.monotonic()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def sweep(self) -> None:
        with self._lock:
            self._sweep_locked()

    def _sweep_locked(self) -> None:
        now = time.monotonic()
        for key, session in list(self._sessions.items()):
            if session.users == 0 and now - session.last_used > self.ttl_s:
                del self._sessions[key]
                session.workspace.close()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(min(max(self.ttl_s / 4, 0.05), 30.0)):
            self.sweep()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for session in self._sessions.values():
                session.workspace.close()
            self._sessions.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def apply_upload(session: Session, files: dict, full: bool, expected: str) -> tuple | None:
    """Store a request's files into its session; the workspace's files for the run, or None when
    they are not what the client expects (`expected`, its digest; "" trusts the server).
    WorkspaceError for a name or a quota the workspace refuses."""
    ws = session.workspace
    if full:
        ws.replace(files.items())
    else:
        for name, data in sorted(files.items()):
            ws.write(name, data)
    current = ws.files()
    if expected and digest(current) != expected:
        return None
    return current


__all__ = ["Session", "SessionError", "SessionStore", "WorkspaceError", "apply_upload"]
