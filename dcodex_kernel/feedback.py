"""The transient "compiling main.cpp (g++ -std=gnu++20 -O2 -Wall) 1.2 s" line of a slow compile,
for every front door: the timing and wording live here; a front door gives only how to show the
line (`show(text, first)`, called from a timer thread) and how to take it away (`clear()`, called
from the front door's own thread, before whatever it shows next).

The engine announces a compile with `Phase("compile", what)` and the program's start with
`Phase("run")` (a cached build announces nothing, so it shows nothing). A compile that is over
before `THRESHOLD_S` shows nothing either.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from typing import Callable

from .events import Phase

log = logging.getLogger(__name__)

THRESHOLD_S = 0.5  # a compile quicker than this shows nothing
INTERVAL_S = 0.5  # how often the shown time is brought up to date


class CompileProgress:
    """Feed it the run's Phase events (`progress(phase)`); `stop()` when the run is over,
    however it ended. Both are safe to call more than once."""

    def __init__(self, show: Callable[[str, bool], None], clear: Callable[[], None],
                 threshold_s: float = THRESHOLD_S, interval_s: float = INTERVAL_S):
        self._show, self._clear = show, clear
        self.threshold_s, self.interval_s = threshold_s, interval_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False
        self._over = False

    def __call__(self, phase: Phase) -> None:
        if phase.name == "compile":
            self._start(phase.detail)
        else:
            self.stop()

    def _start(self, detail: str) -> None:
        with self._lock:
            if self._thread is not None or self._over:
                return
            # The thread sees the caller's context variables (ipykernel keeps the cell's
            # parent header in one: the line then belongs to this cell).
            context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run,
                                            args=(self._tick, detail, time.monotonic()),
                                            name="dcodex-progress", daemon=True)
            self._thread.start()

    def _tick(self, detail: str, started: float) -> None:
        delay = self.threshold_s
        while not self._wake.wait(delay):
            with self._lock:  # stop() waits for a line being shown before it clears it
                if self._over:
                    return
                try:
                    self._show(f"compiling {detail} {time.monotonic() - started:.1f} s",
                               not self._shown)
                except Exception:  # a front door that cannot show it: no line, the run goes on
                    log.debug("cannot show the compile progress", exc_info=True)
                    return
                self._shown = True
            delay = self.interval_s

    def stop(self) -> None:
        """End the line: clear it if it was shown. Returns once the timer thread is gone."""
        with self._lock:
            if self._over:
                return
            self._over = True
            shown, thread = self._shown, self._thread
        self._wake.set()
        if thread is not None:
            thread.join()
        if shown:
            try:
                self._clear()
            except Exception:
                log.debug("cannot clear the compile progress", exc_info=True)

    def __enter__(self) -> "CompileProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def terminal_progress(stream) -> CompileProgress:
    """The line on a terminal (`dcodex run`, IPython in a terminal): rewritten in place with a
    carriage return, erased at the end. Nothing where `stream` is not a terminal (a pipe or a
    log keeps no transient text)."""
    if not stream.isatty():
        return CompileProgress(lambda *_: None, lambda: None)

    def show(text, first):
        stream.write(f"\r\x1b[2m{text}\x1b[0m\x1b[K")
        stream.flush()

    def clear():
        stream.write("\r\x1b[K")
        stream.flush()

    return CompileProgress(show, clear)
