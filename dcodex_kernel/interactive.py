"""Interactive stdin: how a front door answers a program that waits for input.

A front door that can ask its user passes a `StdinFeed` to `Backend.execute(request, cancel,
feed)`. The run's stdin then stays open, and each time the program blocks reading an empty stdin
the engine yields one `events.InputRequest(prompt)` (after the output printed so far; the prompt
is the program's last partial line of stdout, held back from the output for it). The front door
asks its user and calls `feed.answer(text)`. Time spent waiting for the answer is not charged to
the wall-clock limit; `feed.timeout_s` bounds it instead. Without a feed (or with --stdin, or
test cases) stdin is what the request says, then end of file, as always.

Answers, the same in every front door (Jupyter has no Ctrl-D):
  - a line of text is sent with a newline added (an empty answer is an empty line);
  - `^D` alone ends the input (end of file), as Ctrl-D does in a terminal;
  - `TEXT^D` sends TEXT without a newline, then ends the input;
  - no answer possible (the frontend does not allow input: `None`) ends the input.
After the end of input the program reads end of file for good.
"""

from __future__ import annotations

import os
import threading

EOF_MARK = "^D"
DEFAULT_INPUT_TIMEOUT_S = 600.0  # generous: a person reads the question, thinks, types
MAX_PENDING = 1 << 20  # bytes a front door may send ahead of the program (a terminal paste)


class StdinFeed:
    """Bytes from the front door to the run's stdin, thread-safe; the engine's selector waits on
    `fileno()` (an eventfd) so an answer wakes it at once."""

    def __init__(self, timeout_s: float = DEFAULT_INPUT_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._eof = False

    # -- the front door's side -----------------------------------------------------------------

    def answer(self, text: str | None) -> None:
        """Send a person's answer by the conventions above."""
        if text is None or text in (EOF_MARK, "\x04"):  # (ipykernel's own EOF answer too)
            self.end()
        elif text.endswith(EOF_MARK):
            self.send(text[: -len(EOF_MARK)].encode("utf-8", "surrogateescape"))
            self.end()
        else:
            self.send(text.encode("utf-8", "surrogateescape") + b"\n")

    def send(self, data: bytes) -> None:
        with self._lock:
            if self._eof or not data:
                return
            room = MAX_PENDING - len(self._pending)
            self._pending += data[:max(0, room)]
            self._wake()

    def end(self) -> None:
        """End of input: once what was sent is read, the program reads end of file."""
        with self._lock:
            self._eof = True
            self._wake()

    # -- the engine's side ---------------------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def take(self) -> tuple[bytes, bool]:
        """What was sent since the last take, and whether the input has ended."""
        try:
            os.eventfd_read(self._fd)
        except (BlockingIOError, OSError):
            pass
        with self._lock:
            data = bytes(self._pending)
            self._pending.clear()
            return data, self._eof

    # -- plumbing ------------------------------------------------------------------------------

    def _wake(self) -> None:  # (under the lock: close() cannot hand the fd number to another file)
        if self._fd >= 0:  # else closed: the run is over, nobody reads any more
            os.eventfd_write(self._fd, 1)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
