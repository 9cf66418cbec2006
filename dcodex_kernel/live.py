"""Run one Request for an interactive front door (the IPython magics): output is handed to the
caller's thread as it arrives, and Ctrl-C in that thread cancels the run instead of tearing it.

The engine runs in a helper thread. A KeyboardInterrupt is raised only in the thread that runs
the cell (the main thread gets SIGINT), so it can never land inside the engine's generator half
way through a kill or a cache write; here it just cancels the token and the caller keeps draining
until the engine's one Result arrives.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, NamedTuple

from .cancel import CancelToken
from .events import InputRequest, Output, Phase, Result, collect
from .interactive import StdinFeed
from .request import Request

_DONE = object()


class Run(NamedTuple):
    """What `run_live` returns: the Result (stdout/stderr filled in) and whether Ctrl-C ended it."""

    result: Result
    interrupted: bool


def run_live(backend, request: Request, on_output: Callable[[Output | Phase], None],
             flush: Callable[[], None] | None = None,
             ask: Callable[[str], str | None] | None = None) -> Run:
    """Execute `request`, calling `on_output` in this thread for every Output and Phase as it
    arrives and `flush` whenever it has caught up with the program. With `ask`, a program
    waiting for input gets `ask(prompt)`'s answer, called in this thread (None: end of input;
    see interactive.py) while the engine keeps watching the run. Returns once the run is over
    and every process of it is gone, also after a KeyboardInterrupt (which cancels the run)."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    box: list = []  # the worker's Result (or the exception that broke the engine)
    token = CancelToken()
    feed = StdinFeed() if ask is not None else None
    worker = threading.Thread(target=_produce, args=(backend, request, token, events, box, feed),
                              name="dcodex-run", daemon=True)
    interrupted = False
    try:
        worker.start()
        interrupted = _deliver(events, token, on_output, flush, ask, feed)
    except BaseException:
        # The front door itself failed (say, writing to a closed stdout): stop the run, let
        # the engine finish its clean-up, then report the front door's error.
        token.cancel()
        if worker.ident is not None:  # started, so it will say _DONE
            _drain(events)
        raise
    finally:
        _join(worker)
        token.close()
        if feed is not None:
            feed.close()
    outcome = box[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return Run(outcome, interrupted)


def _produce(backend, request, token, events, box, feed) -> None:
    stream = None
    try:
        stream = backend.execute(request, token, feed) if feed is not None else \
            backend.execute(request, token)
        # collect() keeps stdout/stderr here, so the Result is whole even if the front door's
        # thread drops a chunk while being interrupted.
        box.append(collect(_phases_to(stream, events.put), events.put, events.put))
    except BaseException as e:  # an engine bug: hand it to the front door's thread
        box.append(e)
    finally:
        if stream is not None:
            stream.close()  # kills the run if it did not end on its own
        events.put(_DONE)


def _phases_to(stream, put):
    for event in stream:
        if isinstance(event, Phase):
            put(event)
        yield event


def _deliver(events, token, on_output, flush, ask, feed) -> bool:
    interrupted = False
    while True:
        try:
            item = events.get()
            if item is _DONE:
                return interrupted
            if isinstance(item, InputRequest):
                if flush is not None:
                    flush()
                feed.answer(ask(item.prompt))
                continue
            on_output(item)
            if flush is not None and events.empty():
                flush()
        except KeyboardInterrupt:
            # Second and later Ctrl-Cs land here too: the kill is already under way.
            interrupted = True
            token.cancel()


def _drain(events) -> None:
    while True:
        try:
            if events.get() is _DONE:
                return
        except KeyboardInterrupt:
            pass


def _join(worker: threading.Thread) -> None:
    while worker.is_alive():
        try:
            worker.join()
        except KeyboardInterrupt:
            pass
