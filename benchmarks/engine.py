"""Engine latency: hello world in C, C++ and Python through the local backend, next to the floor
measured in the same run (the compiled binary / the interpreter started directly).

    .venv/bin/python benchmarks/engine.py [--repeat N]

Target (issue 2): a build-cache hit costs <= 3 ms more than the bare binary; a Python run
<= 3 ms more than the bare interpreter. Medians, because this machine is shared and noisy.
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

HELLO = {
    Language.C: '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n',
    Language.CPP: '#include <iostream>\nint main() { std::cout << "hello" << std::endl; }\n',
    Language.PYTHON: 'print("hello")\n',
}


def median_ms(*fns, repeat: int) -> list[float]:
    """Median milliseconds of each function, sampled alternately so that the machine's drifting
    load (it is shared) falls on all of them alike."""
    for fn in fns:
        fn()  # warm-up
    samples = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, samples):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(s) * 1000 for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--cold-repeat", type=int, default=5)
    opts = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="dcodex-bench-")
    try:
        backend = LocalBackend(BuildCache(os.path.join(tmp, "cache")))
        caps = isolation.detect()
        rows = []
        for lang, code in HELLO.items():
            rec = recipe(lang)
            src = os.path.join(tmp, rec.source_file)
            with open(src, "w") as f:
                f.write(code)

            def run(cache=True):
                result = collect(backend.execute(Request(lang, code, cache=cache)))
                assert result.ok and result.stdout == "hello\n", result
                return result

            if rec.compiles:
                exe = os.path.join(tmp, f"hello-{lang.value}")
                subprocess.run([*rec.compiler(), *rec.default_flags, src, "-o", exe], check=True)
                floor_cmd = [exe]
                floor_name = "bare binary"
                cold, = median_ms(lambda: run(cache=False), repeat=opts.cold_repeat)
                run()  # fills the cache
                assert run().cached
            else:
                floor_cmd = [caps.python(),
                             "-I", "-u", "-B", src]
                floor_name = "bare interpreter"
                cold = None
            warm, floor = median_ms(
                run, lambda: subprocess.run(floor_cmd, stdout=subprocess.PIPE, check=True),
                repeat=opts.repeat)
            rows.append((lang.value, cold, warm, floor, floor_name))

        print(f"isolation: {', '.join(caps.layers())}")
        print(f"medians of {opts.repeat} runs (cold compile: {opts.cold_repeat}), milliseconds\n")
        header = f"{'language':<8} {'cold compile':>12} {'cached run':>10} {'floor':>8} {'overhead':>9} {'ratio':>6}  floor is"
        print(header)
        print("-" * len(header))
        for lang, cold, warm, floor, floor_name in rows:
            cold_s = f"{cold:12.1f}" if cold is not None else f"{'n/a':>12}"
            print(f"{lang:<8} {cold_s} {warm:10.2f} {floor:8.2f} {warm - floor:+9.2f} {warm / floor:6.2f}  {floor_name}")
        print("\ntarget: overhead <= +3.00 ms for cached C/C++ runs and for Python")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
