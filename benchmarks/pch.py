"""Cold C++ compiles with and without the precompiled headers, next to plain g++ (the floor)
with the same flags, measured in the same run.

    .venv/bin/python benchmarks/pch.py [--repeat N]

Target (issue 12): a cold compile of a `<bits/stdc++.h>` program >= 3x faster than plain g++
with the same flags; an `<iostream>` hello >= 1.5x faster. "Cold" = not in the build cache (a
new program); the precompiled header itself is built once per compiler and flags, before.
Medians with min/max: this machine is shared and noisy.
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
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dcodex_kernel.backends.local import LocalBackend  # noqa: E402
from dcodex_kernel.build_cache import BuildCache  # noqa: E402
from dcodex_kernel.events import collect  # noqa: E402
from dcodex_kernel.languages import recipe  # noqa: E402
from dcodex_kernel.pch import PchStore  # noqa: E402
from dcodex_kernel.request import Language, Request  # noqa: E402

PROGRAMS = {
    "<bits/stdc++.h>": "#include <bits/stdc++.h>\nusing namespace std;\n"
                       "int main() { vector<int> v{3, 1, 2}; sort(v.begin(), v.end());\n"
                       "  for (int x : v) { cout << x << ' '; }\n  cout << endl; }\n",
    "<iostream> hello": '#include <iostream>\nint main() { std::cout << "hello" << std::endl; }\n',
}


def sample(fns, repeat: int) -> list[list[float]]:
    """Seconds of each function, sampled alternately (the machine's drifting load falls on all)."""
    out = [[] for _ in fns]
    for _ in range(repeat):
        for fn, times in zip(fns, out):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return out


def rows(repeat: int = 5) -> list[dict]:
    """One row per program: {program, plain_g++, engine_without, engine_with} as (median, min, max)
    seconds, the speed-up of the engine with precompiled headers over plain g++, and the
    samples themselves (`samples`: the same three keys, seconds)."""
    tmp = Path(tempfile.mkdtemp(prefix="dcodex-bench-pch-"))
    try:
        with_pch = LocalBackend(BuildCache(tmp / "builds"), pch=PchStore(tmp / "pch"))
        ready = with_pch.precompile_headers()
        without = LocalBackend(BuildCache(tmp / "builds-plain"), pch=PchStore(enabled=False))
        rec = recipe(Language.CPP)
        table = []
        for name, code in PROGRAMS.items():
            src = tmp / "main.cpp"
            src.write_text(code)

            def gxx():
                subprocess.run([*rec.compiler(), *rec.default_flags, str(src), "-o", str(tmp / "a.out")],
                               check=True, capture_output=True)

            def engine(backend):
                def run():  # cache=False: every compile is a new program's
                    result = collect(backend.execute(Request(Language.CPP, code, cache=False)))
                    assert result.ok, result
                return run

            plain, off, on = sample([gxx, engine(without), engine(with_pch)], repeat)
            stats = [(statistics.median(s), min(s), max(s)) for s in (plain, off, on)]
            table.append({"program": name, "plain_g++": stats[0], "engine_without": stats[1],
                          "engine_with": stats[2], "speedup": stats[0][0] / stats[2][0],
                          "precompiled": bool(ready),
                          "samples": {"plain_g++": plain, "engine_without": off, "engine_with": on}})
        return table
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    table = rows(opts.repeat)
    print(f"cold C++ compiles, seconds: median (min-max) of {opts.repeat}\n")
    header = (f"{'program':<18} {'plain g++ (floor)':>20} {'engine, no PCH':>20} "
              f"{'engine, PCH':>20} {'vs g++':>7}")
    print(header)
    print("-" * len(header))

    def cell(s):
        return f"{s[0]:.2f} ({s[1]:.2f}-{s[2]:.2f})"

    for row in table:
        print(f"{row['program']:<18} {cell(row['plain_g++']):>20} {cell(row['engine_without']):>20} "
              f"{cell(row['engine_with']):>20} {row['speedup']:6.2f}x")
    if not all(r["precompiled"] for r in table):
        print("\n(no precompiled headers on this machine: they need a confined filesystem)")
    print("\ntarget: <bits/stdc++.h> >= 3x, <iostream> hello >= 1.5x faster than plain g++")


if __name__ == "__main__":
    main()
