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
