"""Test cases (issue 15): 20 hello-world cases with `--cases` against 20 separate runs of the same
program, and the floor measured in the same run (the compiled binary started 20 times directly).

    .venv/bin/python benchmarks/cases.py [--repeat N] [--cases N]

Targets: `--cases` from a cold build costs no more than one compile plus 20 cached runs, and a
cached `--cases` run adds under 300 ms on top of the programs themselves (the bare binary run 20
times). Medians, sampled alternately, because this machine is shared and noisy.

`main()` returns the rows (name, median ms, note) and prints the table; `measure()` gives the
samples themselves, which `make bench` (benchmarks/bench.py) puts into its table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dcodex_kernel.backends.local import LocalBackend  # noqa: E402
from dcodex_kernel.build_cache import BuildCache  # noqa: E402
from dcodex_kernel.events import collect  # noqa: E402
from dcodex_kernel.languages import recipe  # noqa: E402
from dcodex_kernel.request import Language, Request  # noqa: E402
from dcodex_kernel.sandbox import isolation  # noqa: E402
from dcodex_kernel.verdicts import Case  # noqa: E402

HELLO = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
OVERHEAD_TARGET_MS = 300.0


def samples_ms(fns: dict, repeat: int) -> dict[str, list[float]]:
    """Milliseconds of each function, sampled in turn (a drifting load falls on all)."""
    for fn in fns.values():
        fn()  # warm-up
    samples = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1000)
    return samples


def measure(n: int, repeat: int) -> dict[str, list[float]]:
    """The samples (ms) of each measurement: cases_cold, single_cold, single_cached, cases,
    separate, bare (benchmarks/bench.py takes them for its table)."""
    tmp = tempfile.mkdtemp(prefix="dcodex-bench-cases-")
    try:
        backend = LocalBackend(BuildCache(os.path.join(tmp, "cache")))
        cases = tuple(Case(str(i), b"", b"hello\n") for i in range(1, n + 1))
        rec = recipe(Language.C)
        src = os.path.join(tmp, "hello.c")
        exe = os.path.join(tmp, "hello")
        with open(src, "w") as f:
            f.write(HELLO)
        subprocess.run([*rec.compiler(), *rec.default_flags, src, "-o", exe], check=True)

        def with_cases(cache=True):
            result = collect(backend.execute(Request(Language.C, HELLO, cases=cases, cache=cache)))
            assert result.ok and len(result.cases) == n and result.cached == cache, result
            return result

        def one_run(cache=True):
            result = collect(backend.execute(Request(Language.C, HELLO, cache=cache)))
            assert result.ok and result.stdout == "hello\n" and result.cached == cache, result

        def separate_runs():
            for _ in range(n):
                one_run()

        def bare():
            for _ in range(n):
                subprocess.run([exe], stdout=subprocess.PIPE, check=True)

        collect(backend.execute(Request(Language.C, HELLO)))  # fills the build cache
        return samples_ms({
            "cases_cold": lambda: with_cases(cache=False),
            "single_cold": lambda: one_run(cache=False),
            "single_cached": one_run,
            "cases": with_cases,
            "separate": separate_runs,
            "bare": bare,
        }, repeat)
    finally:
        shutil.rmtree(tmp)


def main(argv: list[str] | None = None, *, show: bool = True) -> list[tuple[str, float, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--cases", type=int, default=20, dest="n")
    opts = parser.parse_args(argv)
    n = opts.n
    got = {name: statistics.median(s) for name, s in measure(n, opts.repeat).items()}

    compile_ms = got["single_cold"] - got["single_cached"]
    budget = compile_ms + got["separate"]
    overhead = got["cases"] - got["bare"]
    rows = [
        (f"--cases, {n} cases, cold build", got["cases_cold"],
         f"target <= one compile + {n} cached runs = {budget:.0f} ms"),
        (f"--cases, {n} cases, cached build", got["cases"], f"{overhead:+.0f} ms over the floor "
         f"(target < +{OVERHEAD_TARGET_MS:.0f} ms)"),
        (f"{n} separate cached runs", got["separate"], f"{got['separate'] / got['cases']:.1f}x the --cases run"),
        ("one compile (cold run - cached run)", compile_ms, ""),
        ("one cached run", got["single_cached"], ""),
        (f"floor: the bare binary, {n} times", got["bare"], "subprocess, no sandbox"),
    ]
    if show:
        caps = isolation.detect()
        workers = min(n, len(os.sched_getaffinity(0)))
        print(f"isolation: {', '.join(caps.layers())}; cases run {workers} at a time")
        print(f"medians of {opts.repeat} samples, milliseconds\n")
        width = max(len(name) for name, _, _ in rows)
        print(f"{'':<{width}}  {'median':>8}")
        print("-" * (width + 10))
        for name, ms, note in rows:
            print(f"{name:<{width}}  {ms:8.1f}  {note}".rstrip())
        met_budget = got["cases_cold"] <= budget
        met_overhead = overhead < OVERHEAD_TARGET_MS
        print(f"\ncold --cases within one compile + {n} cached runs: {'yes' if met_budget else 'NO'}; "
              f"cached --cases overhead under {OVERHEAD_TARGET_MS:.0f} ms: {'yes' if met_overhead else 'NO'}")
    return rows


if __name__ == "__main__":
    main()
