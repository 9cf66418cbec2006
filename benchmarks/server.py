"""Server throughput: cached hello-world runs through a real `dcodex serve` on 127.0.0.1 next to
the local backend in the same run, at 1, 4 and 16 concurrent clients.

    .venv/bin/python benchmarks/server.py [--runs N] [--rounds N] [--language c]

Each client is a thread that runs hello world again and again (C, build cached; the server's
result cache is off, so every request really runs in the sandbox); the local backend's clients
call LocalBackend.execute in this process, the server's each have a RemoteBackend (a channel of
their own, as every kernel and magics session has). The server allows as many sandboxes as there
are clients, so the two sides run the same work at the same concurrency on the same machine;
rounds alternate between them so that drifting load (the machine is shared) falls on both.
Figures are medians over the rounds. Target (issue 10): at 4 clients the server gives >= 80 % of
the local backend's runs/s.

`main()` returns the rows (and prints the table) so a combined `make bench` can import it.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dcodex_kernel.backends.local import LocalBackend  # noqa: E402
from dcodex_kernel.backends.remote import RemoteBackend  # noqa: E402
from dcodex_kernel.build_cache import BuildCache  # noqa: E402
from dcodex_kernel.cancel import CancelToken  # noqa: E402
from dcodex_kernel.events import collect  # noqa: E402
from dcodex_kernel.request import Language, Request  # noqa: E402

HELLO = {
    "c": '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n',
    "cpp": '#include <iostream>\nint main() { std::cout << "hello" << std::endl; }\n',
    "python": 'print("hello")\n',
}
CLIENTS = (1, 4, 16)
TARGET_AT_4 = 0.80


@dataclass
class Row:
    clients: int
    local_runs_s: float
    local_p50_ms: float
    local_p99_ms: float
    local_cpu_ms: float  # CPU per run: this process (engine) and its children (the program)
    server_runs_s: float
    server_p50_ms: float
    server_p99_ms: float
    server_cpu_ms: float  # CPU per run: client, server and the server's children
    floor_runs_s: float  # the same client against a gRPC server that runs nothing
    floor_cpu_ms: float

    @property
    def ratio(self) -> float:
        return self.server_runs_s / self.local_runs_s

    @property
    def bound(self) -> float:
        """The best ratio a server could reach here if its own work cost nothing beyond gRPC's:
        on a machine whose cores are all busy, runs/s go as 1 / CPU per run."""
        return self.local_cpu_ms / (self.local_cpu_ms + self.floor_cpu_ms)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * len(values) + 0.5) - 1))]


def cpu_seconds(processes) -> float:
    """User + system CPU of `processes` so far, with their children that were waited for (the
    sandbox's launcher and the program)."""
    total = 0.0
    for process in processes:
        t = process.cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
    return total


def measure(backends, request: Request, runs_per_client: int,
            processes=()) -> tuple[float, list[float], float]:
    """`len(backends)` clients, each running `request` `runs_per_client` times on its own
    backend at once: (runs per second, each run's latency in ms, CPU ms per run of
    `processes`)."""
    latencies: list[float] = []
    failures: list[object] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(len(backends) + 1)

    def client(backend):
        mine = []
        start_gate.wait()
        for _ in range(runs_per_client):
            t0 = time.perf_counter()
            with CancelToken() as token:  # as every front door gives each run (interrupt)
                result = collect(backend.execute(request, token))
            mine.append((time.perf_counter() - t0) * 1000)
            if not (result.ok and result.stdout == "hello\n"):
                failures.append(result)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(b,)) for b in backends]
    for thread in threads:
        thread.start()
    cpu0 = cpu_seconds(processes)
    start_gate.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    cpu = (cpu_seconds(processes) - cpu0) * 1000 / len(latencies)
    if failures:
        raise RuntimeError(f"{len(failures)} runs failed, e.g. {failures[0]}")
    return len(latencies) / elapsed, latencies, cpu


class Server:
    """A `dcodex serve` subprocess on a free 127.0.0.1 port."""

    def __init__(self, *args: str, env: dict | None = None, command: list[str] | None = None):
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "dcodex_kernel", "serve", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        ready, _, _ = select.select([self.proc.stderr], [], [], 60)
        line = self.proc.stderr.readline() if ready else ""
        found = re.search(r"listening on (\S+)", line)
        if not found:
            self.proc.kill()
            raise RuntimeError(f"dcodex serve did not start: {line}")
        self.address = found.group(1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=48,
                        help="runs per round and side at each concurrency (default 48)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--language", choices=sorted(HELLO), default="c")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS))
    parser.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.floor_server:
        return floor_server()

    import psutil

    tmp = tempfile.TemporaryDirectory(prefix="dcodex-bench-server-")
    cache_dir = os.path.join(tmp.name, "cache")
    # Server and local backend share one build cache (and so the one compiled hello world).
    server = Server("--max-concurrent", str(max(opts.clients)), "--queue-length", "64",
                    "--result-cache-entries", "0", env={"DCODEX_CACHE_DIR": cache_dir})
    floor = Server(command=[sys.executable, os.path.abspath(__file__), "--floor-server"])
    local = LocalBackend(BuildCache(os.path.join(cache_dir, "builds")))
    request = Request(Language.parse(opts.language), HELLO[opts.language])
    me = psutil.Process()
    sides = {"local": ([local] * max(opts.clients), [me]),
             "server": ([RemoteBackend(server.address) for _ in range(max(opts.clients))],
                        [me, psutil.Process(server.proc.pid)]),
             "floor": ([RemoteBackend(floor.address) for _ in range(max(opts.clients))],
                       [me, psutil.Process(floor.proc.pid)])}
    rows = []
    try:
        for backends, _ in sides.values():  # compile once, connect, warm up
            for _ in range(3):
                result = collect(backends[0].execute(request))
                assert result.ok and result.stdout == "hello\n", result
        for n in opts.clients:
            runs_per_client = max(1, opts.runs // n)
            figures = {name: ([], [], []) for name in sides}  # rates, latencies, cpu
            for backends, _ in sides.values():
                measure(backends[:n], request, 1)  # every client connected before timing
            for _ in range(opts.rounds):
                for name, (backends, processes) in sides.items():
                    rate, latencies, cpu = measure(backends[:n], request, runs_per_client,
                                                   processes)
                    figures[name][0].append(rate)
                    figures[name][1].extend(latencies)
                    figures[name][2].append(cpu)
            (lr, ll, lc), (sr, sl, sc), (fr, _, fc) = (figures[k] for k in ("local", "server", "floor"))
            med = statistics.median
            rows.append(Row(n, med(lr), med(ll), percentile(ll, 0.99), med(lc),
                            med(sr), med(sl), percentile(sl, 0.99), med(sc), med(fr), med(fc)))
        for name in ("server", "floor"):
            for backend in sides[name][0]:
                backend.close()
    finally:
        server.stop()
        floor.stop()
        tmp.cleanup()

    print(f"cached {opts.language} hello world through `dcodex serve` on 127.0.0.1 (result cache "
          f"off) and the local backend, {os.cpu_count()} cores; medians of {opts.rounds} "
          f"alternating rounds of ~{opts.runs} runs per side, latency percentiles over all runs, "
          "CPU ms per run of every process involved\n")
    header = (f"{'clients':>7} | {'local runs/s':>12} {'p50':>6} {'p99':>6} {'cpu':>5} | "
              f"{'server runs/s':>13} {'p50':>6} {'p99':>6} {'cpu':>5} | {'ratio':>5} | "
              f"{'gRPC floor runs/s':>17} {'cpu':>5} {'bound':>5}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.clients:>7} | {r.local_runs_s:12.1f} {r.local_p50_ms:6.1f} {r.local_p99_ms:6.1f} "
              f"{r.local_cpu_ms:5.1f} | {r.server_runs_s:13.1f} {r.server_p50_ms:6.1f} "
              f"{r.server_p99_ms:6.1f} {r.server_cpu_ms:5.1f} | {r.ratio:5.0%} | "
              f"{r.floor_runs_s:17.1f} {r.floor_cpu_ms:5.1f} {r.bound:5.0%}")
    print("\ngRPC floor: the same RemoteBackend clients against a Python gRPC server that answers "
          "each Session with the two\nmessages of a hello world and runs nothing; bound: the "
          "ratio a server whose own work cost nothing beyond\nthat could reach while the cores "
          "are busy (local cpu / (local cpu + floor cpu)).")
    at4 = next((r for r in rows if r.clients == 4), None)
    if at4 is not None:
        verdict = "met" if at4.ratio >= TARGET_AT_4 else "missed"
        print(f"target: at 4 clients the server >= {TARGET_AT_4:.0%} of local throughput: "
              f"{at4.ratio:.0%}, {verdict} (bound {at4.bound:.0%})")
    return rows


def floor_server() -> list:
    """A gRPC server with the CodeExecutor service that runs nothing: each Execute or Session
    gets hello world's two messages (its output, then an `ok` Result). What gRPC costs alone."""
    from concurrent import futures

    import grpc

    from dcodex_kernel.events import Output, Result, Status
    from dcodex_kernel.proto import dcodex_pb2_grpc as pb_grpc
    from dcodex_kernel.proto.convert import output_to_pb, result_to_pb

    output = output_to_pb(Output("stdout", "hello\n"))
    result = result_to_pb(Result(Status.OK, exit_code=0, wall_s=0.001, peak_memory=1 << 20))

    class Floor(pb_grpc.CodeExecutorServicer):
        def Execute(self, request, context):
            yield output
            yield result

        def Session(self, request_iterator, context):
            next(request_iterator)
            yield output
            yield result

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    pb_grpc.add_CodeExecutorServicer_to_server(Floor(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()
    return []


if __name__ == "__main__":
    main()
