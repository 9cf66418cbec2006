"""All the benchmarks as ONE table: every figure a median with min/max over repeated runs, every
row next to its floor measured in the same run (samples alternate between a row and its floor,
so the drifting load of this shared machine falls on both alike).

    .venv/bin/python benchmarks/bench.py [--quick] [--write] [--only GROUP ...]

Groups: engine (C, C++, Python hello through the engine with a cached build, each sample once
the engine's pool has a sandbox ready again, as for a cell; cold compiles with and without
precompiled headers; each isolation level, back to back), kernels (a repeated cell through each
DCodeX kernel and ipykernel's python3 via jupyter_client, a cell printing 1 MiB, the kernel's
CPU while a cell sleeps), magics (a %%dcodex cell against the engine alone), server
(benchmarks/server.py's main(): the local backend and `dcodex serve` at 1/4/16 clients) and cases
(benchmarks/cases.py's measure(): --cases against the bare binary). --write also writes the table as Markdown to benchmarks/RESULTS.md (with the date, the
machine and the command) and puts it into README.md between the `bench:start`/`bench:end`
markers. --quick: small repeat counts (a minute or two); the full run stays well under 10 min.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import io
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from dcodex_kernel.backends.local import LocalBackend  # noqa: E402
from dcodex_kernel.build_cache import BuildCache  # noqa: E402
from dcodex_kernel.events import collect  # noqa: E402
from dcodex_kernel.languages import recipe  # noqa: E402
from dcodex_kernel.request import Language, Request  # noqa: E402
from dcodex_kernel.sandbox import isolation, pool  # noqa: E402

import engine as engine_bench  # noqa: E402
import kernel as kernel_bench  # noqa: E402

GROUPS = ("engine", "kernels", "magics", "server", "cases")
MIB_LINES = 1024  # 1024 lines of 1024 bytes: 1 MiB
PRINT_MIB = {
    "python3": "import sys\nsys.stdout.write(('x' * 1023 + '\\n') * 1024)",
    "dcodex-c": "%%dcodex --output-limit 2M\n#include <stdio.h>\n#include <string.h>\n"
                "int main(void) { char line[1024]; memset(line, 'x', 1023); line[1023] = '\\n';\n"
                "  for (int i = 0; i < 1024; i++) fwrite(line, 1, 1024, stdout); return 0; }",
}


@dataclass
class Row:
    """One line of the table: `samples` of the thing measured and `floor` of what it is
    compared with, both in `unit`; `target` says what should hold, `met` whether it does."""

    group: str
    name: str
    samples: list[float]
    unit: str  # "ms", "s", "CPU s", "runs/s"
    floor_name: str = ""
    floor: list[float] = field(default_factory=list)
    target: str = ""
    met: bool | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def floor_median(self) -> float:
        return statistics.median(self.floor) if self.floor else float("nan")

    def versus(self) -> str:
        if not self.floor:
            return ""
        ratio = self.median / self.floor_median if self.floor_median else float("inf")
        if self.unit == "ms":
            return f"{self.median - self.floor_median:+.2f} ms ({ratio:.2f}×)"
        if self.unit == "s" and ratio < 1:
            return f"{1 / ratio:.2f}× faster"
        return f"{ratio:.2f}×"


def figure(samples: list[float], unit: str) -> str:
    """'6.20 (5.90–7.80) ms': median (min–max)."""
    if not samples:
        return "—"
    digits = 3 if unit in ("CPU s",) else 2 if unit in ("ms", "s") else 1
    med, lo, hi = statistics.median(samples), min(samples), max(samples)
    if len(samples) == 1:
        return f"{med:.{digits}f} {unit}"
    return f"{med:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f}) {unit}"


def sample(fns, repeat: int, scale: float = 1000.0, settle=None) -> list[list[float]]:
    """Each function's times (ms by default), sampled alternately after one warm-up call each.
    `settle()`, untimed, before each sample: see engine_rows."""
    for fn in fns:
        fn()
    out = [[] for _ in fns]
    for _ in range(repeat):
        for fn, times in zip(fns, out):
            if settle is not None:
                settle()
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * scale)
    return out


def sandbox_ready() -> None:
    """Wait until the engine's pool has replaced the sandbox the last run used (pool.py): a
    cell finds one ready unless it follows the previous within milliseconds. Without it each
    sample would also pay for the previous run's replacement being made on the other core (the
    "all of it, pre-started" isolation row is measured that way, back to back)."""
    pool.the_pool().wait_idle()


# ---- engine ------------------------------------------------------------------------------

def engine_rows(tmp: Path, repeat: int, cold_repeat: int) -> list[Row]:
    backend = LocalBackend(BuildCache(tmp / "engine-cache"))
    caps = isolation.detect()
    rows = []
    for lang, code in engine_bench.HELLO.items():
        rec = recipe(lang)
        src = tmp / rec.source_file
        src.write_text(code)

        def run(cache=True, lang=lang, code=code):
            result = collect(backend.execute(Request(lang, code, cache=cache)))
            assert result.ok and result.stdout == "hello\n", result
            return result

        if rec.compiles:
            exe = tmp / f"hello-{lang.value}"

            def compile_plain(rec=rec, src=src, exe=exe):
                subprocess.run([*rec.compiler(), *rec.default_flags, str(src), "-o", str(exe)],
                               check=True, capture_output=True)

            if lang is Language.C:  # C++ cold compiles are the PCH rows below
                cold, plain = sample([lambda: run(cache=False), compile_plain], cold_repeat)
                rows.append(Row("engine", "C hello, cold compile", cold, "ms",
                                "plain gcc, same flags", plain))
            compile_plain()
            run()
            assert run().cached
            floor_cmd, floor_name = [str(exe)], "the bare binary"
        else:
            floor_cmd = [caps.python(), "-I", "-u", "-B", str(src)]
            floor_name = "the bare interpreter"
        warm, floor = sample([run, lambda: subprocess.run(floor_cmd, stdout=subprocess.PIPE,
                                                          check=True)], repeat, settle=sandbox_ready)
        name = f"{rec.display_name} hello" + (", cached build" if rec.compiles else "")
        over = statistics.median(warm) - statistics.median(floor)
        rows.append(Row("engine", name, warm, "ms", floor_name, floor, "≤ floor + 3 ms", over <= 3))
    return rows


def pch_rows(repeat: int) -> list[Row]:
    import pch as pch_bench

    rows = []
    for entry, target in zip(pch_bench.rows(repeat), (3.0, 1.5)):
        plain = entry["samples"]["plain_g++"]
        for key, label in (("engine_without", "no PCH"), ("engine_with", "PCH")):
            samples = entry["samples"][key]
            met = None
            want = ""
            if key == "engine_with":
                want = f"≥ {target:g}× faster than g++"
                met = statistics.median(plain) / statistics.median(samples) >= target
            rows.append(Row("engine", f"C++ {entry['program']}, cold compile, {label}", samples, "s",
                            "plain g++, same flags", plain, want, met))
    return rows


def layer_rows(tmp: Path, repeat: int) -> list[Row]:
    caps = isolation.detect()
    levels = engine_bench.layer_levels(caps)
    code = engine_bench.HELLO[Language.C]
    rec = recipe(Language.C)
    src, exe = tmp / "layers.c", tmp / "layers"
    src.write_text(code)
    subprocess.run([*rec.compiler(), *rec.default_flags, str(src), "-o", str(exe)], check=True)
    cache = BuildCache(tmp / "layer-cache")

    def runner(backend):
        def run():
            result = collect(backend.execute(Request(Language.C, code)))
            assert result.ok and result.stdout == "hello\n", result
        return run

    times = sample([*(runner(LocalBackend(cache, caps=c)) for _, c in levels),
                    lambda: subprocess.run([str(exe)], stdout=subprocess.PIPE, check=True)], repeat)
    floor = times[-1]
    return [Row("engine", f"isolation: {name}", ms, "ms", "the bare binary", floor)
            for (name, _), ms in zip(levels, times)]


# ---- kernels and magics ------------------------------------------------------------------

def kernel_rows(tmp: Path, runs: int, sleeps: int) -> list[Row]:
    ksm, env = kernel_bench.kernels_in(str(tmp / "kernels"))
    results = {}
    for name in kernel_bench.CELLS:  # one kernel at a time, python3 first: the floor
        extra = {"1 MiB": PRINT_MIB[name]} if name in PRINT_MIB else None
        results[name] = kernel_bench.measure(ksm, name, env, runs, sleeps, extra)
    ms = lambda xs: [x * 1000 for x in xs]  # noqa: E731
    base = results["python3"]
    rows = []
    for name in ("dcodex-c", "dcodex-cpp", "dcodex-python"):
        r = results[name]
        ratio = r["median"] / base["median"]
        target, met = ("≤ 2× python3", ratio <= 2) if name != "dcodex-python" else ("", None)
        what = "hello cell" + (" (cached build)" if name != "dcodex-python" else "")
        rows.append(Row("kernels", f"{name}: {what}", ms(r["times"]), "ms",
                        "ipykernel python3: print('hello')", ms(base["times"]), target, met))
    big, floor = results["dcodex-c"]["extra"]["1 MiB"], base["extra"]["1 MiB"]
    rows.append(Row("kernels", "dcodex-c: a cell printing 1 MiB", ms(big), "ms",
                    "ipykernel python3 printing 1 MiB", ms(floor), "≤ 2× python3",
                    statistics.median(big) <= 2 * statistics.median(floor)))
    for name in ("dcodex-c", "dcodex-cpp", "dcodex-python"):
        cpu = results[name]["idle_cpus"]
        rows.append(Row("kernels", f"{name}: kernel CPU while a cell sleeps 2 s", cpu, "CPU s",
                        "ipykernel python3, the same", base["idle_cpus"], "≤ 0.05 s",
                        statistics.median(cpu) <= 0.05))
    return rows


def magics_rows(tmp: Path, repeat: int) -> list[Row]:
    """A `%%dcodex c` hello cell in a real IPython shell against the same backend called alone."""
    from IPython.testing import globalipapp

    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    backend = LocalBackend(BuildCache(tmp / "magics-cache"))
    shell.run_line_magic("load_ext", "dcodex_kernel")
    shell.magics_manager.registry["DCodeXMagics"].backend = backend
    code = engine_bench.HELLO[Language.C]
    sink = io.StringIO()

    def cell():
        with contextlib.redirect_stdout(sink):
            shell.run_cell(f"%%dcodex c --quiet\n{code}").raise_error()

    def alone():
        assert collect(backend.execute(Request(Language.C, code))).ok

    try:
        magic, engine = sample([cell, alone], repeat)
    finally:
        shell.run_line_magic("unload_ext", "dcodex_kernel")
    assert sink.getvalue().count("hello\n") == repeat + 1
    return [Row("magics", "%%dcodex c hello cell (IPython shell)", magic, "ms",
                "the engine alone, same request", engine)]


# ---- other benchmark modules -------------------------------------------------------------

def server_rows(quick: bool) -> list[Row]:
    try:
        server_bench = importlib.import_module("server")
    except ImportError as e:
        return [Row("server", f"benchmarks/server.py not importable ({e})", [], "")]
    argv = ["--runs", "16", "--rounds", "2"] if quick else ["--runs", "32", "--rounds", "3"]
    with contextlib.redirect_stdout(io.StringIO()):  # its own table: ours has the rows
        found = server_bench.main(argv)
    rows = []
    for r in found:
        # server.py gives medians over its rounds (no min/max); throughput, so higher is better.
        rows.append(Row("server", f"cached C hello via dcodex serve, {r.clients} client(s)",
                        [r.server_runs_s], "runs/s", "local backend, same clients",
                        [r.local_runs_s],
                        "≥ 80 % of local" if r.clients == 4 else "",
                        r.ratio >= 0.8 if r.clients == 4 else None))
        if r.clients == 4:  # the same with the server's threads on one CPU
            rows.append(Row("server", "cached C hello via dcodex serve --pin-cpu, 4 clients",
                            [r.pinned_runs_s], "runs/s", "local backend, same clients",
                            [r.local_runs_s], "≥ 80 % of local", r.pinned_ratio >= 0.8))
    return rows


def cases_rows(quick: bool) -> list[Row]:
    """benchmarks/cases.py: 20 hello-world cases with --cases, next to the bare binary 20 times;
    a cold --cases run next to one compile plus 20 cached runs (its target)."""
    import cases as cases_bench

    n = 20
    got = cases_bench.measure(n, 3 if quick else 8)
    med = statistics.median
    budget = [cold - cached + separate for cold, cached, separate
              in zip(got["single_cold"], got["single_cached"], got["separate"])]
    overhead = med(got["cases"]) - med(got["bare"])
    return [
        Row("cases", f"--cases, {n} hello cases, cold build", got["cases_cold"], "ms",
            f"one compile + {n} cached runs", budget, "≤ floor", med(got["cases_cold"]) <= med(budget)),
        Row("cases", f"--cases, {n} hello cases, cached build", got["cases"], "ms",
            f"the bare binary {n} times", got["bare"], "≤ floor + 300 ms", overhead < 300),
    ]


# ---- the table ---------------------------------------------------------------------------

def table(rows: list[Row]) -> list[list[str]]:
    out = [["group", "row", "median (min–max)", "floor", "floor median (min–max)", "vs floor",
            "target"]]
    for r in rows:
        verdict = "" if r.met is None else (" ✓" if r.met else " ✗ missed")
        out.append([r.group, r.name, figure(r.samples, r.unit), r.floor_name,
                    figure(r.floor, r.unit) if r.floor else "", r.versus(),
                    (r.target + verdict).strip()])
    return out


def text_table(cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + " --- |" * len(cells[0])]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), "")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    who = "root" if os.geteuid() == 0 else "an ordinary user"
    return (f"{os.cpu_count()} cores ({model or platform.processor() or '?'}), "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"as {who}, load average {load} at the end")


def write_results(cells, command: str, took_s: float, stamp: str) -> None:
    md = markdown_table(cells)
    head = (f"Measured {stamp} on {machine()}; `{command}` took {took_s / 60:.1f} min. Each "
            "figure: median (min–max) over the repeated runs; each row's floor measured in the "
            "same run, alternating with it (the kernel rows: one kernel after another, python3 "
            "first; the server rows: medians of benchmarks/server.py's alternating rounds, "
            "without min/max).")
    (HERE / "RESULTS.md").write_text(f"# Benchmark results\n\n{head}\n\n{md}\n")
    readme = HERE.parent / "README.md"
    text = readme.read_text()
    block = f"<!-- bench:start -->\n{head}\n\n{md}\n<!-- bench:end -->"
    new, n = re.subn(r"<!-- bench:start -->.*?<!-- bench:end -->", lambda _: block, text,
                     flags=re.DOTALL)
    if n:
        readme.write_text(new)
    else:
        print("README.md has no <!-- bench:start --> ... <!-- bench:end --> block", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small repeat counts")
    parser.add_argument("--write", action="store_true",
                        help="write benchmarks/RESULTS.md and the README's table")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS))
    opts = parser.parse_args(argv)
    quick = opts.quick
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tmp = Path(tempfile.mkdtemp(prefix="dcodex-bench-"))
    rows: list[Row] = []
    steps = {
        "engine": lambda: [*engine_rows(tmp, 10 if quick else 60, 2 if quick else 5),
                           *pch_rows(2 if quick else 3), *layer_rows(tmp, 10 if quick else 60)],
        "kernels": lambda: kernel_rows(tmp, 10 if quick else 40, 1 if quick else 3),
        "magics": lambda: magics_rows(tmp, 10 if quick else 60),
        "server": lambda: server_rows(quick),
        "cases": lambda: cases_rows(quick),
    }
    try:
        for group in GROUPS:
            if group in opts.only:
                print(f"[bench] {group} …", file=sys.stderr, flush=True)
                rows += steps[group]()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - started
    cells = table(rows)
    print(text_table(cells))
    print(f"\n{stamp}, {machine()}; {took:.0f} s")
    if opts.write:
        command = "make bench" + (" BENCH_ARGS=--quick" if quick else "")
        write_results(cells, command, took, stamp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
