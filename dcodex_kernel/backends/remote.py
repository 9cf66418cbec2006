"""The remote backend: send a Request to a `dcodex serve` (or any DCodeX Kernel server) and turn
its ExecutionLog stream back into the same Events the local backend yields.

A run that cannot ask for input goes over the one-way `Execute` RPC, named by a `run_id`; if the
CancelToken fires, a `Cancel` RPC names it, and the server answers with the run's Result once
nothing of it is left (a server that does not know the run, such as another one behind a
round_robin channel or a DCodeX server, has the call itself cancelled instead: it kills the run
then too). An interactive run goes over the bidirectional `Session` RPC: the request first, then
what the caller's StdinFeed gives (stdin chunks, the end of input), and a cancel message. A
server that does not answer a cancel in time, or a consumer that stops reading, has the RPC
cancelled. Whatever goes wrong on the way, the caller gets exactly one Result: an unreachable
server is one `internal_error` naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import select
import threading
from typing import Iterator

from ..cancel import CancelToken
from ..events import Event, Result, Status
from ..interactive import StdinFeed
from ..request import Request

CONNECT_TIMEOUT_S = 5.0
# Several servers (a list of addresses, or a DNS name with several records): gRPC's own
# round_robin policy, routing only to servers whose standard health service says SERVING (a
# draining server says NOT_SERVING and gets no new runs).
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}],
                             "healthCheckConfig": {"serviceName": "dcodex.CodeExecutor"}})
CANCEL_GRACE_S = 5.0  # after a cancel, how long the server has to send the Result


class RemoteBackend:
    def __init__(self, address: str, token: str | None = None, tls_ca: bytes | str | None = None,
                 *, strict: bool = False, connect_timeout: float = CONNECT_TIMEOUT_S):
        self.address = address
        self.token = token or None
        if isinstance(tls_ca, str):  # a path
            with open(tls_ca, "rb") as f:
                tls_ca = f.read()
        self.tls_ca = tls_ca
        self.strict = strict
        self.connect_timeout = connect_timeout
        self._channel = self._stub_ = None
        self._lock = threading.Lock()
        self._metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        self._plain = False  # the server has no Session RPC (a DCodeX server): use Execute
        # This front door's session on the server (sessions.py): its workspace files are sent
        # once and then only when they change; `_uploaded` is what the server was sent (name ->
        # digest), empty when the next upload must be the whole workspace.
        self.session_id = secrets.token_urlsafe(24)
        self._uploaded: dict[str, str] = {}

    # -- plumbing ------------------------------------------------------------------------------

    def _stub(self):
        """The stub over this backend's one channel (made with the first run, kept)."""
        if self._stub_ is not None:
            return self._stub_
        import grpc
        import grpc.experimental

        from ..proto import dcodex_pb2_grpc as pb_grpc

        with self._lock:
            if self._channel is None:
                # A connection attempt that gets no answer gives up after connect_timeout (a
                # refused one at once); calls then fail UNAVAILABLE (wait_for_ready=False).
                # Execute's responses are read on the caller's thread, without the channel's
                # own polling thread (~0.5 ms of client CPU less per run).
                options = [("grpc.max_receive_message_length", 64 << 20),
                           (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
                           ("grpc.service_config", SERVICE_CONFIG),
                           ("grpc.min_reconnect_backoff_ms", int(self.connect_timeout * 1000)),
                           ("grpc.initial_reconnect_backoff_ms", 200),
                           ("grpc.max_reconnect_backoff_ms", 2000)]
                target = grpc_target(self.address)
                if self.tls_ca is not None:
                    creds = grpc.ssl_channel_credentials(root_certificates=self.tls_ca)
                    self._channel = grpc.secure_channel(target, creds, options)
                else:
                    self._channel = grpc.insecure_channel(target, options)
                self._stub_ = pb_grpc.CodeExecutorStub(self._channel)
            return self._stub_

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = self._stub_ = None

    def _failure(self, error) -> Result:
        import grpc

        code = error.code() if hasattr(error, "code") else None
        details = (error.details() if hasattr(error, "details") else None) or str(error)
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            return Result(Status.REJECTED, f"the server refused the request: {details}")
        if code is grpc.StatusCode.UNAVAILABLE:
            return Result(Status.INTERNAL_ERROR,
                          f"cannot reach DCodeX server at {self.address}: {details}")
        if code is grpc.StatusCode.UNAUTHENTICATED:
            return Result(Status.INTERNAL_ERROR, f"DCodeX server at {self.address} refused the "
                          f"token ({details}); set DCODEX_TOKEN or --token-file")
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            return Result(Status.INTERNAL_ERROR, f"DCodeX server at {self.address} is busy: {details}")
        if code is grpc.StatusCode.CANCELLED:
            return Result(Status.CANCELLED, "Interrupted")
        name = code.name if code is not None else type(error).__name__
        return Result(Status.INTERNAL_ERROR, f"DCodeX server at {self.address}: {name}: {details}")

    def _wire(self, request: Request, *, resend: bool = False):
        """(the CodeRequest, what the server holds after it: name -> digest)."""
        from ..proto.convert import request_to_pb

        if not request.files and not self._uploaded:  # no workspace: no session on the server
            return request_to_pb(request, strict=self.strict), {}
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in request.files}
        with self._lock:
            known = {} if resend else dict(self._uploaded)
        full = not known or not set(known) <= set(digests)  # a file gone: send the whole
        upload = {name: data for name, data in request.files
                  if full or known.get(name) != digests[name]}
        return request_to_pb(request, strict=self.strict, session=self.session_id,
                             upload=upload, full=full), digests

    def _uploaded_now(self, digests: dict, result: Result | None) -> None:
        """Note what the server holds after a run: the upload if it ran, else unknown."""
        with self._lock:
            ran = result is not None and result.status not in (Status.REJECTED, Status.INTERNAL_ERROR)
            self._uploaded = digests if ran else {}

    # -- the Backend protocol ------------------------------------------------------------------

    def execute(self, request: Request, cancel: CancelToken | None = None,
                feed: StdinFeed | None = None) -> Iterator[Event]:
        """Run on the server; a session workspace the server no longer has (expired, a restart)
        is sent again whole, once."""
        for resend in (False, True):
            stale = yield from self._execute_once(request, cancel, resend, feed)
            if not stale:
                return
        yield Result(Status.INTERNAL_ERROR, f"DCodeX server at {self.address} keeps refusing "
                     "this session's workspace as out of date")

    def _execute_once(self, request: Request, cancel: CancelToken | None, resend: bool,
                      feed: StdinFeed | None):
        """One attempt; returns True (having yielded nothing) when the server said the session
        workspace is stale."""
        try:
            import grpc  # noqa: F401 (is grpcio there?)

            from ..proto import dcodex_pb2 as pb
        except ImportError as e:
            yield Result(Status.INTERNAL_ERROR, f"the remote backend needs grpcio and protobuf: {e}")
            return
        if cancel is not None and cancel.cancelled:
            yield Result(Status.CANCELLED, "Interrupted")
            return
        try:
            message, digests = self._wire(request, resend=resend)
        except ValueError as e:  # what cannot travel (a Python function as the checker)
            yield Result(Status.REJECTED, str(e))
            return False
        stub = self._stub()
        interactive = feed is not None and not request.stdin and not request.cases
        if not interactive or self._plain:
            # One-way Execute: about 2 ms of CPU less per run, client and server together, than
            # the bidirectional Session; a cancel is a Cancel RPC naming the run.
            message.run_id = secrets.token_urlsafe(16)
            call = stub.Execute(message, metadata=self._metadata, wait_for_ready=False)
            done, cancel_sent = threading.Event(), threading.Event()
            watching = cancel is not None and cancel.fileno() >= 0  # (a closed token: none)
            if watching:
                watched = _WATCHER.watch(cancel, lambda: threading.Thread(
                    target=self._stop, args=(stub, call, message.run_id, done, cancel_sent),
                    daemon=True, name="dcodex-remote-cancel").start())
            try:
                return (yield from self._read(call, cancel_sent, digests, started_ok=False))
            finally:
                done.set()
                if watching:
                    _WATCHER.unwatch(cancel, watched)

        done = threading.Event()  # the response stream is over
        cancel_sent = threading.Event()
        message.stream_stdin = True

        def messages():  # consumed by a gRPC thread, which may block here
            yield pb.ClientMessage(request=message)
            watched = [fd.fileno() for fd in (cancel, feed) if fd]
            while not done.is_set():
                try:
                    ready, _, _ = select.select(watched, [], [], 0.2)
                except (OSError, ValueError):  # a token/feed was closed: the run is over
                    return
                if feed.fileno() in ready:  # the user's input, to the server
                    data, eof = feed.take()
                    for at in range(0, len(data), 1 << 20):
                        yield pb.ClientMessage(stdin_chunk=data[at:at + (1 << 20)])
                    if eof:
                        yield pb.ClientMessage(stdin_eof=True)
                        watched.remove(feed.fileno())
                    continue
                if ready and not done.is_set():  # ask the server to stop the run
                    cancel_sent.set()
                    yield pb.ClientMessage(cancel=True)
                    # A server that does not answer in time has the call cancelled.
                    if not done.wait(CANCEL_GRACE_S):
                        call.cancel()
                    return

        call = stub.Session(messages(), metadata=self._metadata, wait_for_ready=False)
        try:
            stale = yield from self._read(call, cancel_sent, digests, started_ok=True)
        finally:
            done.set()
        if stale is None:  # a DCodeX server: it knows only Execute
            self._plain = True
            return (yield from self._execute_once(request, cancel, True, feed))
        return stale

    def _stop(self, stub, call, run_id: str, done: threading.Event,
              cancel_sent: threading.Event) -> None:
        """Cancel an Execute run: the server's Cancel, whose answer is the run's own Result once
        nothing of it is left; the call itself is cancelled (the server kills the run at once)
        where the server does not know the run or does not answer in time."""
        import grpc

        from ..proto import dcodex_pb2 as pb

        if done.is_set():
            return
        cancel_sent.set()
        try:
            found = stub.Cancel(pb.CancelRequest(run_id=run_id), timeout=CANCEL_GRACE_S,
                                metadata=self._metadata).found
        except grpc.RpcError:  # UNIMPLEMENTED: a DCodeX server, or an older one of ours
            found = False
        if not found or not done.wait(CANCEL_GRACE_S):
            call.cancel()

    def _read(self, call, cancelled: threading.Event, digests: dict, *, started_ok: bool):
        """Yield the events of a call's ExecutionLogs, then its one Result; return True when
        the server said the session workspace is stale, None when a Session met a server
        without it (UNIMPLEMENTED before any message: nothing yielded), else False. A server
        that sends no status (DCodeX itself) has its Result read from DCodeX's conventions."""
        import grpc

        from ..proto.convert import dcodex_result, events_from_pb

        result, last, stderr = None, None, []
        try:
            for log in call:
                if log.workspace_stale:
                    call.cancel()
                    self._uploaded_now({}, None)
                    return True
                last = log
                stderr.append(log.stderr_chunk)
                for event in events_from_pb(log):
                    if isinstance(event, Result):
                        result = event
                    else:
                        yield event
            if result is not None:
                self._uploaded_now(digests, result)
            elif last is not None and not cancelled.is_set():  # a DCodeX server (no status)
                result = dcodex_result(last, "".join(stderr))
            elif cancelled.is_set():
                result = Result(Status.CANCELLED, "Interrupted")
            else:
                result = Result(Status.INTERNAL_ERROR, f"DCodeX server at {self.address} ended "
                                "the stream without a result")
        except grpc.RpcError as e:
            if started_ok and e.code() is grpc.StatusCode.UNIMPLEMENTED and last is None:
                return None
            result = self._failure(e)
            if cancelled.is_set():
                result = Result(Status.CANCELLED, "Interrupted")
        finally:
            if result is None:  # the consumer stopped early: the server kills the run
                call.cancel()
        yield result
        return False

    def metrics(self, timeout: float = 3.0):
        """The server's SystemMetrics (raises grpc.RpcError when it cannot be had)."""
        from ..proto import dcodex_pb2 as pb

        return self._stub().GetSystemMetrics(pb.EmptyRequest(), timeout=timeout,
                                             metadata=self._metadata)

    def describe(self) -> dict:
        info = {"backend": "remote", "server": self.address,
                "security": ", ".join(["TLS" if self.tls_ca else "no TLS",
                                       "token" if self.token else "no token"])}
        try:
            import grpc

            try:
                m = self.metrics()
            except grpc.RpcError as e:
                info["status"] = self._failure(e).message
                return info
        except ImportError as e:
            info["status"] = f"grpcio is not installed: {e}"
            return info
        info.update({
            "version": m.version or "unknown (not a DCodeX Kernel server)",
            "isolation": list(m.isolation), "degraded": list(m.degraded),
            "workers": f"{m.active_workers} active, {m.idle_workers} idle, {m.queued_requests} "
                       f"queued (queue {m.queue_length})",
            "max limits": _show_limits(m.max_limits),
            "defaults": _show_limits(m.default_limits),
        })
        return info


class _Watcher:
    """Runs an action when a run's CancelToken fires, for every Execute run of the process, from
    one thread (a watching thread per run cost ~0.1 ms of CPU each). Each action fires at most
    once and must not block."""

    def __init__(self):
        self._lock = threading.Lock()
        self._actions: dict[int, tuple[CancelToken, object]] = {}
        self._pid = None

    def watch(self, token: CancelToken, action) -> int:
        fd = token.fileno()
        with self._lock:
            if self._pid != os.getpid():  # first use (or a forked child): a thread of our own
                self._pid, self._epoll, self._actions = os.getpid(), select.epoll(), {}
                threading.Thread(target=self._loop, args=(self._epoll,), daemon=True,
                                 name="dcodex-remote-watch").start()
            self._actions[fd] = (token, action)
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except FileExistsError:  # the number of a closed token, left in the set
                self._epoll.modify(fd, select.EPOLLIN)
        return fd

    def unwatch(self, token: CancelToken, fd: int) -> None:
        with self._lock:
            if self._actions.get(fd, (None,))[0] is token:
                del self._actions[fd]
                try:
                    self._epoll.unregister(fd)
                except (OSError, ValueError):  # closed already: epoll dropped it
                    pass

    def _loop(self, epoll) -> None:
        while True:
            for fd, _ in epoll.poll():
                with self._lock:
                    token, action = self._actions.get(fd, (None, None))
                    if token is None or not token.cancelled:  # a number since reused
                        continue
                    del self._actions[fd]
                    try:
                        epoll.unregister(fd)
                    except (OSError, ValueError):
                        pass
                action()


_WATCHER = _Watcher()


def grpc_target(address: str) -> str:
    """A gRPC target for `address`: HOST:PORT, a comma-separated list of IPv4 HOST:PORTs (one
    channel over all of them), or any gRPC target such as dns:///name:port as it is."""
    if "," in address and ":/" not in address and not address.startswith(("ipv4:", "ipv6:")):
        return "ipv4:" + ",".join(part.strip() for part in address.split(","))
    return address


def _show_limits(limits) -> str:
    from ..request import format_size

    return (f"wall {limits.wall_time_s:g} s, cpu {limits.cpu_time_s:g} s, memory "
            f"{format_size(limits.memory_bytes) if limits.memory_bytes else '?'}, output "
            f"{format_size(limits.output_bytes) if limits.output_bytes else '?'}")

