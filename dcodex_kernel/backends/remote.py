"""The remote backend: send a Request to a `dcodex serve` (or any DCodeX Kernel server) and turn
its ExecutionLog stream back into the same Events the local backend yields.

The run goes over the bidirectional `Session` RPC: the request first, then what the caller's
StdinFeed gives (stdin chunks, the end of input) when the run is interactive, and, if the
CancelToken fires, a cancel message, which the server answers with the run's Result once nothing of it is
left. A server that does not answer a cancel in time, or a consumer that stops reading, has the
RPC itself cancelled (the server kills the run then too). Whatever goes wrong on the way, the
caller gets exactly one Result: an unreachable server is one `internal_error` naming it.
"""

from __future__ import annotations

import hashlib
import json
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
        self._channel = None
        self._lock = threading.Lock()
        self._plain = False  # the server has no Session RPC (a DCodeX server): use Execute
        # This front door's session on the server (sessions.py): its workspace files are sent
        # once and then only when they change; `_uploaded` is what the server was sent (name ->
        # digest), empty when the next upload must be the whole workspace.
        self.session_id = secrets.token_urlsafe(24)
        self._uploaded: dict[str, str] = {}

    # -- plumbing ------------------------------------------------------------------------------

    def _stub(self):
        import grpc

        from ..proto import dcodex_pb2_grpc as pb_grpc

        with self._lock:
            if self._channel is None:
                # A connection attempt that gets no answer gives up after connect_timeout (a
                # refused one at once); calls then fail UNAVAILABLE (wait_for_ready=False).
                options = [("grpc.max_receive_message_length", 64 << 20),
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
            return pb_grpc.CodeExecutorStub(self._channel), self._channel

    def _metadata(self):
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

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
            import grpc

            from ..proto import dcodex_pb2 as pb
            from ..proto.convert import events_from_pb
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
        if self._plain:
            yield from self._execute_plain(message, cancel)
            return False
        stub, _ = self._stub()
        done = threading.Event()  # the response stream is over
        cancel_sent = threading.Event()
        started = False

        interactive = feed is not None and not request.stdin and not request.cases
        message.stream_stdin = interactive

        def messages():  # consumed by a gRPC thread, which may block here
            yield pb.ClientMessage(request=message)
            watched = [fd.fileno() for fd in (cancel, feed if interactive else None) if fd]
            while not done.is_set():
                if not watched:
                    done.wait()
                    return
                try:
                    ready, _, _ = select.select(watched, [], [], 0.2)
                except (OSError, ValueError):  # a token/feed was closed: the run is over
                    return
                if interactive and feed.fileno() in ready:  # the user's input, to the server
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

        call = stub.Session(messages(), metadata=self._metadata(), wait_for_ready=False)
        result, stale = None, False
        try:
            for log in call:
                started = True
                if log.workspace_stale:
                    stale = True
                    break
                for event in events_from_pb(log):
                    if isinstance(event, Result):
                        result = event
                    else:
                        yield event
            if stale:
                pass
            elif result is None and cancel_sent.is_set():
                result = Result(Status.CANCELLED, "Interrupted")
            elif result is None:
                result = Result(Status.INTERNAL_ERROR, f"DCodeX server at {self.address} ended "
                                "the stream without a result")
        except grpc.RpcError as e:
            if e.code() is grpc.StatusCode.UNIMPLEMENTED and not started:
                self._plain = True  # a DCodeX server: it knows only Execute
            else:
                result = self._failure(e)
                if cancel_sent.is_set() or (cancel is not None and cancel.cancelled):
                    result = Result(Status.CANCELLED, "Interrupted")
        finally:
            done.set()
            if result is None and not self._plain:  # the consumer stopped early (or stale)
                call.cancel()  # the server kills the run
        if stale:
            self._uploaded_now({}, None)
            return True
        if result is None:
            message, digests = self._wire(request, resend=True)
            yield from self._execute_plain(message, cancel)
            return False
        self._uploaded_now(digests, result)
        yield result
        return False

    def _execute_plain(self, message, cancel: CancelToken | None):
        """Execute, for a server that has no Session (DCodeX itself, which ignores workspace
        files): a cancel cancels the call, and a server that sends no status has its Result read
        from DCodeX's conventions."""
        import grpc

        from ..proto.convert import dcodex_result, events_from_pb

        stub, _ = self._stub()
        call = stub.Execute(message, metadata=self._metadata(), wait_for_ready=False)
        done = threading.Event()

        def watch():
            while not done.is_set():
                try:
                    ready, _, _ = select.select([cancel.fileno()], [], [], 0.2)
                except (OSError, ValueError):
                    return
                if ready and not done.is_set():
                    call.cancel()
                    return

        if cancel is not None:
            threading.Thread(target=watch, name="dcodex-remote-cancel", daemon=True).start()
        result, last, stderr = None, None, []
        try:
            for log in call:
                last = log
                stderr.append(log.stderr_chunk)
                for event in events_from_pb(log):
                    if isinstance(event, Result):
                        result = event
                    else:
                        yield event
            if result is None:
                result = dcodex_result(last, "".join(stderr)) if last is not None else Result(
                    Status.INTERNAL_ERROR, f"DCodeX server at {self.address} sent nothing")
        except grpc.RpcError as e:
            result = self._failure(e)
            if cancel is not None and cancel.cancelled:
                result = Result(Status.CANCELLED, "Interrupted")
        finally:
            done.set()
            if result is None:
                call.cancel()
        yield result

    def metrics(self, timeout: float = 3.0):
        """The server's SystemMetrics (raises grpc.RpcError when it cannot be had)."""
        from ..proto import dcodex_pb2 as pb

        stub, _ = self._stub()
        return stub.GetSystemMetrics(pb.EmptyRequest(), timeout=timeout, metadata=self._metadata())

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

