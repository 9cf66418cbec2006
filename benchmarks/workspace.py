"""What session workspace files cost a run: a cached C hello world and a Python hello world with
0 (the floor, measured in the same run), 10 and 100 workspace files of 4 KiB each, and one file
of 8 MiB. Every file is copied into each run's sandbox (copy-on-run), and is hashed into the
build cache key of a C build.

    .venv/bin/python benchmarks/workspace.py [--repeat N]

Medians with min/max of the whole execute() (sandbox set-up to Result), sampled alternately so
the machine's drifting load falls on every column alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dcodex_kernel.backends.local import LocalBackend  # noqa: E402
from dcodex_kernel.build_cache import BuildCache  # noqa: E402
from dcodex_kernel.events import Status, collect  # noqa: E402
from dcodex_kernel.request import Language, Request  # noqa: E402

PROGRAMS = {
    Language.C: '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n',
    Language.PYTHON: 'print("hello")\n',
}
WORKSPACES = {
    "no files (floor)": {},
    "10 x 4 KiB": {f"data/f{i}.txt": os.urandom(4096) for i in range(10)},
    "100 x 4 KiB": {f"data/f{i}.txt": os.urandom(4096) for i in range(100)},
    "1 x 8 MiB": {"big.bin": os.urandom(8 << 20)},
}


def rows(repeat: int = 15) -> list[dict]:
    tmp = tempfile.mkdtemp(prefix="dcodex-bench-workspace-")
    try:
        backend = LocalBackend(BuildCache(os.path.join(tmp, "builds")))
        out = []
        for language, code in PROGRAMS.items():
            requests = [Request(language, code, files=files) for files in WORKSPACES.values()]
            for request in requests:  # warm: builds cached, launcher built
                result = collect(backend.execute(request))
                assert result.status is Status.OK, result
            times = [[] for _ in requests]
            for _ in range(repeat):
                for request, samples in zip(requests, times):
                    start = time.perf_counter()
                    collect(backend.execute(request))
                    samples.append(time.perf_counter() - start)
            floor = statistics.median(times[0])
            for name, samples in zip(WORKSPACES, times):
                median = statistics.median(samples)
                out.append({"language": language.value, "workspace": name, "median_ms": median * 1000,
                            "min_ms": min(samples) * 1000, "max_ms": max(samples) * 1000,
                            "over_floor_ms": (median - floor) * 1000})
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    table = rows(parser.parse_args(argv).repeat)
    print(f"{'language':<8} {'workspace':<18} {'median ms':>10} {'min':>8} {'max':>8} {'over floor':>11}")
    for r in table:
        print(f"{r['language']:<8} {r['workspace']:<18} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} "
              f"{r['max_ms']:>8.1f} {r['over_floor_ms']:>+11.1f}")
    return table


if __name__ == "__main__":
    main()
