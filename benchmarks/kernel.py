"""Kernel latency and idle cost: a repeated hello-world cell through each DCodeX kernel, next to
ipykernel's own `python3` kernel running print('hello'), all measured in the same run through
jupyter_client; and the kernel process's own CPU time while a cell sleeps 2 s.

    .venv/bin/python benchmarks/kernel.py [--runs N]

Targets (issue 3): a repeated (build-cache hit) C or C++ cell within 2x of the ipykernel figure;
<= 0.05 s of kernel CPU during the 2 s sleep (no busy-waiting). Medians: the machine is shared.
The kernelspecs are installed into a temporary prefix, with a build cache of their own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from jupyter_client import KernelManager  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402

from dcodex_kernel.kernelspec import install  # noqa: E402
from dcodex_kernel.request import Limits  # noqa: E402

CELLS = {
    # kernel: (hello cell, cell sleeping 2 s)
    "python3": ("print('hello')", "import time\ntime.sleep(2)"),
    "dcodex-c": ('#include <stdio.h>\nint main(void) { puts("hello"); return 0; }',
                 '#include <unistd.h>\nint main(void) { sleep(2); return 0; }'),
    "dcodex-cpp": ('#include <iostream>\nint main() { std::cout << "hello\\n"; }',
                   '#include <thread>\n#include <chrono>\n'
                   'int main() { std::this_thread::sleep_for(std::chrono::seconds(2)); }'),
    "dcodex-python": ("print('hello')", "import time\ntime.sleep(2)"),
}
LATENCY_TARGET = 2.0  # x ipykernel
IDLE_CPU_TARGET = 0.05  # s


def run_cell(kc, code: str, timeout: float = 60) -> float:
    """Seconds from sending the execute_request to having its reply and the idle status."""
    start = time.perf_counter()
    msg_id = kc.execute(code)
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    elapsed = time.perf_counter() - start
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content']}")
    return elapsed


def measure(ksm, name: str, env: dict, runs: int, sleeps: int = 1, extra: dict | None = None) -> dict:
    """{'median', 'p90', 'idle_cpu'} of kernel `name`, with every sample ('times', 'idle_cpus')
    and, for each (label: cell) of `extra`, the seconds of each of `runs` runs of that cell."""
    hello, sleeper = CELLS[name]
    km = KernelManager(kernel_name=name, kernel_spec_manager=ksm,
                       connection_file=os.path.join(env["JUPYTER_RUNTIME_DIR"], f"{name}.json"))
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        for _ in range(5):  # warm up: the first run builds (and caches) the program
            run_cell(kc, hello)
        times = sorted(run_cell(kc, hello) for _ in range(runs))
        extras = {}
        for label, cell in (extra or {}).items():
            run_cell(kc, cell)  # builds it
            extras[label] = [run_cell(kc, cell) for _ in range(runs)]
        run_cell(kc, sleeper)  # build it first: measure the sleeping, not the compiler
        kernel = psutil.Process(km.provisioner.process.pid)
        idle_cpus = []
        for _ in range(sleeps):
            before = kernel.cpu_times()
            run_cell(kc, sleeper)
            after = kernel.cpu_times()
            idle_cpus.append((after.user - before.user) + (after.system - before.system))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    return {"median": statistics.median(times), "p90": times[int(0.9 * (len(times) - 1))],
            "idle_cpu": statistics.median(idle_cpus), "times": times, "idle_cpus": idle_cpus,
            "extra": extras}


def kernels_in(root: str):
    """(a KernelSpecManager, a kernel environment) for the DCodeX kernelspecs installed into
    the temporary prefix `root`, with Jupyter dirs and a build cache of their own under it."""
    install(prefix=root)
    # python3 resolves to ipykernel's own spec (this interpreter), the others to ours.
    ksm = KernelSpecManager(kernel_dirs=[os.path.join(root, "share", "jupyter", "kernels")])
    env = {k: v for k, v in os.environ.items() if k not in Limits.ENV}
    for var, sub in (("IPYTHONDIR", "ipython"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("XDG_CACHE_HOME", "cache")):
        env[var] = os.path.join(root, sub)
        os.makedirs(env[var], exist_ok=True)
    return ksm, env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="timed cells per kernel (default 40)")
    ns = parser.parse_args()

    root = tempfile.mkdtemp(prefix="dcodex-kernel-bench-")
    try:
        ksm, env = kernels_in(root)
        results = {name: measure(ksm, name, env, ns.runs) for name in CELLS}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = results["python3"]["median"]
    print(f"hello-world cell, {ns.runs} runs each after warm-up (build-cache hits); "
          f"kernel CPU while a cell sleeps 2 s\n")
    print(f"{'kernel':<16}{'median ms':>10}{'p90 ms':>9}{'x python3':>11}{'idle CPU s':>12}")
    for name, r in results.items():
        print(f"{name:<16}{r['median'] * 1e3:>10.2f}{r['p90'] * 1e3:>9.2f}"
              f"{r['median'] / base:>11.2f}{r['idle_cpu']:>12.3f}")
    failed = [f"{name}: {results[name]['median'] / base:.2f}x > {LATENCY_TARGET}x"
              for name in ("dcodex-c", "dcodex-cpp")
              if results[name]["median"] / base > LATENCY_TARGET]
    failed += [f"{name}: {r['idle_cpu']:.3f} s CPU during a 2 s sleep"
               for name, r in results.items() if name != "python3" and r["idle_cpu"] > IDLE_CPU_TARGET]
    print()
    print("targets met" if not failed else "targets missed: " + "; ".join(failed))
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
