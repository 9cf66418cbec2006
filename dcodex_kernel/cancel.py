"""A cancel flag a run can wait on without polling: another thread (or a signal handler) calls
`cancel()`, and the run's selector wakes at once because the flag owns a readable eventfd."""

from __future__ import annotations

import os


class CancelToken:
    def __init__(self):
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.cancelled = False

    def fileno(self) -> int:
        return self._fd

    def cancel(self) -> None:
        """Safe from any thread and from a signal handler; idempotent."""
        self.cancelled = True
        try:
            os.eventfd_write(self._fd, 1)
        except OSError:  # closed already: the run is over, nothing to stop
            pass

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
