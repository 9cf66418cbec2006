"""`dcodex` as a person uses it: a real subprocess, its streams and its exit code."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys

import pytest

from dcodex_kernel.backends.local import LocalBackend

pytestmark = pytest.mark.usefixtures("no_leftovers")

DCODEX = [sys.executable, "-m", "dcodex_kernel"]


def dcodex(*args, **kw):
    return subprocess.run([*DCODEX, *args], capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def program(tmp_path):
    def write(name, text):
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


def test_run_streams_output_and_summarises(program):
    path = program("sum.c", '#include <stdio.h>\nint main(int c, char **v) { int a, b;\n'
                   '  scanf("%d %d", &a, &b); printf("%d %s\\n", a + b, v[1]); return 0; }\n')
    proc = dcodex("run", path, "--stdin", r"2 40\n", "--args", "arg1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "42 arg1\n"
    assert proc.stderr.startswith("[dcodex] ok (")


def test_exit_code_reflects_the_outcome(program):
    assert dcodex("run", program("three.py", "raise SystemExit(3)")).returncode == 3
    proc = dcodex("run", program("slow.py", "import time\ntime.sleep(30)"), "--timeout", "300ms")
    assert proc.returncode == 124 and "wall_timeout: Wall-clock limit of 0.3 s exceeded" in proc.stderr
    proc = dcodex("run", program("bad.c", "int main( {"))
    assert proc.returncode == 65 and "compile_error" in proc.stderr and "error" in proc.stderr
    proc = dcodex("run", program("crash.c", "int main(void) { return *(volatile int *)0; }"))
    assert proc.returncode == 128 + signal.SIGSEGV and "SIGSEGV" in proc.stderr


def test_json_result(program):
    proc = dcodex("run", program("p.py", "print('out')\nimport sys; print('err', file=sys.stderr)"), "--json")
    doc = json.loads(proc.stdout)
    assert doc["status"] == "ok" and doc["stdout"] == "out\n" and doc["stderr"] == "err\n"
    assert doc["wall_s"] > 0 and "rlimits" in doc["isolation"]


def test_flags_and_lang_override(program):
    path = program("m.txt", '#include <math.h>\n#include <stdio.h>\n'
                   'int main(void) { printf("%g\\n", cbrt(FORTY + 0.0)); }\n')
    proc = dcodex("run", path, "--lang", "c", "--cflags", "-DFORTY=27 -O1", "--ldflags", "-lm")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "3\n"


@pytest.mark.parametrize("args, message", [
    (["run", "prog.rs"], "cannot tell the language"),
    (["run", "x.c", "--memory", "lots"], "invalid size 'lots'"),
    (["run", "x.c", "--timeout", "0"], "duration must be positive"),
    (["run", "x.c", "--lang", "cobol"], "unknown language 'cobol'"),
    (["run", "x.c", "--stdin", "a", "--stdin-file", "b"], "not allowed with argument"),
    (["run", "/nonexistent/x.c"], "No such file"),
    (["frobnicate"], "invalid choice"),
    (["run", "x.c", "--timeout", "999999999"], "timeout of 999999999 s is above the maximum of 3600 s"),
    (["run", "x.c", "--cpu-time", "1e99"], "invalid duration '1e99'"),
    (["run", "x.c", "--cpu-time", "3601"], "cpu time of 3601 s is above the maximum of 3600 s"),
    (["run", "x.c", "--memory", "99999T"], "memory of 99999 TiB is above the maximum of 64 GiB"),
    (["run", "x.c", "--output-limit", "2G"], "output limit of 2 GiB is above the maximum of 1 GiB"),
    (["run", "x.c", "--timeout", "1" * 400], "is too large"),
    (["run", "x.c", "--memory", "100"], "memory of 100 B is below the minimum of 4 KiB"),
])
def test_bad_invocations_are_clear_errors(args, message):
    proc = dcodex(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("var, value, message", [
    ("DCODEX_TIMEOUT", "999999999", "DCODEX_TIMEOUT: timeout of 999999999 s is above the maximum"),
    ("DCODEX_CPU_TIME", "1e99", "DCODEX_CPU_TIME: invalid duration '1e99'"),
    ("DCODEX_MEMORY", "99999T", "DCODEX_MEMORY: memory of 99999 TiB is above the maximum of 64 GiB"),
    ("DCODEX_MAX_PROCESSES", "100000", "DCODEX_MAX_PROCESSES: processes of 100000 is above the maximum of 4096"),
])
def test_absurd_limits_from_the_environment_are_refused(program, var, value, message):
    path = program("ok.py", "print('RAN')")
    proc = dcodex("run", path, env={**os.environ, var: value})
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "RAN" not in proc.stdout and "Traceback" not in proc.stderr and "internal_error" not in proc.stderr


def test_limits_at_their_maximum_are_taken(program):
    path = program("ok.py", "print('RAN')")
    proc = dcodex("run", path, "--timeout", "3600", "--cpu-time", "3600",
                  "--memory", "64G", "--output-limit", "1G")
    assert proc.returncode == 0 and proc.stdout == "RAN\n", proc.stderr


def test_help_explains_options_and_defaults():
    proc = dcodex("run", "--help")
    assert proc.returncode == 0
    for word in ("--timeout", "--memory", "--stdin-file", "--json", "exit code", "Defaults: wall 10 s",
                 "at most 3600 s", "at most 64 GiB", "Maxima: wall 3600 s, cpu 3600 s, memory 64 GiB"):
        assert word in " ".join(proc.stdout.split())  # argparse wraps lines


def test_doctor_reports_isolation():
    proc = dcodex("doctor")
    assert proc.returncode == 0
    assert "isolation" in proc.stdout and "rlimits" in proc.stdout and "run limits" in proc.stdout


def test_ctrl_c_cancels_the_run(program):
    path = program("sleepy.py", "import time\nprint('started', flush=True)\ntime.sleep(60)")
    proc = subprocess.Popen([*DCODEX, "run", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert "cancelled: Interrupted" in err


def test_engine_killed_mid_run_takes_the_run_with_it(program):
    """A kernel killed on restart (SIGKILL: no cleanup code runs) must not leave its program
    running; the next engine removes the run directory it left."""
    path = program("forever.py", "import time\nprint('started', flush=True)\ntime.sleep(300)")
    proc = subprocess.Popen([*DCODEX, "run", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    orphaned = glob.glob(f"/tmp/dcodex-run-{proc.pid}-*")
    # A host-side run dir exists only where the filesystem is not confined (else: a tmpfs
    # of the run's own, gone with its mount namespace).
    assert bool(orphaned) != LocalBackend().caps.filesystem
    proc.kill()
    proc.communicate(timeout=10)
    assert dcodex("run", program("next.py", "print('next')")).stdout == "next\n"
    assert not [d for d in orphaned if os.path.exists(d)]
    # no_leftovers then checks that no process of the killed run survived
