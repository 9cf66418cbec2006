"""Engine latency: hello world in C, C++ and Python through the local backend, next to the floor
measured in the same run (the compiled binary / the interpreter started directly).

    .venv/bin/python benchmarks/engine.py [--repeat N]

Target (issue 2): a build-cache hit costs <= 3 ms more than the bare binary; a Python run
<= 3 ms more than the bare interpreter. Medians, because this machine is shared and noisy.

A second table adds the sandbox's layers one at a time to a cached C run (issue 8: the whole
confinement <= +8 ms over the bare rlimit layer; issue 14: the cost of cgroup accounting).

A third one is interactive stdin (issue 11): a cached C hello with and without a StdinFeed (what
a kernel cell gets when the frontend allows input), and the cost of one look in /proc at a run
that waits for input (paid only while an interactive run's output is quiet).
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
from dataclasses import replace

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
        layer_table(caps, tmp, opts.repeat)
        stdin_table(backend, opts.repeat)
    finally:
        shutil.rmtree(tmp)


def layer_levels(caps: isolation.Capabilities) -> list[tuple[str, isolation.Capabilities]]:
    """(name, capabilities) of each isolation level this machine has, from the bare rlimit
    layer to the full sandbox, one layer added at a time, each sandbox made for its run; then
    the full sandbox made ahead of need (pool.py), as the engine runs it."""
    bare = isolation.Capabilities(root=caps.root, pid_namespace=False, user_namespace=False,
                                  python_exe=caps.python_exe)
    own = replace(caps, prestart=False)
    levels = [("rlimits + private dir (bare layer)", bare)]
    if caps.pid_namespace:
        levels.append(("+ pid, ipc, net namespaces", replace(
            own, filesystem=False, seccomp=False, cgroup=None)))
    if caps.filesystem:
        levels.append(("+ confined filesystem", replace(own, seccomp=False, cgroup=None)))
    if caps.seccomp:
        levels.append(("+ seccomp", replace(own, cgroup=None)))
    if caps.cgroup:
        levels.append((f"+ {caps.cgroup.describe()}", own))
    if caps.prestart:
        levels.append(("all of it, pre-started (the engine's default)", caps))
    return levels


def layer_table(caps: isolation.Capabilities, tmp: str, repeat: int) -> None:
    """A cached C hello with the sandbox's layers added one at a time, each next to the bare
    binary in the same run."""
    levels = layer_levels(caps)
    code = HELLO[Language.C]
    exe = os.path.join(tmp, "hello-c")
    rec = recipe(Language.C)
    src = os.path.join(tmp, "layers.c")
    with open(src, "w") as f:
        f.write(code)
    subprocess.run([*rec.compiler(), *rec.default_flags, src, "-o", exe], check=True)
    cache = BuildCache(os.path.join(tmp, "layer-cache"))
    backends = [LocalBackend(cache, caps=c) for _, c in levels]

    def runner(backend):
        def run():
            result = collect(backend.execute(Request(Language.C, code)))
            assert result.ok and result.stdout == "hello\n", result
        return run

    times = median_ms(*(runner(b) for b in backends),
                      lambda: subprocess.run([exe], stdout=subprocess.PIPE, check=True), repeat=repeat)
    floor = times[-1]
    print(f"\ncached C hello by sandbox layer: medians of {repeat} runs, milliseconds "
          f"(bare binary: {floor:.2f} ms)\n")
    header = f"{'layers':<38} {'run':>7} {'over floor':>10} {'over bare layer':>15}"
    print(header)
    print("-" * len(header))
    for (name, _), ms in zip(levels, times):
        print(f"{name:<38} {ms:7.2f} {ms - floor:+10.2f} {ms - times[0]:+15.2f}")
    print("\ntarget: the full confinement <= +8.00 ms over the bare layer")


def stdin_table(backend: LocalBackend, repeat: int) -> None:
    import psutil

    from dcodex_kernel.events import InputRequest
    from dcodex_kernel.interactive import StdinFeed
    from dcodex_kernel.sandbox.stdin_probe import blocked_reading

    code = HELLO[Language.C]

    def plain():
        assert collect(backend.execute(Request(Language.C, code))).ok

    def with_feed():
        with StdinFeed() as feed:
            assert collect(backend.execute(Request(Language.C, code), None, feed)).ok

    # `plain` twice: the difference between its two rows is this machine's noise, to read the
    # feed's difference against.
    plain_ms, feed_ms, again_ms = median_ms(plain, with_feed, plain, repeat=repeat)
    # One look at a run that waits: time blocked_reading() while the run sits in read(0).
    looks = []
    with StdinFeed() as feed:
        for event in backend.execute(Request(Language.PYTHON, "input()"), None, feed):
            if isinstance(event, InputRequest):
                launcher = next(p for p in psutil.Process().children()
                                if p.name().startswith("dcodex-launch"))
                program = launcher.children(recursive=True)[-1]
                inode = os.stat(f"/proc/{program.pid}/fd/0").st_ino
                for _ in range(200):
                    start = time.perf_counter()
                    assert blocked_reading(launcher.pid, inode)
                    looks.append(time.perf_counter() - start)
                feed.end()
    print(f"\ninteractive stdin: medians of {repeat} runs, milliseconds\n")
    print(f"{'cached C hello, stdin EOF (no feed)':<44} {plain_ms:7.2f}")
    print(f"{'cached C hello, interactive (a StdinFeed)':<44} {feed_ms:7.2f}  ({feed_ms - plain_ms:+.2f})")
    print(f"{'cached C hello, stdin EOF again (noise)':<44} {again_ms:7.2f}  ({again_ms - plain_ms:+.2f})")
    print(f"{'one look at a waiting run (/proc)':<44} {statistics.median(looks) * 1000:7.3f}")


if __name__ == "__main__":
    main()
