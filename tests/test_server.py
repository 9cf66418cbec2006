"""The remote half: `dcodex serve` (a real server on a free 127.0.0.1 port), the DCodeX wire
protocol, and RemoteBackend behaving like the local backend."""

from __future__ import annotations

import filecmp
import os

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
import subprocess
import sys
import textwrap
import threading
import time

import grpc

from dcodex_kernel.backends.remote import RemoteBackend
from dcodex_kernel.cancel import CancelToken
from dcodex_kernel.events import Output, Result, Status, collect
from dcodex_kernel.proto import dcodex_pb2 as pb
from dcodex_kernel.proto import dcodex_pb2_grpc as pb_grpc
from dcodex_kernel.request import Limits, Request

from .support import sandbox_processes, wait_until

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


def no_sandbox_left(timeout=3.0):
    return wait_until(lambda: not sandbox_processes(), timeout)


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


def test_cancel_kills_the_program_and_ends_cancelled(remote):
    token = CancelToken()
    events = remote.execute(request("python", "import time\nprint('up', flush=True)\ntime.sleep(30)\n",
                                    wall_s=2), token)
    first = next(events)
    assert isinstance(first, Output) and first.text == "up\n"
    start = time.monotonic()
    token.cancel()
    result = list(events)[-1]
    token.close()
    assert result.status is Status.CANCELLED, result
    assert time.monotonic() - start < 1.5
    assert no_sandbox_left(), sandbox_processes()


def test_unreachable_server_is_one_clear_result():
    start = time.monotonic()
    events = list(RemoteBackend("127.0.0.1:1").execute(request("c", "int main(void){}")))
    assert time.monotonic() - start < 6
    assert len(events) == 1 and events[0].status is Status.INTERNAL_ERROR
    assert events[0].message.startswith("cannot reach DCodeX server at 127.0.0.1:1: ")


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
