"""One run's events, from the engine to a gRPC response stream, without the client holding the
engine back.

A run's events must keep being pulled whatever the client does: the engine enforces the wall
and CPU limits and drains the program's pipes only while it is pulled. A sync gRPC handler's
`yield` waits until the message is taken, and a client can keep its flow-control window shut.
Handing every run to an engine thread through a mailbox cost two thread switches per event:
~0.8 ms of CPU, a sixth of the server process's work on a hello world. So a run starts
*inline*: the handler thread pulls the engine itself and sends each event as it comes. The run
moves to an engine thread (and a mailbox) as soon as either of two things happens:

- it has sent INLINE_BYTES: a run with much output is not a hello world, and a window as small
  as a stalled client's could fill;
- one send has been waiting for SEND_WAIT_S: the watchdog (one thread for the server) moves it.
  A limit is then enforced at most that much late.

Generators may be resumed from another thread while not running: the engine's generator moves
as it is, between two of its events.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import replace

from .events import Output, Result, Status

log = logging.getLogger(__name__)

INLINE_BYTES = 16 << 10  # well under the 64 KiB stream window a gRPC client starts with
SEND_WAIT_S = 0.1  # a send on a healthy stream takes microseconds to a millisecond


class Mailbox:
    """Events from an engine thread to the gRPC handler. `put` never blocks (the engine must
    keep its deadlines whatever the client does); when the reader lags, adjacent output of one
    stream is merged, so what waits here is bounded by the run's output cap, in few items."""

    MERGE_AFTER = 64
    MERGE_MAX = 64 << 10  # no merged chunk above this (DCodeX clients take 4 MiB messages)

    def __init__(self):
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, event) -> None:
        with self._cond:
            last = self._items[-1] if self._items else None
            if (len(self._items) >= self.MERGE_AFTER and isinstance(event, Output)
                    and isinstance(last, Output) and (last.stream, last.phase) == (event.stream, event.phase)
                    and len(last.text) + len(event.text) <= self.MERGE_MAX):
                self._items[-1] = replace(last, text=last.text + event.text)
            else:
                self._items.append(event)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def get(self):
        """The next event, or None once the engine is done and everything was taken."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            return self._items.popleft() if self._items else None


def guarded(events):
    """`events`, ending in exactly one Result even if the engine fails (a bug: logged)."""
    try:
        yield from events
    except Exception as e:
        log.exception("engine failed")
        yield Result(Status.INTERNAL_ERROR, f"{type(e).__name__}: {e}")


class Relay:
    """Iterate it for the run's events; call `sending(size)` before yielding each one's message
    to gRPC and `sent()` after, and `close()` in a `finally`. `on_end` runs once, when the engine
    is done with the run (its slot, token and stdin feed are released then), in the thread that
    ran the engine last; `cancel` stops a run that an engine thread still has when the handler
    goes."""

    def __init__(self, events, engines, watchdog: "Watchdog", on_end, cancel):
        self._events = guarded(events)
        self._engines, self._watchdog = engines, watchdog
        self._on_end, self._cancel = on_end, cancel
        self._lock = threading.Lock()  # over the three below
        self._mailbox: Mailbox | None = None  # set when an engine thread has the run
        self._since: float | None = None  # when the send in progress started
        self._closed = False
        self._sent = 0
        watchdog.watch(self)

    def __iter__(self):
        return self

    def __next__(self):
        # The mailbox is set only between sending() and sent(), never while this runs.
        if self._mailbox is not None:
            event = self._mailbox.get()
            if event is None:
                raise StopIteration
            return event
        try:
            return next(self._events)
        except StopIteration:
            self._end()
            raise

    def sending(self, size: int) -> None:
        self._sent += size + 5  # and gRPC's frame header
        self._since = time.monotonic()

    def sent(self) -> None:
        with self._lock:
            self._since = None
            if self._mailbox is None and self._sent > INLINE_BYTES:
                self._hand_over()

    def overdue(self, now: float) -> None:
        """The watchdog's look: a send waiting too long moves the run to an engine thread."""
        with self._lock:
            since = self._since
            if self._mailbox is None and not self._closed and since is not None \
                    and now - since > SEND_WAIT_S:
                self._hand_over()

    def close(self) -> None:
        """The handler is done (the stream ended, failed or was closed): stop what still runs."""
        with self._lock:
            self._closed = True
            threaded = self._mailbox is not None
        if threaded:  # the engine thread ends the run, soon once it is cancelled
            self._cancel()
            return
        try:
            self._events.close()  # a run not finished is killed here
        finally:
            self._end()

    # -- inside --------------------------------------------------------------------------------

    def _hand_over(self) -> None:  # with self._lock held
        self._mailbox = Mailbox()
        self._watchdog.forget(self)
        self._engines.submit(self._pump, self._mailbox)

    def _pump(self, mailbox: Mailbox) -> None:
        try:
            for event in self._events:
                mailbox.put(event)
        finally:
            self._events.close()
            self._end()
            mailbox.close()

    def _end(self) -> None:
        """Once, from one thread at a time: the handler's while the run is inline, the engine
        thread's after."""
        self._watchdog.forget(self)
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()


class Watchdog:
    """One thread that looks at the runs sending inline every SEND_WAIT_S / 2 while there are
    any, and sleeps while there are none; it ends with `close()` (the server's)."""

    def __init__(self):
        self._relays: set[Relay] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, relay: Relay) -> None:
        with self._cond:
            self._relays.add(relay)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dcodex-watchdog", daemon=True)
                self._thread.start()
            elif len(self._relays) == 1:
                self._cond.notify()

    def forget(self, relay: Relay) -> None:
        with self._cond:
            self._relays.discard(relay)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._relays and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                relays = list(self._relays)
            now = time.monotonic()
            for relay in relays:
                relay.overdue(now)
            time.sleep(SEND_WAIT_S / 2)
