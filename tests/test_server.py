"""The remote half: `dcodex serve` (a real server on a free 127.0.0.1 port), the DCodeX wire
protocol, and RemoteBackend behaving like the local backend."""

from __future__ import annotations

import collections
import filecmp
import os
import subprocess
import sys

import pytest

from dcodex_kernel.proto import generate


def test_generated_code_is_what_the_proto_gives(tmp_path):
    """The committed *_pb2 modules are exactly what `python -m dcodex_kernel.proto.generate`
    writes from dcodex.proto with the pinned grpcio-tools."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a test extra) is not installed")
    for fresh in generate.generate(str(tmp_path)):
        committed = os.path.join(generate.HERE, os.path.basename(fresh))
        assert filecmp.cmp(fresh, committed, shallow=False), \
            f"{committed} is stale: run python -m dcodex_kernel.proto.generate"


def test_importing_the_package_and_backends_pulls_in_no_grpc():
    code = ("import sys, dcodex_kernel, dcodex_kernel.backends, dcodex_kernel.cli\n"
            "print(sorted(m for m in sys.modules if m.startswith(('grpc', 'google'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_dcodex_names_and_numbers_are_kept():
    from dcodex_kernel.proto import dcodex_pb2 as pb

    def numbers(message):
        return {f.name: f.number for f in message.DESCRIPTOR.fields if f.number < 10 or
                message is pb.SystemMetrics and f.number < 12}

    assert pb.DESCRIPTOR.package == "dcodex"
    service = pb.DESCRIPTOR.services_by_name["CodeExecutor"]
    assert service.methods_by_name["Execute"].input_type.name == "CodeRequest"
    assert service.methods_by_name["Execute"].server_streaming
    assert service.methods_by_name["GetSystemMetrics"].output_type.name == "SystemMetrics"
    assert numbers(pb.CodeRequest) == {"language": 1, "code": 2, "stdin_data": 3}
    assert numbers(pb.ExecutionLog) == {
        "stdout_chunk": 1, "stderr_chunk": 2, "peak_memory_bytes": 3, "execution_time_ms": 4,
        "cache_hit": 5, "wall_clock_timeout": 6, "output_truncated": 7}
    assert numbers(pb.SystemMetrics) == {
        "active_workers": 1, "idle_workers": 2, "recycling_workers": 3, "current_pool_size": 4,
        "total_requests_served": 5, "p50_latency_ms": 6, "p99_latency_ms": 7, "cache_hits": 8,
        "cache_misses": 9, "peak_memory_usage_bytes": 10, "cpu_load_average": 11}
    assert pb.ExecutionLog.DESCRIPTOR.fields_by_name["execution_time_ms"].type == \
        pb.ExecutionLog.DESCRIPTOR.fields_by_name["execution_time_ms"].TYPE_FLOAT
    assert 4 not in {f.number for f in pb.CodeRequest.DESCRIPTOR.fields}


# ---------------------------------------------------------------------------------------------
# servers: real `dcodex serve` subprocesses on free 127.0.0.1 ports

import json
import re
import select
import shutil
import signal
import textwrap
import threading
import time

import grpc

from dcodex_kernel.backends.remote import RemoteBackend
from dcodex_kernel.cancel import CancelToken
from dcodex_kernel.events import Output, Status, collect
from dcodex_kernel.interactive import StdinFeed
from dcodex_kernel.proto import dcodex_pb2 as pb
from dcodex_kernel.proto import dcodex_pb2_grpc as pb_grpc
from dcodex_kernel.request import Limits, Request

from .support import alive, ipython_shell, is_prestarted, is_sandbox_uid, wait_until

DCODEX = [sys.executable, "-m", "dcodex_kernel"]
PROTO_DIR = generate.HERE


class Served:
    """A `dcodex serve` subprocess: its address, then `stop()` (SIGTERM, and wait)."""

    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen([*DCODEX, "serve", "--port", "0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})})
        line = self._line(30)
        m = re.search(r"listening on (\S+)", line)
        if not m:
            self.proc.kill()
            raise AssertionError(f"dcodex serve did not start: {line}{self.proc.stderr.read()}")
        self.address = m.group(1)
        health = re.search(r"health service also on (\S+?),", line)
        self.health_address = health.group(1) if health else None

    def _line(self, timeout):
        ready, _, _ = select.select([self.proc.stderr], [], [], timeout)
        return self.proc.stderr.readline() if ready else ""

    def stop(self, timeout=30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server():
    # DCodeX's defaults for requests that set no limit; at most 2 s wall and CPU for any.
    served = Served("--max-concurrent", "4", "--queue-length", "16",
                    "--max-timeout", "2", "--max-cpu-time", "2")
    yield served
    assert served.stop() == 0


@pytest.fixture(scope="module")
def remote(server):
    backend = RemoteBackend(server.address)
    yield backend
    backend.close()


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.CodeExecutorStub(channel)


def sandbox_processes():
    """Live processes of runs below this test process (its servers' runs among them); not
    support.sandbox_processes(), which as root also counts other engines' runs on the machine."""
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if alive(p) and not is_prestarted(p) and (p.name().startswith("dcodex-launch") or is_sandbox_uid(p)):
                found.append(p)
        except psutil.Error:
            pass
    return found


def no_sandbox_left(timeout=3.0):
    return wait_until(lambda: not sandbox_processes(), timeout)


def first_line(events) -> str:
    """The Output of `events` up to its first newline. (Python's print writes the text and the
    newline apart: a loaded machine may deliver them as two chunks.)"""
    text = ""
    while "\n" not in text:
        event = next(events)
        assert isinstance(event, Output), event
        text += event.text
    return text


def request(language, code, **limits):
    return Request(language, textwrap.dedent(code), limits=Limits(**limits))


def test_output_streams_while_the_program_runs(remote):
    code = """\
        import time
        print("first", flush=True)
        time.sleep(0.6)
        print("second", flush=True)
        """
    seen = []
    for event in remote.execute(request("python", code, wall_s=2)):
        seen.append((time.monotonic(), event))
    (t1, first), (t2, second), (t3, result) = seen
    assert (first.text, second.text) == ("first\n", "second\n")
    assert result.ok and result.exit_code == 0 and result.peak_memory > 0
    assert t3 - t1 >= 0.5, "the first chunk arrived only with the end of the run"
    assert "pid-namespace" in result.isolation


def test_a_runs_closing_output_comes_in_its_last_message_to_a_client_that_reads_it(server):
    """Our client sets output_in_result: the stdout read after the program ended (here, at
    least the incomplete UTF-8 sequence the decoder gives up on at the very end) rides in the
    Result's message. A client that does not set it gets every chunk apart, as DCodeX sends."""
    code = '#include <stdio.h>\nint main(void) { fputs("hello \\xc3", stdout); return 0; }\n'
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.CodeExecutorStub(channel)
        for fold in (True, False):
            logs = list(stub.Execute(pb.CodeRequest(language="c", code=code, output_in_result=fold)))
            assert logs[-1].status == pb.OK
            assert "".join(m.stdout_chunk for m in logs) == "hello \ufffd"
            assert logs[-1].stdout_chunk.endswith("\ufffd") if fold else logs[-1].stdout_chunk == ""
    result = collect(RemoteBackend(server.address).execute(Request("c", code)))
    assert result.ok and result.stdout == "hello \ufffd"


CASES = {
    "ok": ("c", '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n', {}),
    "compile_error": ("c", "int main(void) { return 0 }\n", {}),
    "runtime_error": ("python", "import sys\nprint('bye')\nsys.exit(3)\n", {}),
    "signaled": ("c", "int main(void) { return *(volatile int *)0; }\n", {}),
    "time_limit": ("c", "int main(void) { for (;;); }\n", {"cpu_s": 0.5}),
    "wall_timeout": ("python", "import time\ntime.sleep(30)\n", {"wall_s": 0.5}),
    "memory_limit": ("python", "x = bytearray(300 << 20)\nprint(len(x))\n", {"memory": 64 << 20}),
    "output_limit": ("python", "while True: print('y' * 100)\n", {"output": 4096}),
    "rejected": ("c", "int main(void) { return 0; }\0\n", {}),
}


@pytest.mark.parametrize("expected", list(CASES))
def test_every_status_as_with_the_local_backend(expected, remote, backend):
    language, code, limits = CASES[expected]
    req = Request(language, code, limits=Limits(**{"wall_s": 2.0, "cpu_s": 2.0, **limits}))
    there = collect(remote.execute(req))
    here = collect(backend.execute(req))
    assert there.status.value == expected, there
    assert here.status is there.status
    for name in ("exit_code", "signal", "truncated", "stdout"):
        assert getattr(there, name) == getattr(here, name), name
    assert there.message.split(" (")[0] == here.message.split(" (")[0]
    if expected == "output_limit":
        assert "[Output truncated: exceeded 4 KB limit]" in there.stderr
    if expected == "compile_error":
        assert "error" in there.message


def test_test_cases_run_remotely_as_locally(remote, backend):
    from dcodex_kernel.verdicts import Case

    req = Request("python", "print(int(input()) * 2)\n", limits=Limits(wall_s=2, cpu_s=2),
                  cases=(Case("two", "2\n", "4\n"), Case("three", "3\n", "7\n"),
                         Case("bad", "x\n", "0\n")))
    there, here = collect(remote.execute(req)), collect(backend.execute(req))
    assert there.status is here.status is Status.RUNTIME_ERROR and there.message == here.message
    assert [(c.name, c.verdict, c.message) for c in there.cases] == \
        [(c.name, c.verdict, c.message) for c in here.cases]
    assert [c.verdict for c in there.cases] == ["accepted", "wrong_answer", "runtime_error"]
    assert there.cases[2].exit_code == 1 and there.cases[0].peak_memory > 0


def test_cancel_kills_the_program_and_ends_cancelled(remote):
    token = CancelToken()
    events = remote.execute(request("python", "import time\nprint('up', flush=True)\ntime.sleep(30)\n",
                                    wall_s=2), token)
    assert first_line(events) == "up\n"
    start = time.monotonic()
    token.cancel()
    result = list(events)[-1]
    token.close()
    assert result.status is Status.CANCELLED, result
    assert time.monotonic() - start < 1.5
    # The server's own Result (its Cancel answered once the run was over), not one the client
    # made up after cancelling the call: it has the run's figures, and nothing of the run is left.
    assert result.wall_s > 0.01 and result.isolation
    assert not sandbox_processes()


def test_cancel_rpc_stops_the_named_run_of_its_own_client_only(tmp_path):
    """Execute with a run_id: a Cancel naming it (same token) ends the stream with the run's
    CANCELLED Result once nothing of it is left; another token's Cancel finds nothing, and a
    second run may not take a name in use."""
    tokens = tmp_path / "tokens"
    tokens.write_text("alice-token\nbob-token\n")
    served = Served("--token-file", str(tokens))
    alice, bob = [(("authorization", f"Bearer {who}-token"),) for who in ("alice", "bob")]
    try:
        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.CodeExecutorStub(channel)
            code = "import sys, time\nsys.stdout.write('up\\n'); sys.stdout.flush()\ntime.sleep(30)\n"
            call = stub.Execute(pb.CodeRequest(language="python", code=code, run_id="r1",
                                               limits=pb.Limits(wall_time_s=20)), metadata=alice)
            assert next(call).stdout_chunk == "up\n"
            with pytest.raises(grpc.RpcError) as e:
                list(stub.Execute(pb.CodeRequest(language="python", code="print(1)", run_id="r1"),
                                  metadata=alice))
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "in use" in e.value.details()
            assert not stub.Cancel(pb.CancelRequest(run_id="r1"), metadata=bob).found
            assert sandbox_processes()
            start = time.monotonic()
            assert stub.Cancel(pb.CancelRequest(run_id="r1"), metadata=alice).found
            last = list(call)[-1]
            assert last.status == pb.CANCELLED and time.monotonic() - start < 1.5
            assert not sandbox_processes()
            assert not stub.Cancel(pb.CancelRequest(run_id="r1"), metadata=alice).found
            with pytest.raises(grpc.RpcError) as e:  # Cancel needs a token like every run
                stub.Cancel(pb.CancelRequest(run_id="r1"))
            assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert served.stop() == 0


def test_a_run_that_cannot_ask_for_input_goes_one_way():
    """RemoteBackend uses the one-way Execute (named, for Cancel) unless the run can ask for
    input (an answerer, and neither stdin nor cases given): then the bidirectional Session."""
    from concurrent import futures

    called = []
    ok = pb.ExecutionLog(status=pb.OK, exit_code=0, peak_memory_bytes=1, execution_time_ms=1)

    class Recording(pb_grpc.CodeExecutorServicer):
        def Execute(self, req, context):
            called.append(("Execute", bool(req.run_id), req.stream_stdin))
            yield ok

        def Session(self, messages, context):
            called.append(("Session", bool(next(messages).request.run_id), True))
            yield ok

    served = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_CodeExecutorServicer_to_server(Recording(), served)
    port = served.add_insecure_port("127.0.0.1:0")
    served.start()
    try:
        client = RemoteBackend(f"127.0.0.1:{port}")
        hello = request("python", "print('hi')")
        with CancelToken() as token, StdinFeed() as feed:
            assert collect(client.execute(hello, token)).ok
            assert collect(client.execute(hello, token, feed)).ok
            assert collect(client.execute(Request(hello.language, hello.code, stdin=b"x"),
                                          token, feed)).ok
        assert called == [("Execute", True, False), ("Session", False, True),
                          ("Execute", True, False)]
        client.close()
    finally:
        served.stop(0)


def test_unreachable_server_is_one_clear_result():
    start = time.monotonic()
    events = list(RemoteBackend("127.0.0.1:1").execute(request("c", "int main(void){}")))
    assert time.monotonic() - start < 6
    assert len(events) == 1 and events[0].status is Status.INTERNAL_ERROR
    assert events[0].message.startswith("cannot reach DCodeX server at 127.0.0.1:1: ")


def test_a_server_that_never_answers_is_one_clear_result_too():
    import socket

    with socket.socket() as mute:  # accepts connections (the kernel's backlog), says nothing
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        address = "127.0.0.1:%d" % mute.getsockname()[1]
        start = time.monotonic()
        events = list(RemoteBackend(address, connect_timeout=1).execute(request("c", "int main(void){}")))
        assert time.monotonic() - start < 4
    assert len(events) == 1 and events[0].status is Status.INTERNAL_ERROR
    assert events[0].message.startswith(f"cannot reach DCodeX server at {address}: ")


def test_requests_are_clamped_to_the_servers_maxima(remote):
    result = collect(remote.execute(request("python", "import time\ntime.sleep(30)\n",
                                            wall_s=30, cpu_s=30)))
    assert result.status is Status.WALL_TIMEOUT
    assert result.message == "Wall-clock limit of 2 s exceeded"
    assert result.wall_s < 3


def test_result_cache_replays_successful_runs_and_can_be_refused(stub):
    code = "import time\nprint(time.time_ns())\n"
    first = list(stub.Execute(pb.CodeRequest(language="python", code=code)))
    again = list(stub.Execute(pb.CodeRequest(language="python", code=code)))
    fresh = list(stub.Execute(pb.CodeRequest(language="python", code=code, cache=False)))
    text = lambda logs: "".join(m.stdout_chunk for m in logs)
    assert not first[-1].cache_hit and again[-1].cache_hit and not fresh[-1].cache_hit
    assert text(first) == text(again) != text(fresh)
    # A failed run is never replayed.
    failing = pb.CodeRequest(language="python", code="import sys\nsys.exit(1)\n")
    assert not any(list(stub.Execute(failing))[-1].cache_hit for _ in range(2))
    metrics = stub.GetSystemMetrics(pb.EmptyRequest())
    assert metrics.cache_hits >= 1 and metrics.cache_misses >= 3


REPLAYED = ", replayed from the server's result cache)"


def test_a_replayed_result_is_told_apart_from_a_cached_build(tmp_path):
    """`cached` (this run reused a compiled program) and `replayed` (the server's result cache
    answered; nothing ran) each say what happened, on the wire and in every front door's summary.
    A server of its own, with its own build cache, so which run builds is known."""
    from IPython.utils.capture import capture_output

    served = Served(env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "DCODEX_PCH": "0"})
    remote = RemoteBackend(served.address)
    echo_c = ('#include <stdio.h>\n'
              'int main(void) { int n; if (scanf("%d", &n) == 1) printf("%d\\n", 2 * n); }\n')
    try:
        def c(stdin):
            return collect(remote.execute(Request("c", echo_c, stdin=stdin)))

        built, reused, replayed = c(b"1"), c(b"2"), c(b"1")
        assert (built.stdout, reused.stdout, replayed.stdout) == ("2\n", "4\n", "2\n")
        assert [(r.cached, r.replayed) for r in (built, reused, replayed)] == \
            [(False, False), (True, False), (False, True)]
        assert "cached build" not in built.summary() and "replayed" not in built.summary()
        assert reused.summary().endswith(", cached build)")
        assert replayed.summary().endswith(REPLAYED) and "cached build" not in replayed.summary()
        assert replayed.to_dict()["replayed"] is True
        # Python builds nothing: never "cached build", first fresh, then replayed.
        fresh, again = (collect(remote.execute(Request("python", "print('py')\n"))) for _ in range(2))
        assert (fresh.cached, fresh.replayed, again.cached, again.replayed) == (False, False, False, True)
        assert fresh.summary().endswith("MiB peak)") and again.summary().endswith(REPLAYED)
        # On the wire: a replay is DCodeX's cache_hit and built nothing; a client that knows only
        # `build_cached or cache_hit` (before `replayed`) still sees it as cached.
        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.CodeExecutorStub(channel)
            wire = pb.CodeRequest(language="c", code=echo_c, stdin_data="3")
            first, last = (list(stub.Execute(wire))[-1] for _ in range(2))
        assert first.build_cached and not first.cache_hit
        assert last.cache_hit and not last.build_cached

        # dcodex run: the summary line on stderr, `replayed` in --json.
        program = tmp_path / "twice.py"
        program.write_text("print('cli')\n")
        cli = [*DCODEX, "run", str(program), "--server", served.address]
        first, second = (subprocess.run(cli, capture_output=True, text=True, timeout=60,
                                        stdin=subprocess.DEVNULL) for _ in range(2))
        assert first.returncode == second.returncode == 0 and second.stdout == "cli\n", second.stderr
        assert "replayed" not in first.stderr and "cached build" not in first.stderr
        assert second.stderr.strip().endswith(REPLAYED), second.stderr
        doc = json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=60,
                                        stdin=subprocess.DEVNULL).stdout)
        assert (doc["replayed"], doc["cached"]) == (True, False)

        # The magics: the printed summary and the Result.
        ip = ipython_shell()
        ip.run_line_magic("load_ext", "dcodex_kernel")
        try:
            for _ in range(2):
                with capture_output() as shown:
                    ip.run_cell_magic("dcodex", f"c --server {served.address} --stdin 5 --out res", echo_c)
            assert ip.user_ns["res"].replayed and ip.user_ns["res"].stdout == "10\n"
            assert shown.stdout.startswith("10\n") and shown.stdout.strip().endswith(REPLAYED), shown.stdout
        finally:
            ip.run_line_magic("unload_ext", "dcodex_kernel")

        # A kernel: an ok cell shows no summary; its execute_reply metadata carries both flags.
        from . import kernel_support as ks

        km, kc = ks.start_kernel("dcodex-python", env={"DCODEX_SERVER": served.address})
        try:
            cells = [ks.execute(kc, "print('kernel')") for _ in range(2)]
            assert [c.text("stdout") for c in cells] == ["kernel\n"] * 2
            assert [(c.result["cached"], c.result["replayed"]) for c in cells] == \
                [(False, False), (False, True)]
        finally:
            ks.stop_kernel(km, kc)
    finally:
        remote.close()
        assert served.stop() == 0


def test_size_caps_are_invalid_argument(stub):
    bad = {
        "code": pb.CodeRequest(language="c", code="x" * ((1 << 20) + 1)),
        "stdin": pb.CodeRequest(language="python", code="pass", stdin_bytes=b"x" * ((8 << 20) + 1)),
        "flags": pb.CodeRequest(language="c", code="int main(){}", cflags=["-O2"] * 300),
        "flag": pb.CodeRequest(language="c", code="int main(){}", cflags=["-D" + "x" * 5000]),
        "language": pb.CodeRequest(language="fortran", code="end"),
        "limit": pb.CodeRequest(language="c", code="int main(){}", limits=pb.Limits(memory_bytes=-1)),
    }
    for what, message in bad.items():
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Execute(message))
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT, what
        assert e.value.details(), what


def test_metrics_and_health_are_real(stub, server):
    list(stub.Execute(pb.CodeRequest(language="python", code="print(1)", cache=False)))
    m = stub.GetSystemMetrics(pb.EmptyRequest())
    assert m.current_pool_size == 4 and m.active_workers + m.idle_workers == 4
    assert m.total_requests_served >= 1 and 0 < m.p50_latency_ms <= m.p99_latency_ms
    assert m.peak_memory_usage_bytes > 0 and m.cpu_load_average >= 0
    assert m.max_limits.wall_time_s == 2 and m.default_limits.wall_time_s == 2
    assert m.default_limits.memory_bytes == 4 << 30 and m.default_limits.output_bytes == 10240
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "dcodex.CodeExecutor"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


CLIENT = r'''
import json, sys, time
sys.path[:0] = [sys.argv[2]]
import grpc, dcodex_pb2 as pb  # the generated DCodeX messages, nothing else of the project

channel = grpc.insecure_channel(sys.argv[1])
execute = channel.unary_stream("/dcodex.CodeExecutor/Execute",
                               request_serializer=pb.CodeRequest.SerializeToString,
                               response_deserializer=pb.ExecutionLog.FromString)
metrics = channel.unary_unary("/dcodex.CodeExecutor/GetSystemMetrics",
                              request_serializer=pb.EmptyRequest.SerializeToString,
                              response_deserializer=pb.SystemMetrics.FromString)
def run(language, code, stdin=""):
    start, logs = time.monotonic(), []
    for log in execute(pb.CodeRequest(language=language, code=code, stdin_data=stdin)):
        logs.append((time.monotonic() - start, log))
    last = logs[-1][1]
    return {"stdout": "".join(l.stdout_chunk for _, l in logs),
            "stderr": "".join(l.stderr_chunk for _, l in logs),
            "first_chunk_s": next((t for t, l in logs if l.stdout_chunk), None),
            "end_s": logs[-1][0], "peak": last.peak_memory_bytes, "ms": last.execution_time_ms,
            "cache_hit": last.cache_hit, "wall_clock_timeout": last.wall_clock_timeout,
            "truncated": last.output_truncated}
out = {
    "hello": run("cpp", '#include <iostream>\nint main() { std::string s; std::cin >> s; std::cout << "hi " << s << std::endl; }', "you\n"),
    "stream": run("python", "import time\nprint('a', flush=True)\ntime.sleep(0.5)\nprint('b')"),
    "wall": run("python", "import time\ntime.sleep(30)"),
    "signal": run("c", "int main(void) { return *(volatile int *)0; }"),
    "exit": run("python", "import sys\nsys.exit(4)"),
    "big": run("python", "print('z' * 20000)"),
    "bytes": run("python", "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe ok\\n')"),
}
out["again"] = run("cpp", '#include <iostream>\nint main() { std::string s; std::cin >> s; std::cout << "hi " << s << std::endl; }', "you\n")
m = metrics(pb.EmptyRequest())
out["metrics"] = {"served": m.total_requests_served, "pool": m.current_pool_size}
print(json.dumps(out))
'''


def test_a_plain_dcodex_client_gets_the_dcodex_conventions(server):
    """A client built from the DCodeX messages alone (grpc + dcodex_pb2, not the project)."""
    proc = subprocess.run([sys.executable, "-I", "-c", CLIENT, server.address, PROTO_DIR],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    hello = out["hello"]
    assert hello["stdout"] == "hi you\n" and hello["stderr"] == ""
    assert hello["peak"] > 0 and hello["ms"] > 0 and not hello["cache_hit"]
    assert out["again"]["cache_hit"] and out["again"]["stdout"] == "hi you\n"
    assert out["stream"]["end_s"] - out["stream"]["first_chunk_s"] >= 0.4
    assert out["wall"]["wall_clock_timeout"]  # DCodeX's default: 2 s of wall clock
    assert "ERROR: Wall-clock timeout exceeded" in out["wall"]["stderr"]
    assert 1.9 < out["wall"]["ms"] / 1000 < 3
    assert "ERROR: Process killed by signal: 11" in out["signal"]["stderr"]
    assert "ERROR: Process exited with non-zero status: 4" in out["exit"]["stderr"]
    big = out["big"]  # DCodeX's default output cap: 10240 bytes
    assert big["truncated"] and "[Output truncated: exceeded 10 KB limit]" in big["stderr"]
    assert len(big["stdout"]) == 10240
    assert out["bytes"]["stdout"] == "\ufffd\ufffd ok\n"
    assert out["metrics"]["pool"] == 4 and out["metrics"]["served"] >= 8


def test_dcodex_server_flag_names_and_defaults():
    """`dcodex serve` takes DCodeX's own flag names, with DCodeX's defaults when none is given."""
    from dcodex_kernel import cli

    def config(*args):
        return cli.serve_config(cli.build_parser().parse_args(["serve", *args]), environ={})

    plain = config()
    assert (plain.port, plain.max_concurrent) == (50051, 10)
    d = plain.defaults
    assert (d.cpu_s, d.wall_s, d.memory, d.output) == (1.0, 2.0, 4 << 30, 10240)
    served = Served("--max_concurrent_sandboxes", "3", "--sandbox_cpu_time_limit_seconds", "0.5",
                    "--sandbox_wall_clock_timeout_seconds", "1.5",
                    "--sandbox_memory_limit_bytes", "268435456", "--sandbox_max_output_bytes", "2048")
    try:
        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.CodeExecutorStub(channel)
            m = stub.GetSystemMetrics(pb.EmptyRequest(), timeout=5)
            assert m.current_pool_size == 3
            assert (m.default_limits.cpu_time_s, m.default_limits.wall_time_s) == (0.5, 1.5)
            assert (m.default_limits.memory_bytes, m.default_limits.output_bytes) == (256 << 20, 2048)
            # A request that sets no limit gets them.
            slow = list(stub.Execute(pb.CodeRequest(language="python", code="import time\ntime.sleep(9)")))
            assert slow[-1].wall_clock_timeout and slow[-1].message == "Wall-clock limit of 1.5 s exceeded"
            big = list(stub.Execute(pb.CodeRequest(language="python", code="print('x' * 5000)")))
            assert big[-1].output_truncated and len("".join(m.stdout_chunk for m in big)) == 2048
    finally:
        assert served.stop() == 0


def test_a_token_is_required_when_the_server_has_one(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    served = Served("--token-file", str(token_file))
    try:
        hello = request("python", "print('hi')")
        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.CodeExecutorStub(channel)
            for metadata in ((), (("authorization", "Bearer wrong"),),
                             (("authorization", "s3cret-token"),)):
                with pytest.raises(grpc.RpcError) as e:
                    list(stub.Execute(pb.CodeRequest(language="python", code="print(1)"),
                                      metadata=metadata))
                assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError):
                    stub.GetSystemMetrics(pb.EmptyRequest(), metadata=metadata)
            from grpc_health.v1 import health_pb2, health_pb2_grpc  # probes need no token
            assert health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        refused = collect(RemoteBackend(served.address, token="wrong").execute(hello))
        assert refused.status is Status.INTERNAL_ERROR and "refused the token" in refused.message
        ok = collect(RemoteBackend(served.address, token="s3cret-token").execute(hello))
        assert ok.ok and ok.stdout == "hi\n"
    finally:
        assert served.stop() == 0


def _self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        from cryptography import x509  # noqa: F401  only if the venv has it already
    except ImportError:
        if not shutil.which("openssl"):
            pytest.skip("neither the cryptography package nor the openssl command is available "
                        "to make a test certificate")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True, timeout=60)
        return cert, key
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                       critical=False)
                   .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


def test_tls_with_a_token(tmp_path):
    cert, key = _self_signed(tmp_path)
    served = Served("--tls-cert", str(cert), "--tls-key", str(key), env={"DCODEX_TOKEN": "t0k"})
    try:
        hello = request("python", "print('over tls')")
        ok = collect(RemoteBackend(served.address, token="t0k", tls_ca=str(cert)).execute(hello))
        assert ok.ok and ok.stdout == "over tls\n"
        plain = RemoteBackend(served.address, token="t0k", connect_timeout=2)
        assert collect(plain.execute(hello)).status is Status.INTERNAL_ERROR
    finally:
        assert served.stop() == 0


def test_a_plaintext_health_port_for_probes_beside_tls(tmp_path):
    """--health-port: the health service alone, without TLS or token (what Kubernetes' gRPC probes
    can speak); it says NOT_SERVING while the server drains, and carries nothing else."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    cert, key = _self_signed(tmp_path)
    served = Served("--tls-cert", str(cert), "--tls-key", str(key), "--health-port", "0",
                    env={"DCODEX_TOKEN": "t0k"})
    try:
        health_address = served.health_address
        assert health_address and health_address != served.address
        with grpc.insecure_channel(health_address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            for service in ("", "dcodex.CodeExecutor"):
                assert check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
                    health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as e:  # no runs here, with or without a token
                list(pb_grpc.CodeExecutorStub(channel).Execute(
                    pb.CodeRequest(language="python", code="print(1)"),
                    metadata=(("authorization", "Bearer t0k"),), timeout=5))
            assert e.value.code() is grpc.StatusCode.UNIMPLEMENTED
            remote = RemoteBackend(served.address, token="t0k", tls_ca=str(cert))
            running = remote.execute(request("python", "import time\nprint('up', flush=True)\n"
                                             "time.sleep(1)\nprint('done')", wall_s=2))
            assert first_line(running) == "up\n"
            served.proc.send_signal(signal.SIGTERM)
            assert wait_until(lambda: check(health_pb2.HealthCheckRequest(
                service="dcodex.CodeExecutor"), timeout=5).status ==
                health_pb2.HealthCheckResponse.NOT_SERVING, 3.0)
            rest = collect(running)
            assert rest.ok and rest.stdout == "done\n"  # the run in flight finished
            remote.close()
        assert served.proc.wait(10) == 0
    finally:
        served.stop()


def test_a_public_address_needs_token_and_tls(server):
    proc = subprocess.run([*DCODEX, "serve", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "not a loopback address" in proc.stderr and "--insecure" in proc.stderr
    port = server.address.rsplit(":", 1)[1]
    proc = subprocess.run([*DCODEX, "serve", "--port", port], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1 and "cannot listen on 127.0.0.1:" in proc.stderr
    assert "Traceback" not in proc.stderr


DISCONNECTING_CLIENT = r'''
import sys
sys.path[:0] = [sys.argv[2]]
import grpc, dcodex_pb2 as pb
channel = grpc.insecure_channel(sys.argv[1])
execute = channel.unary_stream("/dcodex.CodeExecutor/Execute",
                               request_serializer=pb.CodeRequest.SerializeToString,
                               response_deserializer=pb.ExecutionLog.FromString)
code = "import time\nprint('up', flush=True)\ntime.sleep(30)"
for log in execute(pb.CodeRequest(language="python", code=code, limits=pb.Limits(wall_time_s=30))):
    print(log.stdout_chunk, end="", flush=True)
'''


def test_a_client_that_goes_away_has_its_program_killed(server):
    client = subprocess.Popen([sys.executable, "-I", "-c", DISCONNECTING_CLIENT, server.address,
                               PROTO_DIR], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline() == "up\n"
        assert sandbox_processes(), "the program should be running"
        client.kill()
    finally:
        client.wait()
    assert no_sandbox_left(2.0), sandbox_processes()


def test_cancelling_the_call_kills_the_program(stub):
    # One write (print writes the text and its newline apart: two chunks on a loaded machine).
    call = stub.Execute(pb.CodeRequest(language="python", code="import sys, time\nsys.stdout.write('1\\n')\n"
                                       "time.sleep(30)", limits=pb.Limits(wall_time_s=2)))
    assert next(call).stdout_chunk == "1\n"
    call.cancel()
    assert no_sandbox_left(1.0), sandbox_processes()


# A client whose flow-control window is not grown by BDP probing. (gRPC still takes a lagging
# reader's stream off the server's hands: a client that waited 3 s still got 16 MB. What waits is
# bounded by the run's output cap, not by flow control; the engine thread never waits.)
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0)]


def test_a_stalled_reader_cannot_extend_the_run(server):
    code = "import sys, time\nsys.stdout.write('x' * 900000)\nsys.stdout.flush()\ntime.sleep(30)\n"
    channel = grpc.insecure_channel(server.address, SMALL_WINDOW)
    stub = pb_grpc.CodeExecutorStub(channel)
    call = stub.Execute(pb.CodeRequest(language="python", code=code, limits=pb.Limits(
        wall_time_s=1, output_bytes=1 << 20)))
    time.sleep(0.3)
    assert sandbox_processes()
    # Nothing read: the server's stream is stuck behind flow control, the run is not.
    assert wait_until(lambda: not sandbox_processes(), 3.0), "a stalled reader kept the program"
    logs = list(call)
    assert logs[-1].status == pb.WALL_TIMEOUT and logs[-1].wall_time_s < 1.5
    assert "".join(m.stdout_chunk for m in logs) == "x" * 900000
    channel.close()


def test_a_client_whose_window_stays_shut_cannot_hold_a_short_run(server):
    """A run starts in its RPC's thread (relay.py); a client whose stream window is 1 KiB and
    never reads blocks the second small send. The watchdog moves the run to an engine thread and
    the wall limit holds."""
    code = ("import sys, time\nfor i in range(8):\n    sys.stdout.write(f'{i}' * 500 + '\\n')\n"
            "    sys.stdout.flush()\n    time.sleep(0.01)\ntime.sleep(30)\n")
    channel = grpc.insecure_channel(server.address, [
        *SMALL_WINDOW, ("grpc.http2.lookahead_bytes", 1024)])
    try:
        call = pb_grpc.CodeExecutorStub(channel).Execute(pb.CodeRequest(
            language="python", code=code, limits=pb.Limits(wall_time_s=1)))
        assert wait_until(lambda: sandbox_processes(), 3.0)
        started = time.monotonic()
        assert wait_until(lambda: not sandbox_processes(), 3.0), "a shut window kept the program"
        assert time.monotonic() - started < 1.6
        logs = list(call)
        assert logs[-1].status == pb.WALL_TIMEOUT and logs[-1].wall_time_s < 1.5
        assert "".join(m.stdout_chunk for m in logs) == "".join(f"{i}" * 500 + "\n" for i in range(8))
    finally:
        channel.close()


def test_a_slow_reader_gets_its_output_in_messages_a_dcodex_client_takes():
    """While the reader lags, the server merges output chunks, but never into a message above
    what a default gRPC client accepts (4 MiB)."""
    served = Served("--max-output-limit", "16M")
    try:
        with grpc.insecure_channel(served.address, SMALL_WINDOW) as channel:
            call = pb_grpc.CodeExecutorStub(channel).Execute(pb.CodeRequest(
                language="python", code="import sys\nsys.stdout.write('x' * (8 << 20))",
                limits=pb.Limits(output_bytes=16 << 20, wall_time_s=10)))
            time.sleep(1.5)  # the run is over before the reader starts
            logs = list(call)
        assert logs[-1].status == pb.OK
        assert sum(len(m.stdout_chunk) for m in logs) == 8 << 20
        assert max(m.ByteSize() for m in logs) <= 1 << 20
    finally:
        assert served.stop() == 0


def test_past_the_queue_is_resource_exhausted():
    served = Served("--max-concurrent", "1", "--queue-length", "1")
    try:
        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.CodeExecutorStub(channel)
            slow = pb.CodeRequest(language="python", code="import time\ntime.sleep(0.8)",
                                  cache=False)
            calls = [stub.Execute(slow) for _ in range(3)]
            outcomes = []
            for call in calls:
                try:
                    outcomes.append(pb.Status.Name(list(call)[-1].status))
                except grpc.RpcError as e:
                    outcomes.append(e.code().name)
                    assert "busy" in e.details()
            assert sorted(outcomes) == ["OK", "OK", "RESOURCE_EXHAUSTED"]
            assert stub.GetSystemMetrics(pb.EmptyRequest()).requests_rejected == 1
    finally:
        assert served.stop() == 0


def test_a_run_cancelled_while_queued_never_runs():
    served = Served("--max-concurrent", "1")
    try:
        busy = RemoteBackend(served.address).execute(
            request("python", "import time\nprint('busy', flush=True)\ntime.sleep(1)", wall_s=2))
        assert first_line(busy) == "busy\n"
        token = CancelToken()
        queued = RemoteBackend(served.address).execute(request("python", "print('never')"), token)
        threading.Timer(0.3, token.cancel).start()
        start = time.monotonic()
        events = list(queued)
        token.close()
        assert len(events) == 1 and events[0].status is Status.CANCELLED, events
        assert time.monotonic() - start < 0.9
        assert collect(busy).ok  # the running one went on
    finally:
        assert served.stop() == 0


def test_sigterm_drains_the_runs_in_flight():
    served = Served()
    try:
        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.CodeExecutorStub(channel)
            call = stub.Execute(pb.CodeRequest(language="python", code=(
                "import time\nprint('working', flush=True)\ntime.sleep(1)\nprint('done')")))
            assert next(call).stdout_chunk == "working\n"
            served.proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            with pytest.raises(grpc.RpcError):  # no new work while draining
                list(stub.Execute(pb.CodeRequest(language="python", code="print(2)"), timeout=5))
            rest = list(call)
            assert "".join(m.stdout_chunk for m in rest) == "done\n" and rest[-1].status == pb.OK
        assert served.proc.wait(10) == 0
    finally:
        served.stop()


def test_a_server_stopped_in_process_leaves_no_thread_of_its_own():
    """`Server` embedded in a program: after stop() its relay watchdog is gone too."""
    from dcodex_kernel.server import Server, ServerConfig

    before = set(threading.enumerate())
    server = Server(ServerConfig(port=0)).start()
    backend = RemoteBackend(server.address)
    try:
        result = collect(backend.execute(request("c", '#include <stdio.h>\nint main(void) { puts("hi"); }\n')))
        assert result.ok and result.stdout == "hi\n", result
    finally:
        backend.close()
        server.stop(grace=5)
    assert wait_until(lambda: not [t for t in set(threading.enumerate()) - before
                                   if t.name == "dcodex-watchdog"], 2.0)


AFFINITY_C = r"""#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
int main(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) if (CPU_ISSET(cpu, &set)) printf("%d ", cpu);
    puts("");
}
"""


def test_a_pinned_servers_threads_share_one_cpu_and_its_programs_keep_every_cpu():
    """--pin-cpu: every thread of the server's on that CPU; its programs (from the pool or
    started for the run) on every CPU the server was given."""
    cpus = sorted(os.sched_getaffinity(0))
    served = Served("--pin-cpu", str(cpus[-1]), "--max-concurrent", "2")
    backend = RemoteBackend(served.address)
    try:
        for _ in range(3):
            result = collect(backend.execute(request("c", AFFINITY_C)))
            assert result.ok and result.stdout.split() == [str(c) for c in cpus], result
        result = collect(backend.execute(request(
            "python", "import os; print(sorted(os.sched_getaffinity(0)))")))
        assert result.ok and result.stdout == f"{cpus}\n", result
        threads = os.listdir(f"/proc/{served.proc.pid}/task")
        assert len(threads) > 5 and all(os.sched_getaffinity(int(t)) == {cpus[-1]} for t in threads)
    finally:
        backend.close()
        assert served.stop() == 0


PINNED_ENGINE = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.events import collect
from dcodex_kernel.request import Request
from dcodex_kernel.sandbox.launcher import pin_engine_threads
pin_engine_threads(int(sys.argv[2]))
result = collect(LocalBackend().execute(Request("c", sys.stdin.read())))
print(json.dumps({"ok": result.ok, "stdout": result.stdout, "message": result.message,
                  "isolation": result.isolation, "engine": sorted(os.sched_getaffinity(0))}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the suite runs as an ordinary user already")
def test_a_pinned_ordinary_users_engine_keeps_every_cpu_for_its_programs():
    """As an ordinary user the engine starts a run's launcher from the run's own (pinned)
    thread, not from a cgroup slot's: the run gets every CPU there too."""
    from .support import run_as_ordinary_user

    cpus = sorted(os.sched_getaffinity(0))
    out = json.loads(run_as_ordinary_user(PINNED_ENGINE, str(cpus[-1]), input=AFFINITY_C))
    assert out["ok"] and "per-run-uid" not in out["isolation"], out
    assert out["stdout"].split() == [str(c) for c in cpus] and out["engine"] == [cpus[-1]], out


def test_pin_cpu_must_be_one_the_server_may_use():
    proc = subprocess.run([*DCODEX, "serve", "--port", "0", "--pin-cpu", str(os.cpu_count() + 7)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--pin-cpu" in proc.stderr and "may use CPU" in proc.stderr, proc


def test_dcodex_run_and_doctor_with_server(server, tmp_path):
    program = tmp_path / "three.py"
    program.write_text("print('remote hello')\nraise SystemExit(3)\n")
    proc = subprocess.run([*DCODEX, "run", str(program), "--server", server.address],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and proc.stdout == "remote hello\n"
    assert "runtime_error: Exited with status 3" in proc.stderr
    env = {**os.environ, "DCODEX_SERVER": server.address}
    proc = subprocess.run([*DCODEX, "doctor"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "remote" in proc.stdout and server.address in proc.stdout and "seccomp" in proc.stdout
    proc = subprocess.run([*DCODEX, "run", str(program), "--server", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 70 and "cannot reach DCodeX server at 127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_magics_run_on_the_server(server):
    ip = ipython_shell()
    ip.run_line_magic("load_ext", "dcodex_kernel")
    ip.run_cell_magic("dcodex", f"python --server {server.address} --out res --quiet",
                      "print('from the server')")
    result = ip.user_ns["res"]
    assert result.ok and result.stdout == "from the server\n"
    assert "pid-namespace" in result.isolation


def test_one_clients_burst_does_not_starve_another():
    served = Served("--max-concurrent", "1", "--queue-length", "20")
    own_connection = [("grpc.use_local_subchannel_pool", 1)]  # two clients, two connections
    try:
        with grpc.insecure_channel(served.address, own_connection) as a, \
                grpc.insecure_channel(served.address, own_connection) as b:
            finished = []
            lock = threading.Lock()

            def consume(name, call):
                list(call)
                with lock:
                    finished.append(name)

            def submit(channel, name):
                call = pb_grpc.CodeExecutorStub(channel).Execute(pb.CodeRequest(
                    language="python", code="import time\ntime.sleep(0.4)", cache=False))
                thread = threading.Thread(target=consume, args=(name, call))
                thread.start()
                return thread

            threads = [submit(a, "a") for _ in range(6)]
            metrics = pb_grpc.CodeExecutorStub(a).GetSystemMetrics
            assert wait_until(lambda: metrics(pb.EmptyRequest()).queued_requests == 5, 5.0)
            threads.append(submit(b, "b"))  # after a's whole burst is queued
            for thread in threads:
                thread.join(30)
        assert len(finished) == 7
        assert finished.index("b") <= 2, f"b waited behind a's whole burst: {finished}"
    finally:
        assert served.stop() == 0


def _served_count(address):
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.CodeExecutorStub(channel).GetSystemMetrics(
            pb.EmptyRequest(), timeout=5).total_requests_served


def test_several_servers_share_the_load_and_one_going_down_is_routed_around():
    first, second = Served(), Served()
    try:
        backend = RemoteBackend(f"{first.address},{second.address}")
        hello = Request("python", "print('hi')", cache=False)
        assert all(collect(backend.execute(hello)).ok for _ in range(2))  # both connected
        a, b = _served_count(first.address), _served_count(second.address)
        assert all(collect(backend.execute(hello)).ok for _ in range(6))
        assert _served_count(first.address) - a >= 2 and _served_count(second.address) - b >= 2
        before = _served_count(second.address)
        assert first.stop() == 0
        results = [collect(backend.execute(hello)) for _ in range(4)]
        assert all(r.ok for r in results), results
        assert _served_count(second.address) == before + 4
        backend.close()
    finally:
        first.stop()
        assert second.stop() == 0


def test_bounded_load_leaks_nothing():
    """200 requests from 20 concurrent clients against 4 sandboxes and a queue of 8: each gets its
    result or RESOURCE_EXHAUSTED; afterwards no process or fd is left and memory stayed bounded."""
    import psutil

    served = Served("--max-concurrent", "4", "--queue-length", "8")
    try:
        proc = psutil.Process(served.proc.pid)
        assert collect(RemoteBackend(served.address).execute(request("python", "print(0)"))).ok
        fds_before, rss_before = proc.num_fds(), proc.memory_info().rss
        peak, outcomes, lock, stop = [rss_before], [], threading.Lock(), threading.Event()

        def sample():
            while not stop.wait(0.05):
                peak.append(proc.memory_info().rss)

        def client(n):
            with grpc.insecure_channel(served.address, [("grpc.use_local_subchannel_pool", 1)]) as ch:
                stub = pb_grpc.CodeExecutorStub(ch)
                for i in range(10):
                    code = f"print({n * 100 + i})"
                    try:
                        logs = list(stub.Execute(pb.CodeRequest(language="python", code=code,
                                                                cache=False), timeout=60))
                        out = "".join(m.stdout_chunk for m in logs)
                        ok = logs[-1].status == pb.OK and out == f"{n * 100 + i}\n"
                        outcome = "ok" if ok else f"{pb.Status.Name(logs[-1].status)} {out!r}"
                    except grpc.RpcError as e:
                        outcome = e.code().name
                    with lock:
                        outcomes.append(outcome)

        sampler = threading.Thread(target=sample)
        sampler.start()
        clients = [threading.Thread(target=client, args=(n,)) for n in range(20)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(120)
        stop.set()
        sampler.join()
        assert len(outcomes) == 200
        assert set(outcomes) <= {"ok", "RESOURCE_EXHAUSTED"}, collections.Counter(outcomes)
        assert outcomes.count("ok") >= 40
        assert no_sandbox_left(), sandbox_processes()
        assert wait_until(lambda: proc.num_fds() <= fds_before + 2, 5.0), (fds_before, proc.num_fds())
        growth = max(peak) - rss_before
        print(f"\nload: {collections.Counter(outcomes)}; server RSS {rss_before >> 20} MiB before, "
              f"peak {max(peak) >> 20} MiB (+{growth >> 20} MiB)")
        assert growth < 100 << 20
    finally:
        assert served.stop() == 0


def test_a_kernel_runs_its_cells_on_the_server(server):
    from . import kernel_support as ks

    km, kc = ks.start_kernel("dcodex-python", env={"DCODEX_SERVER": server.address})
    try:
        run = ks.execute(kc, "print('from the kernel')")
        assert run.status == "ok" and run.text("stdout") == "from the kernel\n"
        assert "pid-namespace" in run.result["isolation"]
        info = ks.execute(kc, "%dcodex")
        assert "remote" in info.text() and server.address in info.text()
        # Interrupt (the kernel's message mode) cancels the remote run.
        msg_id = kc.execute("import time\nprint('up', flush=True)\ntime.sleep(30)")
        started = time.monotonic()
        assert wait_until(lambda: sandbox_processes(), 10.0)
        km.interrupt_kernel()
        stopped = ks.collect(kc, msg_id, started, timeout=15)
        assert stopped.result["status"] == "cancelled" and [e["ename"] for e in stopped.errors] == ["Interrupted"]
        assert no_sandbox_left(), sandbox_processes()
        gone = ks.execute(kc, "%%dcodex c --server 127.0.0.1:1\nint main(void) { return 0; }")
        assert gone.status == "error" and len(gone.errors) == 1
        assert "cannot reach DCodeX server at 127.0.0.1:1" in gone.errors[0]["evalue"]
    finally:
        ks.stop_kernel(km, kc)


def test_a_kernel_installed_with_env_runs_on_the_server_with_its_token(tmp_path):
    """`dcodex install --env DCODEX_SERVER=... --env DCODEX_TOKEN=...`: the kernels of that
    kernelspec send their cells to the server, with the token."""
    from . import kernel_support as ks

    served = Served(env={"DCODEX_TOKEN": "kernel-token"})
    try:
        install = subprocess.run(
            [*DCODEX, "install", "--prefix", str(tmp_path), "--env", f"DCODEX_SERVER={served.address}",
             "--env", "DCODEX_TOKEN=kernel-token"], capture_output=True, text=True, timeout=60)
        assert install.returncode == 0, install.stderr
        kernels = str(tmp_path / "share" / "jupyter" / "kernels")
        km, kc = ks.start_kernel("dcodex-cpp", kernel_dirs=[kernels])
        try:
            served_before = RemoteBackend(served.address, token="kernel-token").metrics().total_requests_served
            run = ks.execute(kc, '#include <cstdio>\nint main() { std::puts("from the kernelspec"); }')
            assert run.status == "ok" and run.text("stdout") == "from the kernelspec\n", run.errors
            after = RemoteBackend(served.address, token="kernel-token").metrics().total_requests_served
            assert after == served_before + 1, "the cell did not run on the server"
            info = ks.execute(kc, "%dcodex")
            assert served.address in info.text() and "token" in info.text()
        finally:
            ks.stop_kernel(km, kc)
    finally:
        assert served.stop() == 0


def test_an_unreachable_server_in_the_magics_is_one_clear_error():
    ip = ipython_shell()
    ip.run_line_magic("load_ext", "dcodex_kernel")
    magics = ip.magics_manager.registry["DCodeXMagics"]
    previous = magics.backend
    try:
        start = time.monotonic()
        outcome = ip.run_cell("%%dcodex c --server 127.0.0.1:1\nint main(void) { return 0; }\n")
        assert time.monotonic() - start < 6
        error = outcome.error_in_exec
        assert type(error).__name__ == "DCodeXError" and error.status is Status.INTERNAL_ERROR
        assert str(error).startswith("internal_error: cannot reach DCodeX server at 127.0.0.1:1: ")
        # As the session's backend: %dcodex still answers, and says so.
        ip.run_line_magic("dcodex", "config --server 127.0.0.1:1")
        import contextlib
        import io

        shown = io.StringIO()
        with contextlib.redirect_stdout(shown):
            ip.run_line_magic("dcodex", "")
        assert "127.0.0.1:1" in shown.getvalue() and "cannot reach DCodeX server" in shown.getvalue()
    finally:
        magics.backend = previous


def test_rate_limit_per_token(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# one token a line\nalice-token\n\nbob-token\n")
    served = Served("--token-file", str(tokens), "--rate-limit", "0.1", "--rate-burst", "2")
    try:
        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.CodeExecutorStub(channel)

            def run(token):
                try:
                    logs = list(stub.Execute(pb.CodeRequest(language="python", code="print(1)"),
                                             metadata=(("authorization", f"Bearer {token}"),)))
                    return pb.Status.Name(logs[-1].status)
                except grpc.RpcError as e:
                    assert "rate limit of 0.1 runs/s" in e.details()
                    return e.code().name

            assert [run("alice-token") for _ in range(3)] == ["OK", "OK", "RESOURCE_EXHAUSTED"]
            assert run("bob-token") == "OK"  # a client of its own
    finally:
        assert served.stop() == 0


def test_the_client_works_with_a_plain_dcodex_server():
    """A server that knows only DCodeX's Execute (no Session, no status): RemoteBackend falls back
    to Execute and reads the Result from DCodeX's conventions."""
    from concurrent import futures

    def execute(req, context):
        yield pb.ExecutionLog(stdout_chunk="out\n")
        if "segv" in req.code:
            yield pb.ExecutionLog(stderr_chunk="ERROR: Process killed by signal: 11\n",
                                  peak_memory_bytes=4096, execution_time_ms=3.0)
        elif "sleep" in req.code:
            time.sleep(10 if "long" in req.code else 0)
            yield pb.ExecutionLog(stderr_chunk="ERROR: Wall-clock timeout exceeded\n",
                                  wall_clock_timeout=True, peak_memory_bytes=4096,
                                  execution_time_ms=2000.0)
        else:
            yield pb.ExecutionLog(peak_memory_bytes=8192, execution_time_ms=5.0, cache_hit=True)

    handler = grpc.method_handlers_generic_handler("dcodex.CodeExecutor", {
        "Execute": grpc.unary_stream_rpc_method_handler(
            execute, request_deserializer=pb.CodeRequest.FromString,
            response_serializer=pb.ExecutionLog.SerializeToString)})
    dcodex = grpc.server(futures.ThreadPoolExecutor(4))
    dcodex.add_generic_rpc_handlers((handler,))
    port = dcodex.add_insecure_port("127.0.0.1:0")
    dcodex.start()
    try:
        client = RemoteBackend(f"127.0.0.1:{port}")
        ok = collect(client.execute(request("c", "int main(void){}")))
        assert ok.ok and ok.stdout == "out\n" and ok.peak_memory == 8192 and ok.replayed and not ok.cached
        assert ok.summary().endswith(", replayed from the server's result cache)")
        assert abs(ok.wall_s - 0.005) < 1e-6
        with StdinFeed() as feed:  # an answerer: Session, UNIMPLEMENTED there, then Execute
            assert collect(client.execute(request("c", "int main(void){}"), None, feed)).ok
        segv = collect(client.execute(request("c", "segv")))
        assert segv.status is Status.SIGNALED and segv.signal == 11 and "SIGSEGV" in segv.message
        slow = collect(client.execute(request("python", "sleep")))
        assert slow.status is Status.WALL_TIMEOUT
        token = CancelToken()
        threading.Timer(0.3, token.cancel).start()
        start = time.monotonic()
        stopped = collect(client.execute(request("python", "long sleep"), token))
        token.close()
        assert stopped.status is Status.CANCELLED and time.monotonic() - start < 2
    finally:
        dcodex.stop(0)


def test_magics_config_server_sets_the_sessions_backend(server):
    from dcodex_kernel.backends.local import LocalBackend

    ip = ipython_shell()
    ip.run_line_magic("load_ext", "dcodex_kernel")
    magics = ip.magics_manager.registry["DCodeXMagics"]
    previous = magics.backend
    try:
        ip.run_line_magic("dcodex", f"config --server {server.address}")
        assert isinstance(magics.backend, RemoteBackend) and magics.backend.address == server.address
        ip.run_cell_magic("dcodex", "python --out res --quiet", "print('session default')")
        assert ip.user_ns["res"].ok and ip.user_ns["res"].stdout == "session default\n"
        ip.run_line_magic("dcodex", "config --server local")
        assert isinstance(magics.backend, LocalBackend)
    finally:
        magics.backend = previous


def test_session_rpc_checks_its_first_message(stub):
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Session(iter([pb.ClientMessage(cancel=True)])))
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # Interactive: the program's stdin stays open for the client's stdin messages.
    interactive = pb.CodeRequest(language="python", code="print(input()); input()", stream_stdin=True)
    logs = list(stub.Session(iter([pb.ClientMessage(request=interactive),
                                   pb.ClientMessage(stdin_chunk=b"typed\n"),
                                   pb.ClientMessage(stdin_eof=True)])))
    assert "typed\n" in "".join(log.stdout_chunk for log in logs)
    assert logs[-1].status == pb.RUNTIME_ERROR and "EOFError" in "".join(l.stderr_chunk for l in logs)
    logs = list(stub.Session(iter([pb.ClientMessage(request=pb.CodeRequest(
        language="python", code="print(input())", stdin_data="echo\n"))])))
    assert logs[0].stdout_chunk == "echo\n" and logs[-1].status == pb.OK
