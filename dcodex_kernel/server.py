"""`dcodex serve`: the DCodeX-compatible gRPC service (dcodex.proto) over the local engine.

Each request is clamped to the server's maxima, waits for one of `max_concurrent` sandbox slots
(fairly across clients; past the queue: RESOURCE_EXHAUSTED), then runs on LocalBackend. The
engine is never held up by the client: a run starts in the RPC's own thread and moves to an
engine thread of its own once it has much output or one send waits (relay.py), so a slow or
stalled reader cannot keep a program past its wall limit, and what waits for it is bounded by
the run's output cap. A client that cancels or goes
away has its program killed at once (the RPC's termination callback cancels the run's
CancelToken); so does a Cancel RPC naming an Execute run of the same client, after which the
run's stream ends with its own CANCELLED Result. Successful runs are kept in a result cache
(LRU, TTL, full-key compare) and replayed with `cache_hit`. SIGTERM drains the runs in flight,
then exits.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import __version__
from .backends.local import LocalBackend
from .build_cache import BuildCache
from .cancel import CancelToken
from .events import InputRequest, Phase, Result, Status
from .interactive import StdinFeed
from .proto import dcodex_pb2 as pb
from .proto import dcodex_pb2_grpc as pb_grpc
from .proto.convert import (LIMIT_FIELDS, cases_from_pb, checker_from_pb, input_to_pb,
                            limits_to_pb, output_to_pb, phase_to_pb, result_to_pb)
from .relay import Relay, Watchdog
from .request import Language, Limits, Request
from .sandbox.launcher import pin_engine_threads
from .sessions import SessionError, SessionStore, apply_upload
from .workspace import MAX_BYTES as WORKSPACE_BYTES, MAX_FILES as WORKSPACE_FILES
from .workspace import WorkspaceError, check_files

log = logging.getLogger(__name__)

SERVICE = "dcodex.CodeExecutor"

FOLD_MAX = 64 << 10  # the most closing output sent in a Result message

# DCodeX's defaults for a request that sets no limit.
DCODEX_DEFAULTS = Limits(cpu_s=1.0, wall_s=2.0, memory=4 << 30, output=10240)
# The most a request may ask for unless the operator says otherwise (others: Limits' defaults).
DEFAULT_MAXIMA = Limits(cpu_s=60.0, wall_s=60.0, memory=4 << 30, output=1 << 20)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    health_port: int | None = None  # also the health service alone, in plaintext, on this port
    max_concurrent: int = 10  # sandboxes running at once
    queue_length: int = 100  # requests waiting for a slot; more: RESOURCE_EXHAUSTED
    defaults: Limits = DCODEX_DEFAULTS
    maxima: Limits = DEFAULT_MAXIMA
    tokens: tuple[str, ...] = ()  # bearer tokens clients may send (none: no authentication)
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    insecure: bool = False  # allow a non-loopback address without token and TLS
    strict: bool = False  # refuse every run where a sandbox layer is missing
    max_code_bytes: int = 1 << 20
    max_stdin_bytes: int = 8 << 20
    max_flags: int = 256  # words per list (cflags, ldflags, args)
    max_flag_bytes: int = 4096  # bytes per word
    result_cache_entries: int = 1000
    result_cache_ttl_s: float = 3600.0
    result_cache_bytes: int = 64 << 20
    grace_s: float = 70.0  # SIGTERM: how long runs in flight may take to finish
    rate_limit: float = 0.0  # runs per second per client (0: no limit)
    rate_burst: int = 10  # runs a client may start at once before the rate applies
    # Session workspaces (sessions.py): per session at most this many bytes and files, deleted
    # after this long unused; at most this many sessions at once.
    session_quota: int = 64 << 20
    session_files: int = 200
    session_ttl_s: float = 1800.0
    max_sessions: int = 1000
    input_timeout_s: float = 300.0  # an interactive run waiting this long for input is stopped
    build_cache: BuildCache | None = None
    pin_cpu: int | None = None  # serve(): the server's own threads on this CPU (the runs: all)

    def check(self) -> None:
        """ValueError with a message fit to show for a configuration that cannot serve."""
        if self.max_concurrent < 1:
            raise ValueError("--max-concurrent must be at least 1")
        if self.queue_length < 0:
            raise ValueError("--queue-length must not be negative")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port} is not a port number")
        if self.health_port is not None and not 0 <= self.health_port <= 65535:
            raise ValueError(f"--health-port {self.health_port} is not a port number")
        if self.health_port and self.health_port == self.port:
            raise ValueError("--health-port must differ from --port")
        for name in LIMIT_FIELDS:
            if getattr(self.defaults, name) > getattr(self.maxima, name):
                raise ValueError(f"default {Limits.LABELS[name]} of "
                                 f"{Limits.show(name, getattr(self.defaults, name))} is above the "
                                 f"server's maximum of {Limits.show(name, getattr(self.maxima, name))}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if any(not t.strip() or any(c.isspace() for c in t) for t in self.tokens):
            raise ValueError("a token is empty or holds white space")
        if not (0 < self.session_quota <= WORKSPACE_BYTES and 0 < self.session_files <= WORKSPACE_FILES
                and self.max_sessions > 0 and 0 < self.session_ttl_s < math.inf):
            raise ValueError("--session-quota (at most 64 MiB), --max-sessions and --session-ttl "
                             "must be positive")
        if self.pin_cpu is not None and self.pin_cpu not in os.sched_getaffinity(0):
            raise ValueError(f"--pin-cpu {self.pin_cpu}: this process may use CPU(s) "
                             f"{', '.join(map(str, sorted(os.sched_getaffinity(0))))}")
        if not (0 <= self.rate_limit < math.inf) or self.rate_burst < 1:
            raise ValueError("--rate-limit must not be negative and --rate-burst at least 1")
        if not is_loopback(self.host) and not self.insecure and not (self.tokens and self.tls_cert):
            raise ValueError(
                f"refusing to serve on {self.host}, which is not a loopback address, without both "
                "a token (--token-file or DCODEX_TOKEN) and TLS (--tls-cert/--tls-key); "
                "--insecure overrides")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BadRequest(ValueError):
    """A request the server will not run: INVALID_ARGUMENT, with this message."""


def clamp(message: pb.Limits, defaults: Limits, maxima: Limits) -> Limits:
    """The run limits of a request: each unset (0) field the server's default, each one at most
    the server's maximum. A negative or malformed value, or one below Limits' minimum, is a
    BadRequest."""
    values = {}
    for name, wire in LIMIT_FIELDS.items():
        value = getattr(message, wire)
        if isinstance(value, float) and math.isnan(value) or value < 0:
            raise BadRequest(f"limits.{wire} must be positive, got {value!r}")
        if value == 0:
            value = getattr(defaults, name)
        value = min(value, getattr(maxima, name))
        if name in ("cpu_s", "wall_s"):
            value = float(value)
        values[name] = value
    try:
        return Limits(**values)
    except ValueError as e:
        raise BadRequest(str(e)) from None


def request_from_pb(message: pb.CodeRequest, config: ServerConfig) -> Request:
    """The Request a CodeRequest asks for, clamped to the server's maxima; BadRequest if the
    server will not run it (too large, unknown language, ...)."""
    try:
        language = Language.parse(message.language)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    code_bytes = len(message.code.encode("utf-8"))
    if code_bytes > config.max_code_bytes:
        raise BadRequest(f"code is {code_bytes} bytes, above the server's limit of "
                         f"{config.max_code_bytes}")
    stdin = message.stdin_bytes or message.stdin_data.encode("utf-8")
    if len(stdin) > config.max_stdin_bytes:
        raise BadRequest(f"stdin is {len(stdin)} bytes, above the server's limit of "
                         f"{config.max_stdin_bytes}")
    for name in ("cflags", "ldflags", "args"):
        words = getattr(message, name)
        if len(words) > config.max_flags:
            raise BadRequest(f"{name} has {len(words)} words, above the server's limit of "
                             f"{config.max_flags}")
        for word in words:
            if len(word.encode("utf-8")) > config.max_flag_bytes or "\0" in word:
                raise BadRequest(f"a word of {name} is longer than {config.max_flag_bytes} bytes "
                                 "or holds a NUL byte")
    checker_bytes = len(message.checker.code.encode("utf-8"))
    if checker_bytes > config.max_code_bytes:
        raise BadRequest(f"the checker is {checker_bytes} bytes, above the server's limit of "
                         f"{config.max_code_bytes}")
    case_bytes = sum(len(c.input) + len(c.expected) + len(c.name) for c in message.cases)
    if case_bytes > config.max_stdin_bytes:
        raise BadRequest(f"the test cases hold {case_bytes} bytes, above the server's limit of "
                         f"{config.max_stdin_bytes}")
    limits = clamp(message.limits, config.defaults, config.maxima)
    # A session's files are its workspace's, filled in when the run has its turn (_serve).
    files = {} if message.session else dict(message.files)
    try:
        files = check_files(files, max_files=config.session_files, max_bytes=config.session_quota)
        return Request(language=language, code=message.code, stdin=stdin, limits=limits,
                       cflags=tuple(message.cflags), ldflags=tuple(message.ldflags),
                       args=tuple(message.args),
                       cache=message.cache if message.HasField("cache") else True,
                       color=message.color, cases=cases_from_pb(message),
                       compare=message.compare or "default", checker=checker_from_pb(message),
                       show_output=message.show_output, files=files,
                       sources=() if message.session else tuple(message.sources),
                       repeat=message.repeat or 1)
    except ValueError as e:  # bad cases, compare mode, checker, files or repeat count
        raise BadRequest(str(e)) from None


# ---------------------------------------------------------------------------------------------
# the parts


class Busy(Exception):
    """No slot free and the queue is full."""


class Scheduler:
    """`slots` runs at once; up to `queue_length` waiting, served round-robin across clients so
    one client's burst cannot starve another."""

    def __init__(self, slots: int, queue_length: int):
        self.slots, self.queue_length = slots, queue_length
        self.active = 0
        self._cond = threading.Condition()
        self._waiting: dict[str, collections.deque] = {}
        self._turns: collections.deque[str] = collections.deque()  # clients with waiters, in turn
        self._granted: set[object] = set()

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def acquire(self, client: str, gone) -> bool:
        """True once a slot is ours; False if `gone()` turned true while waiting; Busy past the
        queue."""
        with self._cond:
            if self.active < self.slots and not self._turns:
                self.active += 1
                return True
            if self.queued >= self.queue_length:
                raise Busy
            ticket = object()
            if client not in self._waiting:
                self._waiting[client] = collections.deque()
                self._turns.append(client)
            self._waiting[client].append(ticket)
            while ticket not in self._granted:
                self._cond.wait(0.05)
                if ticket not in self._granted and gone():
                    self._withdraw(client, ticket)
                    return False
            self._granted.discard(ticket)
            return True

    def release(self) -> None:
        with self._cond:
            if self._turns:  # hand the slot to the next client in turn
                client = self._turns.popleft()
                queue = self._waiting[client]
                self._granted.add(queue.popleft())
                if queue:
                    self._turns.append(client)
                else:
                    del self._waiting[client]
                self._cond.notify_all()
            else:
                self.active -= 1

    def _withdraw(self, client, ticket) -> None:
        queue = self._waiting[client]
        queue.remove(ticket)
        if not queue:
            del self._waiting[client]
            self._turns.remove(client)


@dataclass
class _Entry:
    logs: list[bytes]  # serialized ExecutionLogs, the last one the Result's
    size: int
    stored: float


class ResultCache:
    """Successful runs, replayed to a request with the same key: LRU over `entries` (and
    `max_bytes` in total), each entry for `ttl_s`. The key is the whole request (compared in
    full by the dict, not only its hash)."""

    def __init__(self, entries: int, ttl_s: float, max_bytes: int):
        self.entries, self.ttl_s, self.max_bytes = entries, ttl_s, max_bytes
        self._data: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(request: Request, strict: bool) -> tuple:
        return (request.language.value, request.code, request.stdin,
                dataclasses.astuple(request.limits), request.cflags, request.ldflags,
                request.args, request.color, strict, request.compare,
                tuple((c.name, c.input, c.expected) for c in request.cases),
                request.files, request.sources, request.show_output,
                (request.checker.language.value, request.checker.code) if request.checker else None)

    @staticmethod
    def _key_size(key: tuple) -> int:
        return sum(len(part) for part in key if isinstance(part, (str, bytes))) + \
            sum(len(w) for part in key[4:7] for w in part) + \
            sum(len(x) for case in key[10] for x in case) + \
            sum(len(name) + len(data) for name, data in key[11]) + sum(map(len, key[12])) + \
            (len(key[14][1]) if key[14] else 0)

    def get(self, key) -> list[bytes] | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if time.monotonic() - entry.stored > self.ttl_s:
                self._drop(key)
                return None
            self._data.move_to_end(key)
            return entry.logs

    def put(self, key, logs: list[bytes]) -> None:
        size = self._key_size(key) + sum(len(b) for b in logs)
        if self.entries <= 0 or size > self.max_bytes:
            return
        with self._lock:
            if key in self._data:
                self._drop(key)
            self._data[key] = _Entry(logs, size, time.monotonic())
            self._bytes += size
            while len(self._data) > self.entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._data)))

    def _drop(self, key) -> None:
        self._bytes -= self._data.pop(key).size

    def __len__(self):
        return len(self._data)


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.served = self.hits = self.misses = self.rejected = 0
        self.peak_memory = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=1000)

    def finished(self, latency_s: float, peak_memory: int) -> None:
        with self._lock:
            self.served += 1
            self._latencies.append(latency_s * 1000)
            self.peak_memory = max(self.peak_memory, peak_memory)

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def percentile(self, q: float) -> float:
        with self._lock:
            values = sorted(self._latencies)
        if not values:
            return 0.0
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


# ---------------------------------------------------------------------------------------------
# the service


class CodeExecutor(pb_grpc.CodeExecutorServicer):
    def __init__(self, config: ServerConfig):
        self.config = config
        cache = config.build_cache or BuildCache()
        self.backend = LocalBackend(cache, strict=config.strict)
        self.strict_backend = LocalBackend(cache, strict=True)
        self.scheduler = Scheduler(config.max_concurrent, config.queue_length)
        self.results = ResultCache(config.result_cache_entries, config.result_cache_ttl_s,
                                   config.result_cache_bytes)
        self.metrics = Metrics()
        self.rates = RateLimiter(config.rate_limit, config.rate_burst)
        # Threads kept for the engines of runs the relay moved off their RPC's thread (one per
        # sandbox slot, twice that for the moment a finished engine has released its slot but
        # not yet its thread) and for the Session listeners (one per RPC, likewise): starting a
        # thread per request cost ~0.45 ms of CPU. Made only when first needed.
        self._engines = futures.ThreadPoolExecutor(2 * config.max_concurrent, "dcodex-engine")
        self._watchdog = Watchdog()
        self._listeners = futures.ThreadPoolExecutor(2 * rpc_threads(config), "dcodex-session")
        self._sessions: SessionStore | None = None  # made with the first session
        self._sessions_lock = threading.Lock()
        self._named: dict[str, _Guard] = {}  # Execute runs a client named (run_id), for Cancel
        self._named_lock = threading.Lock()

    @property
    def sessions(self) -> SessionStore:
        with self._sessions_lock:
            if self._sessions is None:
                c = self.config
                self._sessions = SessionStore(quota_bytes=c.session_quota, max_files=c.session_files,
                                              ttl_s=c.session_ttl_s, max_sessions=c.max_sessions)
            return self._sessions

    def close(self) -> None:
        self._watchdog.close()  # (after the drain: no run is inline any more)
        with self._sessions_lock:
            if self._sessions is not None:
                self._sessions.close()
                self._sessions = None

    # -- RPCs ----------------------------------------------------------------------------------

    def Execute(self, request, context):
        yield from self._serve(request, context, _Guard(CancelToken()), None)

    def Session(self, request_iterator, context):
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        if first.WhichOneof("kind") != "request":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "the first message of a Session must be the request")
        guard = _Guard(CancelToken())
        # Interactive: the program's stdin stays open, fed by the client's stdin messages.
        feed = StdinFeed(self.config.input_timeout_s) if first.request.stream_stdin else None

        def listen():  # later messages: stdin (interactive runs only), cancel
            try:
                for message in request_iterator:
                    kind = message.WhichOneof("kind")
                    if kind == "cancel" and message.cancel:
                        guard.cancel()
                        return
                    if feed is not None and kind == "stdin_chunk":
                        feed.send(message.stdin_chunk)
                    elif feed is not None and kind == "stdin_eof":
                        feed.end()
            except Exception:  # the stream broke: the RPC's callback cancels the run
                pass

        self._listeners.submit(listen)
        yield from self._serve(first.request, context, guard, feed)

    def Cancel(self, request, context):
        with self._named_lock:
            guard = self._named.get(_run_key(context, request.run_id))
        if guard is not None:
            guard.cancel()
        return pb.CancelReply(found=guard is not None)

    def GetSystemMetrics(self, request, context):
        s, m, config = self.scheduler, self.metrics, self.config
        caps = self.backend.caps
        return pb.SystemMetrics(
            active_workers=s.active, idle_workers=max(0, s.slots - s.active),
            recycling_workers=0, current_pool_size=s.slots,
            total_requests_served=m.served, p50_latency_ms=m.percentile(0.50),
            p99_latency_ms=m.percentile(0.99), cache_hits=m.hits, cache_misses=m.misses,
            peak_memory_usage_bytes=m.peak_memory, cpu_load_average=os.getloadavg()[0],
            queued_requests=s.queued, queue_length=s.queue_length, version=__version__,
            isolation=list(caps.layers()), degraded=list(caps.missing()),
            default_limits=limits_to_pb(config.defaults), max_limits=limits_to_pb(config.maxima),
            requests_rejected=m.rejected)

    # -- one run -------------------------------------------------------------------------------

    def _serve(self, message, context, guard: "_Guard", feed: StdinFeed | None):
        start = time.monotonic()
        context.add_callback(guard.cancel)  # cancelled, disconnected, deadline: stop the run
        relay = None
        session, turn = None, False
        named = None
        try:
            try:
                request = request_from_pb(message, self.config)
                if message.run_id:
                    named = self._name(context, message.run_id, guard)
            except BadRequest as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            client = _client(context, len(self.config.tokens) > 1)
            if not self.rates.allow(client):
                self.metrics.count("rejected")
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"rate limit of {self.config.rate_limit:g} runs/s (burst "
                              f"{self.config.rate_burst}) exceeded for this client")
            if message.session:
                try:
                    session = self.sessions.acquire(
                        SessionStore.scope(context.invocation_metadata(), context.peer()),
                        message.session)
                except SessionError as e:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                # The session's runs one at a time, in order: wait for the earlier ones.
                turn = session.take_turn(lambda: guard.cancelled or not context.is_active())
                if not turn:
                    yield result_to_pb(Result(Status.CANCELLED, "Interrupted"),
                                       elapsed_s=time.monotonic() - start)
                    return
                request = self._session_request(session, message, request)
                if isinstance(request, pb.ExecutionLog):  # refused: the reason is the answer
                    yield request
                    return
            strict = self.config.strict or message.strict
            # --result-cache-entries 0: off; a --repeat series is a measurement: not replayed.
            # A client that can answer input (the magics, the kernels) has entries of its own (a
            # program reading stdin gets EOF without an answerer, asks with one), and only its
            # runs that never asked are kept (below): their output depended on no answer.
            cached = request.cache and self.results.entries > 0 and request.repeat == 1
            key = (*ResultCache.key(request, strict), feed is not None) if cached else None
            if key is not None:
                replay = self.results.get(key)
                self.metrics.count("hits" if replay else "misses")
                if replay:
                    *chunks, last = replay
                    for chunk in chunks:
                        yield pb.ExecutionLog.FromString(chunk)
                    final = pb.ExecutionLog.FromString(last)
                    final.cache_hit = True
                    final.build_cached = False  # nothing was built for this answer either
                    self.metrics.finished(time.monotonic() - start, final.peak_memory_bytes)
                    yield final
                    return
            try:
                if not self.scheduler.acquire(client, lambda: guard.cancelled
                                              or not context.is_active()):
                    # Cancelled (or gone) while queued: nothing ran.
                    yield result_to_pb(Result(Status.CANCELLED, "Interrupted"),
                                       elapsed_s=time.monotonic() - start)
                    return
            except Busy:
                self.metrics.count("rejected")
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"server busy: {self.scheduler.slots} runs in progress and "
                              f"{self.scheduler.queue_length} queued; try again later")
            backend = self.strict_backend if strict else self.backend
            relay = Relay(backend.execute(request, guard.token, feed), self._engines, self._watchdog,
                          functools.partial(self._release, guard, feed, session, turn, slot=True),
                          guard.cancel)
            kept: list[bytes] | None = [] if key is not None else None
            # A single run's closing stdout goes with its Result, to a client that reads it there.
            fold = message.output_in_result and not request.cases and request.repeat == 1
            closing = None
            for event in relay:
                replies = []
                if closing is not None and not isinstance(event, Result):
                    replies.append(closing)
                    closing = None
                if isinstance(event, Result):
                    reply = result_to_pb(event, elapsed_s=time.monotonic() - start)
                    self.metrics.finished(time.monotonic() - start, event.peak_memory)
                    if kept is not None and event.status is Status.OK and not event.truncated:
                        self.results.put(key, [*kept, reply.SerializeToString()])
                    if closing is not None:
                        reply.stdout_chunk = closing.stdout_chunk
                elif isinstance(event, InputRequest):
                    reply = input_to_pb(event)
                    kept = None  # what follows depends on the answers: never replayed
                elif isinstance(event, Phase):  # progress of this run only: a replay has none
                    reply = phase_to_pb(event)
                else:
                    reply = output_to_pb(event)
                    if kept is not None:
                        kept.append(reply.SerializeToString())
                    if fold and event.after_exit and event.stream == "stdout" and event.phase == "run" \
                            and len(event.text) <= FOLD_MAX:
                        closing, reply = reply, None
                for reply in (*replies, reply):
                    if reply is not None:
                        relay.sending(reply.ByteSize())
                        yield reply
                        relay.sent()
        finally:
            if named is not None:
                with self._named_lock:
                    del self._named[named]
            if relay is not None:
                relay.close()  # the run ends (in its engine thread, if it has one), then _release
            else:
                self._release(guard, feed, session, turn, slot=False)

    def _release(self, guard: "_Guard", feed: StdinFeed | None, session, turn: bool, slot: bool) -> None:
        """What a run held, given back when it is over: its sandbox slot, its token, its stdin
        feed; its session's turn (the session's next run goes now)."""
        if slot:
            self.scheduler.release()
        guard.close()
        if feed is not None:
            feed.close()
        if session is not None:
            if turn:
                session.end_turn()
            self.sessions.release(session)

    def _name(self, context, run_id: str, guard: "_Guard") -> str:
        if len(run_id) > MAX_RUN_ID or not run_id.isprintable():
            raise BadRequest(f"a run_id is at most {MAX_RUN_ID} printable characters")
        key = _run_key(context, run_id)
        with self._named_lock:
            if key in self._named:
                raise BadRequest("run_id is in use by another run of this client")
            self._named[key] = guard
        return key

    def _session_request(self, session, message, request):
        """The request with its session's workspace, after storing the files it brought; or
        the ExecutionLog refusing it (a quota, a bad name, a stale workspace)."""
        try:
            files = apply_upload(session, dict(message.files), message.workspace_full,
                                 message.workspace_digest)
        except WorkspaceError as e:
            return result_to_pb(Result(Status.REJECTED, f"session workspace: {e}"))
        if files is None:
            log = result_to_pb(Result(Status.REJECTED, "the session's workspace on the server is "
                                      "out of date (expired, or the server restarted); the client "
                                      "sends it again"))
            log.workspace_stale = True
            return log
        try:
            return replace(request, files=files, sources=tuple(message.sources))
        except ValueError as e:
            return result_to_pb(Result(Status.REJECTED, str(e)))


class _Guard:
    """The run's CancelToken, cancellable from any thread (gRPC's callback may fire after the
    run is over) and closed exactly once, never written to after that."""

    def __init__(self, token: CancelToken):
        self.token = token
        self._lock = threading.Lock()
        self._closed = False

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    def cancel(self) -> None:
        with self._lock:
            if not self._closed:
                self.token.cancel()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.token.close()


MAX_RUN_ID = 128


def _run_key(context, run_id: str) -> str:
    """A named run's key: only its own client (token, else address) can cancel it."""
    return f"{SessionStore.scope(context.invocation_metadata(), context.peer())}\0{run_id}"


def _client(context, by_token: bool) -> str:
    """Whose request this is, for fair scheduling and rate limits: its token where the server
    has several (`by_token`), else the peer (address and port: one connection)."""
    if by_token:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and value:
                return "token:" + hashlib.sha256(str(value).encode()).hexdigest()[:16]
    return context.peer() or "?"


class RateLimiter:
    """A token bucket per client: `burst` runs at once, then `rate` per second."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            level, then = self._buckets.pop(client, (float(self.burst), now))
            level = min(float(self.burst), level + (now - then) * self.rate)
            allowed = level >= 1
            self._buckets[client] = (level - 1 if allowed else level, now)
            while len(self._buckets) > 10000:  # forget the longest-idle clients
                self._buckets.popitem(last=False)
            return allowed


class _TokenAuth(grpc.ServerInterceptor):
    """Every RPC but the health service needs `authorization: Bearer TOKEN`, TOKEN one of the
    server's (each compared in constant time, all of them every time)."""

    def __init__(self, tokens):
        self._expected = [f"Bearer {token}".encode() for token in tokens]

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        if details.method.startswith("/grpc.health.v1.Health/"):
            return continuation(details)
        given = next((v for k, v in details.invocation_metadata or () if k == "authorization"), "")
        if isinstance(given, str):
            given = given.encode()
        matches = [hmac.compare_digest(given, expected) for expected in self._expected]
        if any(matches):
            return continuation(details)
        return self._deny


def rpc_threads(config: ServerConfig) -> int:
    """gRPC handler threads: one per run and per queued request, and a few for metrics/health."""
    return config.max_concurrent + config.queue_length + 8


class Server:
    """A running `dcodex serve`: `start()`, then `stop()` (drains) or `wait()`."""

    def __init__(self, config: ServerConfig):
        config.check()
        self.config = config
        self.service = CodeExecutor(config)
        threads = rpc_threads(config)
        limit = config.max_code_bytes + 2 * config.max_stdin_bytes + config.session_quota + (1 << 20)
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dcodex-rpc"),
            interceptors=[_TokenAuth(config.tokens)] if config.tokens else [],
            maximum_concurrent_rpcs=threads,
            options=[("grpc.max_receive_message_length", limit),
                     ("grpc.so_reuseport", 0)])
        pb_grpc.add_CodeExecutorServicer_to_server(self.service, self._grpc)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        address = self.address_of(config.port)
        try:
            if config.tls_cert:
                creds = grpc.ssl_server_credentials([(config.tls_key, config.tls_cert)])
                self.port = self._grpc.add_secure_port(address, creds)
            else:
                self.port = self._grpc.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise OSError(f"cannot listen on {address} (the port is in use, or the address is "
                          "not this machine's)")
        # Probes that speak neither TLS nor tokens (Kubernetes' gRPC probes) get the same health
        # service, alone, on a plaintext port of its own: it tells only SERVING or not.
        self._health_grpc, self.health_port = None, None
        if config.health_port is not None:
            self._health_grpc = grpc.server(
                futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="dcodex-health"),
                options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_grpc)
            where = self.address_of(config.health_port)
            try:
                self.health_port = self._health_grpc.add_insecure_port(where)
            except RuntimeError:
                self.health_port = 0
            if not self.health_port:
                raise OSError(f"cannot listen on {where} for --health-port")

    def address_of(self, port: int) -> str:
        host = self.config.host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def address(self) -> str:
        return self.address_of(self.port)

    def start(self) -> "Server":
        self._grpc.start()
        if self._health_grpc is not None:
            self._health_grpc.start()
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace: float | None = None) -> None:
        """Refuse new RPCs, let the runs in flight finish (up to `grace` s), then stop."""
        self.health.enter_graceful_shutdown()
        self._grpc.stop(self.config.grace_s if grace is None else grace).wait()
        if self._health_grpc is not None:  # probes saw NOT_SERVING all through the drain
            self._health_grpc.stop(0).wait()
        self.service.close()  # the session workspaces go with the server

    def wait(self) -> None:
        self._grpc.wait_for_termination()


def serve(config: ServerConfig, *, out=sys.stderr) -> int:
    """Run until SIGTERM or SIGINT, then drain. The exit code of `dcodex serve`."""
    if config.pin_cpu is not None:  # before any thread of the server's is started
        pin_engine_threads(config.pin_cpu)
    server = Server(config).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    caps = server.service.backend.caps
    security = ", ".join(filter(None, ["TLS" if config.tls_cert else "no TLS",
                                       "token" if config.tokens else "no token"]))
    if server.health_port:
        security += f"; health service also on {server.address_of(server.health_port)}, plaintext"
    if config.pin_cpu is not None:
        security += f"; its threads on CPU {config.pin_cpu}"
    print(f"dcodex serve: listening on {server.address} ({security}; {config.max_concurrent} "
          f"sandboxes, queue {config.queue_length}; isolation: {', '.join(caps.layers()) or 'none'})",
          file=out, flush=True)
    while not stop.wait(3600):
        pass
    print("dcodex serve: draining the runs in flight", file=out, flush=True)
    server.stop()
    print("dcodex serve: stopped", file=out, flush=True)
    return 0
