"""`--repeat N`: build once, run N times, each run its own sandbox with the cell's limits; the
first run's output shown, every run's figures in the Result (min / median / max). Through the
engine, the DCodeX kernel, the magics, `dcodex run` and a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.backends.remote import RemoteBackend
from dcodex_kernel.build_cache import BuildCache
from dcodex_kernel.cancel import CancelToken
from dcodex_kernel.events import Result, Status, collect, spread
from dcodex_kernel.options import OptionError, parse_header, request_from
from dcodex_kernel.request import MAX_REPEAT, Language, Limits, Request
from dcodex_kernel.verdicts import Case

from .kernel_support import collect as collect_run
from .kernel_support import execute, start_kernel, stop_kernel
from .support import ipython_shell, sandbox_processes, wait_until
from .test_server import Served

# Says hello, then sleeps 50 ms: every run's wall time is at least that.
SLEEPY_C = """\
#include <stdio.h>
#include <time.h>
int main(void) {
    puts("hello");
    struct timespec t = {0, 50 * 1000 * 1000};
    nanosleep(&t, 0);
    return 0;
}
"""
# Burns at least 0.15 s of CPU.
BURN_C = """\
#include <stdio.h>
#include <time.h>
int main(void) {
    volatile unsigned long x = 0;
    while ((double)clock() / CLOCKS_PER_SEC < 0.15) x++;
    printf("%d\\n", x > 0);
    return 0;
}
"""
# Sleeps 0.2 s: under a 0.5 s wall limit per run, however many runs.
NAP_PY = "import time\nprint('nap', flush=True)\ntime.sleep(0.2)\n"
# Fails once the wall clock passes argv[1] (a time.time()); each run takes 1 s.
FAILS_LATER_PY = """\
import sys, time
if time.time() > float(sys.argv[1]):
    print("too late", flush=True)
    sys.exit(3)
print("in time", flush=True)
time.sleep(1)
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return LocalBackend(BuildCache(tmp_path_factory.mktemp("repeat-cache")))


def run(engine, language, code, **fields) -> Result:
    return collect(engine.execute(Request(language, code, **fields)))


def test_spread():
    assert spread([3, 1, 2]) == {"min": 1, "median": 2, "max": 3}
    assert spread([4, 1, 2, 3]) == {"min": 1, "median": 2.5, "max": 4}


def test_a_sleeping_program_shows_its_output_once_and_every_run_counts(engine):
    started = time.monotonic()
    result = run(engine, Language.C, SLEEPY_C, repeat=5)
    took = time.monotonic() - started
    assert result.ok, result
    assert result.stdout == "hello\n", "only the first run's output is shown"
    assert len(result.runs) == 5 and took >= 5 * 0.05
    assert all(r.wall_s >= 0.05 and r.peak_memory > 0 for r in result.runs)
    timing = result.timing()
    assert timing["runs"] == 5
    assert timing["wall_s"]["median"] >= 0.05
    walls = sorted(r.wall_s for r in result.runs)
    assert timing["wall_s"] == {"min": walls[0], "median": walls[2], "max": walls[-1]}
    assert result.wall_s == walls[2] and result.peak_memory == max(r.peak_memory for r in result.runs)
    assert "5 runs, wall " in result.summary() and "(min / median / max)" in result.summary()
    # Built once: the series compiled it, the next series finds it in the cache.
    assert not result.cached and run(engine, Language.C, SLEEPY_C, repeat=2).cached


def test_cpu_time_is_measured_per_run(engine):
    result = run(engine, Language.C, BURN_C, repeat=3)
    assert result.ok and result.stdout == "1\n"
    assert result.timing()["cpu_s"]["min"] >= 0.14
    assert all(r.cpu_s >= 0.14 for r in result.runs)


def test_limits_are_each_runs(engine):
    # 4 runs of 0.2 s under a 0.5 s wall limit: the limit is per run, not for the series.
    result = run(engine, Language.PYTHON, NAP_PY, repeat=4, limits=Limits(wall_s=0.5))
    assert result.ok, result
    assert len(result.runs) == 4 and sum(r.wall_s for r in result.runs) > 0.5
    # A run over its limit stops the series with that limit's status.
    over = run(engine, Language.PYTHON, NAP_PY, repeat=4, limits=Limits(wall_s=0.1))
    assert over.status is Status.WALL_TIMEOUT and len(over.runs) == 1
    assert over.message.startswith("run 1 of 4: ")


def test_a_failing_run_stops_the_series_with_its_status(engine):
    deadline = time.time() + 0.5  # the first run starts before, the second after (1 s later)
    result = run(engine, Language.PYTHON, FAILS_LATER_PY, repeat=5, args=(repr(deadline),))
    assert result.status is Status.RUNTIME_ERROR and result.exit_code == 3
    assert len(result.runs) == 2
    assert result.message == "run 2 of 5: Exited with status 3"
    assert result.stdout == "in time\n"


def test_a_compile_error_runs_nothing(engine):
    result = run(engine, Language.C, "int main(void) { return x; }", repeat=3)
    assert result.status is Status.COMPILE_ERROR and result.runs == ()


def test_interrupt_stops_the_series(engine):
    before = time.time()
    with CancelToken() as token:
        threading.Timer(0.7, token.cancel).start()
        started = time.monotonic()
        result = collect(engine.execute(Request(Language.PYTHON, NAP_PY, repeat=50), token))
        took = time.monotonic() - started
    assert result.status is Status.CANCELLED
    assert took < 2.5 and 1 <= len(result.runs) < 50
    assert wait_until(lambda: not sandbox_processes(before), 3), sandbox_processes(before)


def test_the_option_grammar():
    ns = parse_header("c --repeat 7")
    assert request_from(ns, code="int main(void){}", language=Language.C, base=Limits()).repeat == 7
    assert request_from(parse_header("c"), code="", language=Language.C, base=Limits()).repeat == 1
    for bad in ("0", "-2", "1.5", "x", str(MAX_REPEAT + 1)):
        with pytest.raises(OptionError, match="repeat"):
            parse_header(f"c --repeat {bad}")
    with pytest.raises(ValueError, match="repeat and cases"):
        Request(Language.C, "", repeat=2, cases=(Case("1", b"", b""),))


# ---- front doors -------------------------------------------------------------------------

def test_kernel(tmp_path):
    km, kc = start_kernel("dcodex-c")
    try:
        ran = execute(kc, "%%dcodex --repeat 4\n" + SLEEPY_C)
        assert ran.status == "ok" and ran.text("stdout") == "hello\n"
        lines = [c["data"]["text/plain"] for _, kind, c in ran.outputs if kind == "display_data"]
        assert len(lines) == 1 and lines[0].startswith("[dcodex] ok (4 runs, wall ")
        assert len(ran.result["runs"]) == 4
        assert all(r["wall_s"] >= 0.05 for r in ran.result["runs"])
        # A failing run: the error says which run and carries the figures so far.
        failed = execute(kc, "%%dcodex python --repeat 3\nimport sys; print('x'); sys.exit(4)")
        assert failed.status == "error" and failed.reply["content"]["evalue"] == \
            "run 1 of 3: Exited with status 4"
        # Interrupt stops the series, and the kernel carries on.
        started = time.monotonic()
        msg_id = kc.execute("%%dcodex python --repeat 100\n" + NAP_PY)
        time.sleep(1.0)
        km.interrupt_kernel()
        stopped = collect_run(kc, msg_id, started)
        assert stopped.reply["content"]["ename"] == "Interrupted"
        assert time.monotonic() - started < 5 and len(stopped.result["runs"]) < 100
        assert stopped.text("stdout") == "nap\n"
        assert execute(kc, "%%dcodex python\nprint('alive')").text("stdout") == "alive\n"
    finally:
        stop_kernel(km, kc)


def test_magics_out_gives_the_figures(engine, capsys):
    shell = ipython_shell()
    shell.run_line_magic("load_ext", "dcodex_kernel")
    try:
        shell.magics_manager.registry["DCodeXMagics"].backend = engine
        shell.run_cell(f"%%dcodex python --repeat 3 --out series\n{NAP_PY}").raise_error()
        out = capsys.readouterr().out
        assert out.count("nap\n") == 1 and "[dcodex] ok (3 runs, wall " in out
        series = shell.user_ns["series"]
        assert len(series.runs) == 3 and series.timing()["runs"] == 3
        assert series.timing()["wall_s"]["min"] >= 0.2
        # A failing run raises, as a failing single run does.
        r = shell.run_cell("%%dcodex python --repeat 3\nraise SystemExit(2)")
        assert r.error_in_exec is not None and "run 1 of 3" in str(r.error_in_exec)
        # Not a session default.
        r = shell.run_cell("%dcodex config --repeat 3")
        assert "--repeat cannot be a session default" in str(r.error_in_exec)
    finally:
        shell.run_line_magic("unload_ext", "dcodex_kernel")


def test_cli(tmp_path):
    path = tmp_path / "sleepy.c"
    path.write_text(SLEEPY_C)
    cmd = [sys.executable, "-m", "dcodex_kernel", "run", str(path), "--repeat", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "hello\n"
    assert "[dcodex] ok (3 runs, wall " in done.stderr
    doc = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True,
                                    timeout=120).stdout)
    assert len(doc["runs"]) == 3 and doc["stdout"] == "hello\n"
    failing = tmp_path / "fail.py"
    failing.write_text("print('once')\nraise SystemExit(5)\n")
    done = subprocess.run([*cmd[:3], "run", str(failing), "--repeat", "4"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 5 and "run 1 of 4: Exited with status 5" in done.stderr


def test_through_a_server():
    served = Served()
    remote = RemoteBackend(served.address)
    try:
        result = collect(remote.execute(Request(Language.C, SLEEPY_C, repeat=3)))
        assert result.ok and result.stdout == "hello\n" and len(result.runs) == 3
        assert result.timing()["wall_s"]["min"] >= 0.05
        again = collect(remote.execute(Request(Language.C, SLEEPY_C, repeat=3)))
        assert len(again.runs) == 3 and again.runs != result.runs, "a series is never replayed"
        deadline = time.time() + 0.5
        failed = collect(remote.execute(Request(Language.PYTHON, FAILS_LATER_PY, repeat=5,
                                                args=(repr(deadline),))))
        assert failed.status is Status.RUNTIME_ERROR and len(failed.runs) == 2
        with CancelToken() as token:
            threading.Timer(0.7, token.cancel).start()
            stopped = collect(remote.execute(Request(Language.PYTHON, NAP_PY, repeat=50), token))
        assert stopped.status is Status.CANCELLED
    finally:
        remote.close()  # its gRPC channel's threads and fds
        assert served.stop() == 0
