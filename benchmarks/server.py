"""Server throughput: cached hello world through `dcodex serve` next to the local backend.

    .venv/bin/python benchmarks/server.py [--runs N] [--rounds N] [--language c]

Runs/s and p50/p99 latency at 1, 4 and 16 concurrent clients, a real `dcodex serve` on 127.0.0.1
and the local backend in the same run. Each client is a thread that runs hello world again and
again (C, build cached; the server's result cache is off, so every request really runs in the
sandbox); the local backend's clients call LocalBackend.execute in this process, the server's
each have a RemoteBackend (a channel of their own, as every kernel and magics session has) and a
CancelToken per run. They bring no answerer, so their runs go over the one-way Execute; the
"answerer" side is the same with a StdinFeed per run, as a kernel that allows input gives, so
over the bidirectional Session. The server allows as many sandboxes as there are clients, so the
sides run the same work at the same concurrency on the same machine; rounds alternate between
them so that drifting load (the machine is shared) falls on all. Figures are medians over the
rounds. Target (issue 10): at 4 clients the server gives >= 80 % of the local backend's runs/s.
The CPU table says where each side's CPU goes per run: client (this process), server process,
and the programs (the server's or this process's children).

`main()` returns the rows (and prints the table) so a combined `make bench` can import it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dcodex_kernel.backends.local import LocalBackend  # noqa: E402
from dcodex_kernel.backends.remote import RemoteBackend  # noqa: E402
from dcodex_kernel.build_cache import BuildCache  # noqa: E402
from dcodex_kernel.cancel import CancelToken  # noqa: E402
from dcodex_kernel.events import collect  # noqa: E402
from dcodex_kernel.interactive import StdinFeed  # noqa: E402
from dcodex_kernel.request import Language, Request  # noqa: E402

HELLO = {
    "c": '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n',
    "cpp": '#include <iostream>\nint main() { std::cout << "hello" << std::endl; }\n',
    "python": 'print("hello")\n',
}
CLIENTS = (1, 4, 16)
TARGET_AT_4 = 0.80


@dataclass
class Cpu:
    """CPU ms per run of one side: the client process, the server process (none for the local
    backend, whose engine is the client), and the programs (sandbox launcher and hello world);
    and the context switches per run of the client and server processes' threads together."""
    client: float
    server: float
    programs: float
    switches: float = 0.0

    @property
    def total(self) -> float:
        return self.client + self.server + self.programs


@dataclass
class Row:
    clients: int
    local_runs_s: float
    local_p50_ms: float
    local_p99_ms: float
    local_cpu: Cpu
    server_runs_s: float
    server_p50_ms: float
    server_p99_ms: float
    server_cpu: Cpu
    pinned_runs_s: float  # the server again, started with --pin-cpu (its threads on one CPU)
    pinned_p50_ms: float
    pinned_p99_ms: float
    pinned_cpu: Cpu
    answerer_runs_s: float  # the server again, each run with a StdinFeed (the Session RPC)
    answerer_cpu: Cpu
    floor_runs_s: float  # the same client against a gRPC server that runs nothing
    floor_cpu: Cpu

    @property
    def local_cpu_ms(self) -> float:
        return self.local_cpu.total

    @property
    def server_cpu_ms(self) -> float:
        return self.server_cpu.total

    @property
    def pinned_cpu_ms(self) -> float:
        return self.pinned_cpu.total

    @property
    def floor_cpu_ms(self) -> float:
        return self.floor_cpu.total

    @property
    def ratio(self) -> float:
        return self.server_runs_s / self.local_runs_s

    @property
    def pinned_ratio(self) -> float:
        return self.pinned_runs_s / self.local_runs_s

    @property
    def answerer_ratio(self) -> float:
        return self.answerer_runs_s / self.local_runs_s

    @property
    def bound(self) -> float:
        """The best ratio a server could reach here if its own work cost nothing beyond gRPC's:
        on a machine whose cores are all busy, runs/s go as 1 / CPU per run."""
        return self.local_cpu_ms / (self.local_cpu_ms + self.floor_cpu_ms)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * len(values) + 0.5) - 1))]


def cpu_seconds(client, server) -> tuple[float, float, float]:  # psutil.Process, or None
    """User + system CPU so far of the client process, the server process (or None), and the
    children they waited for (the sandbox's launchers and the programs)."""
    own, children = [], 0.0
    for process in (client, server):
        t = process.cpu_times() if process is not None else None
        own.append(t.user + t.system if t else 0.0)
        children += t.children_user + t.children_system if t else 0.0
    return own[0], own[1], children


def switches(server) -> int:
    """Context switches so far (voluntary and not) of this process's threads, those that ended
    too (getrusage), and of the live threads of `server` (a psutil.Process, or None), whose
    threads are kept in pools: the thread handoffs a run costs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_nvcsw + usage.ru_nivcsw
    if server is not None:
        for thread in os.listdir(f"/proc/{server.pid}/task"):
            try:
                with open(f"/proc/{server.pid}/task/{thread}/status") as f:
                    total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
            except (OSError, ValueError):  # a thread that ended meanwhile
                pass
    return total


def handoff_us(cross_core: bool, rounds: int = 5000) -> float:
    """CPU µs one thread handoff costs here (half a round trip between two threads through
    semaphores), with the two threads on two cores or both on one. A VM can make the first
    several times the second: waking a thread on another core exits to the hypervisor."""
    cores = sorted(os.sched_getaffinity(0))
    if cross_core and len(cores) < 2:
        return float("nan")
    ping, pong = threading.Semaphore(0), threading.Semaphore(0)

    def other():
        os.sched_setaffinity(0, {cores[1] if cross_core else cores[0]})
        for _ in range(rounds):
            ping.acquire()
            pong.release()

    thread = threading.Thread(target=other)
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cores[0]})  # (this thread only)
    try:
        thread.start()
        t0 = time.process_time()
        for _ in range(rounds):
            ping.release()
            pong.acquire()
        thread.join()
        return (time.process_time() - t0) / rounds / 2 * 1e6
    finally:
        os.sched_setaffinity(0, mine)


def measure(backends, request: Request, runs_per_client: int, me=None, served=None,
            answerer: bool = False) -> tuple[float, list[float], Cpu]:
    """`len(backends)` clients, each running `request` `runs_per_client` times on its own
    backend at once (with a StdinFeed per run if `answerer`): (runs per second, each run's
    latency in ms, CPU ms per run of the processes `me` (the clients') and `served` (the server,
    if any) and of their children)."""
    latencies: list[float] = []
    failures: list[object] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(len(backends) + 1)

    def client(backend):
        mine = []
        start_gate.wait()
        for _ in range(runs_per_client):
            t0 = time.perf_counter()
            # A CancelToken per run, as every front door gives (interrupt); an answerer's feed.
            with CancelToken() as token, (StdinFeed() if answerer else nullcontext()) as feed:
                result = collect(backend.execute(request, token, feed))
            mine.append((time.perf_counter() - t0) * 1000)
            if not (result.ok and result.stdout == "hello\n"):
                failures.append(result)
        with lock:
            latencies.extend(mine)

    cpu0 = cpu_seconds(me, served) if me is not None else (0.0,) * 3
    switches0 = switches(served)
    threads = [threading.Thread(target=client, args=(b,)) for b in backends]
    for thread in threads:
        thread.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_seconds(me, served) if me is not None else (0.0,) * 3
    cpu = Cpu(*((b - a) * 1000 / len(latencies) for a, b in zip(cpu0, cpu1)),
              (switches(served) - switches0) / len(latencies))
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
    serving = ("--max-concurrent", str(max(opts.clients)), "--queue-length", "64",
               "--result-cache-entries", "0")
    server = Server(*serving, env={"DCODEX_CACHE_DIR": cache_dir})
    pinned = Server(*serving, "--pin-cpu", str(max(os.sched_getaffinity(0))),
                    env={"DCODEX_CACHE_DIR": cache_dir})
    floor = Server(command=[sys.executable, os.path.abspath(__file__), "--floor-server"])
    local = LocalBackend(BuildCache(os.path.join(cache_dir, "builds")))
    request = Request(Language.parse(opts.language), HELLO[opts.language])
    me, served = psutil.Process(), psutil.Process(server.proc.pid)
    most = max(opts.clients)
    sides = {"local": ([local] * most, None, False),
             "server": ([RemoteBackend(server.address) for _ in range(most)], served, False),
             "pinned": ([RemoteBackend(pinned.address) for _ in range(most)],
                        psutil.Process(pinned.proc.pid), False),
             "answerer": ([RemoteBackend(server.address) for _ in range(most)], served, True),
             "floor": ([RemoteBackend(floor.address) for _ in range(most)],
                       psutil.Process(floor.proc.pid), False)}
    rows = []
    try:
        # What a thread handoff costs on this machine now, across cores and within one.
        handoffs = [statistics.median(handoff_us(cross) for _ in range(3)) for cross in (True, False)]
        for backends, _, answerer in sides.values():  # compile once, connect, warm up
            for _ in range(3):
                result = collect(backends[0].execute(request))
                assert result.ok and result.stdout == "hello\n", result
        for n in opts.clients:
            runs_per_client = max(1, opts.runs // n)
            figures = {name: ([], [], []) for name in sides}  # rates, latencies, cpu
            for backends, _, answerer in sides.values():  # every client connected before timing
                measure(backends[:n], request, 1, answerer=answerer)
            for _ in range(opts.rounds):
                for name, (backends, process, answerer) in sides.items():
                    rate, latencies, cpu = measure(backends[:n], request, runs_per_client, me,
                                                   process, answerer)
                    figures[name][0].append(rate)
                    figures[name][1].extend(latencies)
                    figures[name][2].append(cpu)
            row = [n]
            for name in sides:
                rates, latencies, cpus = figures[name]
                row.append(statistics.median(rates))
                if name in ("local", "server", "pinned"):
                    row += [statistics.median(latencies), percentile(latencies, 0.99)]
                row.append(Cpu(*(statistics.median(getattr(c, f) for c in cpus)
                                 for f in ("client", "server", "programs", "switches"))))
            rows.append(Row(*row))
        for name in ("server", "pinned", "answerer", "floor"):
            for backend in sides[name][0]:
                backend.close()
    finally:
        server.stop()
        pinned.stop()
        floor.stop()
        tmp.cleanup()

    report(rows, opts, handoffs)
    return rows


def table(header: str, lines) -> None:
    print(header)
    print("-" * len(header))
    for line in lines:
        print(line)


def report(rows: list[Row], opts, handoffs: list[float]) -> None:
    print(f"cached {opts.language} hello world through `dcodex serve` on 127.0.0.1 (result cache "
          f"off) and the local backend, {os.cpu_count()} cores; medians of {opts.rounds} "
          f"alternating rounds of ~{opts.runs} runs per side, latency percentiles over all runs\n")
    header = (f"{'clients':>7} | {'local runs/s':>12} {'p50':>5} {'p99':>5} | "
              f"{'server runs/s':>13} {'p50':>5} {'p99':>5} {'ratio':>5} | "
              f"{'--pin-cpu runs/s':>16} {'p50':>5} {'p99':>5} {'ratio':>5} | "
              f"{'answerer runs/s':>15} {'ratio':>5} | {'gRPC floor runs/s':>17}")
    table(header, (f"{r.clients:>7} | {r.local_runs_s:12.1f} {r.local_p50_ms:5.1f} "
                   f"{r.local_p99_ms:5.1f} | {r.server_runs_s:13.1f} {r.server_p50_ms:5.1f} "
                   f"{r.server_p99_ms:5.1f} {r.ratio:5.0%} | {r.pinned_runs_s:16.1f} "
                   f"{r.pinned_p50_ms:5.1f} {r.pinned_p99_ms:5.1f} {r.pinned_ratio:5.0%} | "
                   f"{r.answerer_runs_s:15.1f} {r.answerer_ratio:5.0%} | {r.floor_runs_s:17.1f}"
                   for r in rows))
    print("\nCPU ms per run (client process + server process + programs = total), medians:\n")
    header = (f"{'clients':>7} | {'local':>21} | {'server (Execute)':>24} | "
              f"{'--pin-cpu server':>24} | {'answerer (Session)':>24} | {'gRPC floor':>12} | "
              f"{'bound':>5}")

    def split(c: Cpu, server: bool = True) -> str:
        return (f"{c.client:4.1f} + {c.server:3.1f} + {c.programs:3.1f} = {c.total:4.1f}" if server
                else f"{c.client:4.1f} + {c.programs:3.1f} = {c.total:4.1f}")

    table(header, (f"{r.clients:>7} | {split(r.local_cpu, False):>21} | {split(r.server_cpu):>24} | "
                   f"{split(r.pinned_cpu):>24} | {split(r.answerer_cpu):>24} | "
                   f"{r.floor_cpu.client:4.1f} + {r.floor_cpu.server:3.1f} | {r.bound:5.0%}"
                   for r in rows))
    print("\ncontext switches per run (the client and server processes' threads), medians:\n")
    header = (f"{'clients':>7} | {'local':>7} | {'server':>7} | {'--pin-cpu':>9} | "
              f"{'answerer':>8} | {'gRPC floor':>10}")
    table(header, (f"{r.clients:>7} | {r.local_cpu.switches:7.1f} | {r.server_cpu.switches:7.1f} | "
                   f"{r.pinned_cpu.switches:9.1f} | {r.answerer_cpu.switches:8.1f} | "
                   f"{r.floor_cpu.switches:10.1f}" for r in rows))
    cross, same = handoffs
    print(f"\na thread handoff (one thread waking another) costs {cross:.0f} µs of CPU between two "
          f"cores and {same:.0f} µs within one, measured now")
    print("\nlocal: the engine runs in the client process. --pin-cpu: the server started with "
          "--pin-cpu, its threads on one CPU\n(the programs on all). answerer: each run brings a "
          "StdinFeed, as a kernel that allows input does, so it goes\nover the bidirectional "
          "Session instead of Execute. gRPC floor: the same RemoteBackend clients against a "
          "Python gRPC\nserver that answers each Execute with hello world's messages and runs "
          "nothing. bound: the ratio a server whose own\nwork cost nothing beyond that could "
          "reach while the cores are busy: local / (local + floor).")
    at4 = next((r for r in rows if r.clients == 4), None)
    if at4 is not None:
        def verdict(ratio: float) -> str:
            return (f"{ratio:.0%}, {'met' if ratio >= TARGET_AT_4 else 'missed'} "
                    f"({(ratio - TARGET_AT_4) * 100:+.0f} points)")

        extra = at4.server_cpu_ms - at4.local_cpu_ms
        print(f"target: at 4 clients the server >= {TARGET_AT_4:.0%} of local throughput: "
              f"{verdict(at4.ratio)}, with --pin-cpu {verdict(at4.pinned_ratio)}; bound "
              f"{at4.bound:.0%}; the server path costs {extra:.1f} ms CPU per run more than the "
              f"local backend ({at4.pinned_cpu_ms - at4.local_cpu_ms:.1f} ms with --pin-cpu), "
              f"{at4.floor_cpu_ms:.1f} ms of it the gRPC floor; with an answerer "
              f"{at4.answerer_ratio:.0%}")


def floor_server() -> list:
    """A gRPC server with the CodeExecutor service that runs nothing: each Execute or Session
    gets hello world's messages as `dcodex serve` sends them (its output in the Result's message
    to a client that reads it there, else apart, then an `ok` Result). What gRPC costs alone."""
    from concurrent import futures

    import grpc

    from dcodex_kernel.events import Output, Result, Status
    from dcodex_kernel.proto import dcodex_pb2_grpc as pb_grpc
    from dcodex_kernel.proto.convert import output_to_pb, result_to_pb

    output = output_to_pb(Output("stdout", "hello\n"))
    result = result_to_pb(Result(Status.OK, exit_code=0, wall_s=0.001, peak_memory=1 << 20))
    both = result_to_pb(Result(Status.OK, exit_code=0, wall_s=0.001, peak_memory=1 << 20))
    both.stdout_chunk = output.stdout_chunk

    def answer(request):
        return [both] if request.output_in_result else [output, result]

    class Floor(pb_grpc.CodeExecutorServicer):
        def Execute(self, request, context):
            yield from answer(request)

        def Session(self, request_iterator, context):
            yield from answer(next(request_iterator).request)

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
