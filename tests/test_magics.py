"""The IPython magics, end to end: a real IPython shell (run_cell) and a real ipykernel started
through jupyter_client, both running programs in the real sandbox."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time

import psutil
import pytest
from IPython.core.error import UsageError
from traitlets.config import Config

from dcodex_kernel.events import Result, Status
from dcodex_kernel.magics import DCodeXError, DCodeXInterrupt, DCodeXMagics

from .kernel_support import collect, execute, ipykernel_dirs, start_kernel, stop_kernel
from .support import (alive, descendants, is_prestarted, is_sandbox_uid, orphaned_sandbox_processes,
                      wait_until)

ANSI = re.compile(r"\x1b\[[0-9;]*[mK]")

# Prints, sleeps 1 s, prints: the first line must be seen long before the program ends.
STREAM_PY = """\
import sys, time
print("first", flush=True)
print("to-stderr", file=sys.stderr, flush=True)
time.sleep(1)
print("second")
"""
STREAM_C = """\
#include <stdio.h>
#include <unistd.h>
int main(void) { puts("first"); sleep(1); puts("second"); return 0; }
"""
SLEEP_PY = 'import time\nprint("started", flush=True)\ntime.sleep(30)\n'


# ---- helpers -----------------------------------------------------------------------------

def programs_below(pid: int) -> list[psutil.Process]:
    """Live processes below `pid` running as a sandbox uid: the programs of its runs."""
    return [p for p in descendants(pid) if is_sandbox_uid(p)]


class Recorder:
    """A stand-in sys.stdout/sys.stderr that notes when each piece of text arrived."""

    def __init__(self):
        self.writes: list[tuple[float, str]] = []

    def write(self, text):
        self.writes.append((time.monotonic(), text))
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    @property
    def text(self):
        return "".join(t for _, t in self.writes)

    def first(self, needle):
        return next(at for at, t in self.writes if needle in t)


# ---- IPython shell -----------------------------------------------------------------------



@pytest.fixture
def magics(ip):
    """The registered DCodeXMagics; its session defaults are restored after the test."""
    m = ip.magics_manager.registry["DCodeXMagics"]
    saved = {name: getattr(m, name) for name in m.trait_names(config=True)}
    yield m
    for name, value in saved.items():
        setattr(m, name, value)


def strays() -> list[psutil.Process]:
    """Processes below this test process other than the test kernel itself: sandbox launchers,
    compilers and programs (as root or as a sandbox uid) that outlived their run."""
    me = psutil.Process()
    found = []
    for p in me.children(recursive=True):
        try:
            if p.ppid() == me.pid and "ipykernel_launcher" in p.cmdline() or is_prestarted(p):
                continue
            found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind():
    yield
    assert wait_until(lambda: not strays(), 2), strays()


def cell(ip, line, body=""):
    return ip.run_cell(f"%%dcodex {line}\n{body}")


def test_output_streams_live_to_stdout_and_stderr(ip, monkeypatch):
    out, err = Recorder(), Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    r = cell(ip, "python --quiet", STREAM_PY)
    end = time.monotonic()
    r.raise_error()
    assert out.text == "first\nsecond\n" and err.text == "to-stderr\n"
    assert end - out.first("first") > 0.8, "first line arrived only when the program ended"
    assert end - err.first("to-stderr") > 0.8


def test_result_is_the_value_shown_as_its_summary(ip, capsys):
    r = cell(ip, "c", '#include <stdio.h>\nint main(void) { printf("hi {x}\\n"); return 0; }')
    r.raise_error()
    result = r.result
    assert isinstance(result, Result) and result.status is Status.OK
    assert result.exit_code == 0 and result.stdout == "hi {x}\n" and result.stderr == ""
    assert result.wall_s > 0 and result.peak_memory > 0
    out = capsys.readouterr().out
    assert "hi {x}\n" in out  # the cell body is not {var}-expanded
    assert re.search(r"\[dcodex\] ok \(\d+ ms wall, \d+ ms cpu", out)
    again = cell(ip, "c", '#include <stdio.h>\nint main(void) { printf("hi {x}\\n"); return 0; }')
    assert again.result.cached


def test_quiet_drops_the_summary(ip, capsys):
    r = cell(ip, "py --quiet", "print('only this')")
    assert r.success and r.result is None
    assert capsys.readouterr().out == "only this\n"


FAILURES = [
    # (status, header, body, message fragment)
    (Status.COMPILE_ERROR, "c", "int main(void) { return 0 }", "error: expected"),
    (Status.RUNTIME_ERROR, "cpp", "int main() { return 3; }", "Exited with status 3"),
    (Status.SIGNALED, "c", "int main(void) { *(volatile int *)0 = 1; return 0; }", "SIGSEGV"),
    (Status.TIME_LIMIT, "python --cpu-time 1", "while True: pass", "CPU time limit of 1 s"),
    (Status.WALL_TIMEOUT, "python --timeout 0.5", "import time; time.sleep(5)", "Wall-clock limit of 0.5 s"),
    (Status.MEMORY_LIMIT, "python --memory 128M", "x = bytearray(400 << 20)", "Memory limit of 128 MiB"),
    (Status.OUTPUT_LIMIT, "python --output-limit 1K", "while True: print('y' * 100)", "Output limit of 1 KiB"),
    (Status.REJECTED, "c --cflags -o/tmp/x", "int main(void) { return 0; }", "not allowed"),
]


@pytest.mark.parametrize("status,header,body,fragment", FAILURES, ids=[f[0].value for f in FAILURES])
def test_each_failure_raises_its_one_line_status(ip, capsys, status, header, body, fragment):
    r = cell(ip, header, body)
    error = r.error_in_exec
    assert isinstance(error, DCodeXError), r
    assert error.status is status and error.result.status is status
    assert fragment in ANSI.sub("", str(error))
    assert str(error) == f"{status.value}: {error.result.message}"
    assert "\n" not in str(error)
    shown = ANSI.sub("", capsys.readouterr().out)
    # IPython shows the one line, not a traceback through the magic's internals.
    assert f"DCodeXError: {error}" in shown and "Traceback" not in shown
    if status is Status.OUTPUT_LIMIT:
        assert error.result.truncated and len(error.result.stdout.encode()) <= 1024


def test_compile_errors_show_the_diagnostics(ip, capsys):
    r = cell(ip, "cpp", "int main() { undeclared_thing(); }")
    assert r.error_in_exec.status is Status.COMPILE_ERROR
    err = ANSI.sub("", capsys.readouterr().err)
    assert "'undeclared_thing' was not declared" in err.replace("‘", "'").replace("’", "'")


@pytest.mark.parametrize("status,header,body,fragment", FAILURES[:3], ids=[f[0].value for f in FAILURES[:3]])
def test_no_raise_error_returns_the_failed_result(ip, status, header, body, fragment):
    r = cell(ip, f"{header} --no-raise-error", body)
    assert r.success and r.result.status is status


class _InternalErrorBackend:
    """The real engine cannot be made to fail internally on demand; this one always does."""

    def execute(self, request, cancel=None, feed=None):
        yield Result(Status.INTERNAL_ERROR, "sandbox unavailable: no free uid")


def test_internal_error_raises_too(ip, magics):
    real = magics.backend
    magics.backend = _InternalErrorBackend()
    try:
        r = cell(ip, "c", "int main(void) { return 0; }")
    finally:
        magics.backend = real
    assert isinstance(r.error_in_exec, DCodeXError)
    assert str(r.error_in_exec) == "internal_error: sandbox unavailable: no free uid"


def test_out_stores_the_result(ip, capsys):
    r = cell(ip, "python --out res", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(0)")
    assert r.success and r.result is None
    res = ip.user_ns["res"]
    assert res.status is Status.OK and res.stdout == "out\n" and res.stderr == "err\n"
    assert "[dcodex] ok" in capsys.readouterr().out  # the summary is printed instead
    r = cell(ip, "python --out res", "raise SystemExit(4)")
    assert isinstance(r.error_in_exec, DCodeXError)
    assert ip.user_ns["res"].exit_code == 4  # stored before raising


@pytest.mark.parametrize("value,expected", [
    ("héllo\nworld\n", "68c3a96c6c6f0a776f726c640a"),
    (b"\xff\x00binary", "ff0062696e617279"),
    (bytearray(b"ba"), "6261"),
])
def test_stdin_var_feeds_text_or_bytes(ip, value, expected):
    ip.user_ns["feed"] = value
    r = cell(ip, "python --stdin-var feed --quiet --out res", "import sys; print(sys.stdin.buffer.read().hex())")
    r.raise_error()
    assert ip.user_ns["res"].stdout == expected + "\n"


def test_stdin_text_and_file_options(ip, tmp_path):
    body = '#include <stdio.h>\nint main(void) { int a, b; scanf("%d %d", &a, &b); printf("%d\\n", a + b); return 0; }'
    assert cell(ip, r"c --stdin '3 4\n'", body).result.stdout == "7\n"
    (tmp_path / "in.txt").write_text("40 2\n")
    assert cell(ip, f"c --stdin-file {tmp_path / 'in.txt'}", body).result.stdout == "42\n"


def test_options_expand_user_variables(ip, tmp_path):
    ip.user_ns.update(n=7, word="solo", limit="64K")
    # IPython's rules: {expr} anywhere; $name too, except inside single quotes.
    r = cell(ip, "python --args '{n} {n*2} $word' --args $word --output-limit {limit}",
             "import sys; print(sys.argv[1:])")
    assert r.result.stdout == "['7', '14', '$word', 'solo']\n"
    # In a function, a line magic sees the function's locals ({var} and --stdin-var alike).
    prog = tmp_path / "echo.py"
    prog.write_text("import sys; print(sys.argv[1], sys.stdin.read())")
    ip.run_cell(
        "def run_it(path, arg):\n"
        "    data = 'from-local'\n"
        "    %dcodex run {path} --args {arg} --stdin-var data --quiet --out local_res\n"
    ).raise_error()
    r = ip.run_cell(f"run_it({str(prog)!r}, 'hello')")
    r.raise_error()
    assert ip.user_ns["local_res"].stdout == "hello from-local\n"


def test_config_defaults(ip, magics, capsys):
    ip.run_line_magic("config", "DCodeXMagics.timeout = 0.5")
    assert magics.timeout == 0.5
    r = cell(ip, "python", "import time; time.sleep(3)")
    assert r.error_in_exec.status is Status.WALL_TIMEOUT and "0.5 s" in str(r.error_in_exec)
    r = cell(ip, "python --timeout 5 --quiet", "import time; time.sleep(0.7)")  # a cell overrides
    assert r.success
    ip.run_line_magic("config", "DCodeXMagics.memory = '64M'")
    assert magics.memory == 64 << 20
    ip.run_line_magic("dcodex", "config --timeout 2.5s --output-limit 2K --cflags -DGREETING=42 --no-cache")
    assert (magics.timeout, magics.output_limit, magics.cflags, magics.cache) == (2.5, 2048, "-DGREETING=42", False)
    assert "wall 2.5 s" in capsys.readouterr().out
    r = cell(ip, "c --out res", '#include <stdio.h>\nint main(void) { printf("%d\\n", GREETING); return 0; }')
    assert r.success and ip.user_ns["res"].stdout == "42\n" and not ip.user_ns["res"].cached
    with pytest.raises(UsageError, match="--stdin, --out cannot be a session default"):
        ip.run_line_magic("dcodex", "config --stdin x --out y")
    ip.run_line_magic("dcodex", "config")
    assert "cflags: -DGREETING=42" in capsys.readouterr().out


def test_config_values_are_validated_and_read_from_config_files(ip, magics, monkeypatch):
    from traitlets import TraitError

    with pytest.raises(TraitError, match="invalid size"):
        magics.memory = "lots"
    with pytest.raises(TraitError, match="timeout of 1e\\+99 s is above the maximum of 3600 s"):
        magics.timeout = 1e99  # `%config DCodeXMagics.timeout = 1e99`
    with pytest.raises(TraitError, match="memory of 99999 TiB is above the maximum of 64 GiB"):
        magics.memory = "99999T"
    magics.timeout = "3600"  # the maximum itself is fine
    assert magics.limits().wall_s == 3600
    c = Config()  # what ipython_config.py builds
    c.DCodeXMagics.timeout = "1500ms"
    c.DCodeXMagics.memory = "1G"
    assert (DCodeXMagics(config=c).timeout, DCodeXMagics(config=c).memory) == (1.5, 1 << 30)
    monkeypatch.setenv("DCODEX_CPU_TIME", "3")
    assert DCodeXMagics().cpu_time == 3.0  # the kernel's env defaults apply here too


BAD_OPTIONS = [
    ("%%dcodex c --bogus", "unrecognized arguments: --bogus"),
    ("%%dcodex", "missing LANG"),
    ("%%dcodex fortran", "unknown language 'fortran'"),
    ("%%dcodex c --timeout soon", "invalid duration 'soon'"),
    ("%%dcodex c --memory -5", "invalid size '-5'"),
    ("%%dcodex c --memory", "expected one argument"),
    ("%%dcodex c --timeout 999999999", "timeout of 999999999 s is above the maximum of 3600 s"),
    ("%%dcodex c --cpu-time 1e99", "invalid duration '1e99'"),
    ("%%dcodex c --memory 99999T", "memory of 99999 TiB is above the maximum of 64 GiB"),
    ("%dcodex config --timeout 999999999", "timeout of 999999999 s is above the maximum"),
    ("%dcodex run x.c --output-limit 2G", "output limit of 2 GiB is above the maximum of 1 GiB"),
    ("%%dcodex c --stdin x --stdin-var y", "not allowed with argument"),
    ("%%dcodex c --stdin-var no_such_variable", "no variable named 'no_such_variable'"),
    ("%%dcodex c --stdin-var n", "is a int, not str or bytes"),
    ("%%dcodex c --out 2bad", "is not a variable name"),
    ("%%dcodex c --args 'unbalanced", "cannot parse options"),
    ("%dcodex run", "missing FILE"),
    ("%dcodex run /no/such/file.c", "cannot read /no/such/file.c"),
    ("%dcodex run prog.f90", "cannot tell the language"),
    ("%dcodex frobnicate", "unknown command 'frobnicate'"),
]


@pytest.mark.parametrize("line,message", BAD_OPTIONS, ids=[b[0] for b in BAD_OPTIONS])
def test_bad_options_are_a_usage_error_and_nothing_runs(ip, capsys, line, message):
    ip.user_ns["n"] = 1
    body = '#include <stdio.h>\nint main(void) { puts("RAN"); return 0; }'
    r = ip.run_cell(f"{line}\n{body}" if line.startswith("%%") else line)
    assert isinstance(r.error_in_exec, UsageError), r
    assert message in str(r.error_in_exec)
    out = capsys.readouterr()
    assert "RAN" not in out.out + out.err and "[dcodex]" not in out.out + out.err
    assert "UsageError" in out.out + out.err and "Traceback" not in out.out + out.err


def test_help_prints_the_grammar_and_runs_nothing(ip, capsys):
    r = cell(ip, "c --help", 'int main(void) { return 1; }')
    assert r.success and r.result is None
    out = capsys.readouterr().out
    assert "usage: %%dcodex" in out and "--stdin-var NAME" in out and "--no-raise-error" in out
    doc = ip.find_cell_magic("dcodex").__doc__
    assert "--out VAR" in doc and "--output-limit SIZE" in doc  # what %%dcodex? shows


def test_run_file(ip, tmp_path):
    src = tmp_path / "sum.cpp"
    src.write_text('#include <iostream>\nint main(int c, char** v) { std::cout << c - 1 << "\\n"; }\n')
    r = ip.run_cell(f"%dcodex run {src} --args 'a b c'")
    assert r.result.status is Status.OK and r.result.stdout == "3\n"
    odd = tmp_path / "prog.txt"
    odd.write_text("print('by LANG')")
    r = ip.run_cell(f"res = %dcodex run {odd} python")
    r.raise_error()
    assert ip.user_ns["res"].stdout == "by LANG\n"


def test_describe(ip, capsys):
    ip.run_line_magic("dcodex", "")
    out = capsys.readouterr().out
    assert "backend" in out and "isolation" in out and "run limits" in out and "wall 10 s" in out


def test_ctrl_c_stops_the_program_at_once(ip, capsys):
    me = os.getpid()
    fired = {}

    def interrupt():
        fired["at"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in a terminal IPython does

    def interrupt_once_running():
        if wait_until(lambda: programs_below(me), 10):
            time.sleep(0.3)
            interrupt()

    watcher = threading.Thread(target=interrupt_once_running)
    watcher.start()
    r = cell(ip, "python --out res", SLEEP_PY)
    ended = time.monotonic()
    watcher.join()
    assert isinstance(r.error_in_exec, KeyboardInterrupt) and isinstance(r.error_in_exec, DCodeXInterrupt)
    assert ended - fired["at"] < 0.5
    assert ip.user_ns["res"].status is Status.CANCELLED and ip.user_ns["res"].stdout == "started\n"
    assert not programs_below(me)
    out = capsys.readouterr().out
    assert "[dcodex] cancelled: Interrupted" in out and "KeyboardInterrupt: the program was stopped" in out
    assert cell(ip, "py --quiet", "print(1)").success  # the shell carries on


def test_unload_and_reload(ip, backend):
    ip.run_line_magic("reload_ext", "dcodex_kernel")
    assert sum(isinstance(c, DCodeXMagics) for c in ip.configurables) == 1
    ip.magics_manager.registry["DCodeXMagics"].backend = backend
    assert cell(ip, "py --quiet", "print(1)").success


# ---- a real ipykernel --------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """An ipykernel of this interpreter (so it imports this checkout) with the extension loaded."""
    km, kc = start_kernel("magics-test",
                          kernel_dirs=ipykernel_dirs(tmp_path_factory.mktemp("kernels"), "magics-test"))
    try:
        run = execute(kc, "%load_ext dcodex_kernel")
        assert run.status == "ok", run.reply
        yield km, kc
    finally:
        pid = km.provisioner.process.pid
        stop_kernel(km, kc)
        assert not psutil.pid_exists(pid) or not alive(psutil.Process(pid))
        assert descendants(os.getpid()) == []
        assert wait_until(lambda: not orphaned_sandbox_processes(), 3), orphaned_sandbox_processes()


def test_kernel_streams_live(kernel):
    _, kc = kernel
    run = execute(kc, f"%%dcodex c\n{STREAM_C}")
    assert run.status == "ok"
    assert run.text("stdout") == "first\nsecond\n"
    first = next(at for at, kind, c in run.outputs if kind == "stream" and "first" in c["text"])
    assert run.idle_at - first > 0.8, f"first line only {run.idle_at - first:.2f} s before the end"
    (result,) = [c for _, kind, c in run.outputs if kind == "execute_result"]
    assert result["data"]["text/plain"].startswith("[dcodex] ok (")


def test_kernel_failure_is_one_clean_error(kernel):
    _, kc = kernel
    run = execute(kc, "%%dcodex c\n#include <stdio.h>\nint main(void) { puts(\"partial\"); return 2; }")
    assert run.status == "error"
    assert run.reply["content"]["ename"] == "DCodeXError"
    assert run.reply["content"]["evalue"] == "runtime_error: Exited with status 2"
    (error,) = run.errors
    assert error["traceback"] == ["DCodeXError: runtime_error: Exited with status 2"]
    assert run.text("stdout") == "partial\n"

    run = execute(kc, "%%dcodex cpp\nint main() { return x; }")
    assert run.reply["content"]["evalue"].startswith("compile_error: main.cpp:1:21: error:")
    diagnostics = ANSI.sub("", run.text("stderr"))
    assert "main.cpp:1:21: error:" in diagnostics and "return x;" in diagnostics


def test_kernel_bad_options_run_nothing(kernel):
    _, kc = kernel
    run = execute(kc, "%%dcodex c --timeout never\nint main(void) { return 0; }")
    assert run.status == "error" and run.reply["content"]["ename"] == "UsageError"
    assert "invalid duration 'never'" in run.reply["content"]["evalue"]
    # IPython shows a UsageError as text on stderr (no traceback); nothing ran, so nothing else.
    assert "execute_result" not in run.kinds and run.text("stdout") == ""
    assert "UsageError: %%dcodex: argument --timeout" in run.text()


def test_kernel_out_stdin_var_and_config(kernel):
    _, kc = kernel
    run = execute(kc, "data = b'21'\n%config DCodeXMagics.timeout = 3\nn = 2")
    assert run.status == "ok"
    run = execute(kc, "%%dcodex python --stdin-var data --out res --args {n}\n"
                      "import sys; print(int(sys.stdin.read()) * int(sys.argv[1]))")
    assert run.status == "ok"
    text = execute(kc, "print(res.stdout, res.status.value)\n%dcodex config").text("stdout")
    assert "42\n ok" in text and "wall 3 s" in text


def test_kernel_interrupt_kills_the_program(kernel):
    km, kc = kernel
    kernel_pid = km.provisioner.process.pid
    started = time.monotonic()
    msg_id = kc.execute(f"%%dcodex python --timeout 60\n{SLEEP_PY}")
    while True:  # wait for the program to say it started
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            assert "started" in msg["content"]["text"]
            break
    programs = programs_below(kernel_pid)
    assert programs, "the program should be running as a sandbox uid"
    interrupted = time.monotonic()
    km.interrupt_kernel()
    gone = wait_until(lambda: not [p for p in programs if alive(p)], 5, interval=0.005)
    took = time.monotonic() - interrupted
    assert gone and took < 0.5, f"program still there {took:.2f} s after the interrupt"
    run = collect(kc, msg_id, started)
    assert run.status == "error"
    assert run.reply["content"]["ename"] == "DCodeXInterrupt"
    assert psutil.Process(kernel_pid).is_running()
    assert not programs_below(kernel_pid)
    run = execute(kc, "%%dcodex py --quiet\nprint('alive')")  # the kernel carries on
    assert run.status == "ok" and run.text("stdout") == "alive\n"
