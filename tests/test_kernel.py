"""The DCodeX kernels, started for real through jupyter_client: streaming, every failure status,
interrupts, header options, mixed languages, completion, shutdown leaving nothing behind; plus
the kernelspecs and `dcodex install`."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib

import psutil
import pytest

from dcodex_kernel import editing, kernelspec
from dcodex_kernel.kernel import Cell, parse_cell
from dcodex_kernel.options import OptionError
from dcodex_kernel.request import Language

from .kernel_support import execute, collect, start_kernel, stop_kernel, kernels_dir
from .support import alive, descendants, name_of, orphaned_sandbox_processes, wait_until

ANSI = re.compile(r"\x1b\[[0-9;]*[mK]")

HELLO = {
    "dcodex-c": '#include <stdio.h>\nint main(void) { printf("hello\\n"); return 0; }',
    "dcodex-cpp": '#include <iostream>\nint main() { std::cout << "hello" << std::endl; }',
    "dcodex-python": 'print("hello")',
}


@pytest.fixture
def c_kernel(kernels):
    return kernels("dcodex-c")


@pytest.fixture
def py_kernel(kernels):
    return kernels("dcodex-python")


def single_error(run):
    """The cell failed the way nbval and Run All notice: an error reply and one error output,
    the last output, whose evalue is the Result's one-line message."""
    assert run.status == "error", run.outputs
    assert run.kinds.count("error") == 1, run.outputs
    assert run.kinds[-1] == "error"
    error = run.errors[0]
    assert error["evalue"] == run.reply["content"]["evalue"]
    assert "\n" not in error["evalue"]
    return error


# -- running programs ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dcodex-c", "dcodex-cpp", "dcodex-python"])
def test_hello_and_result_metadata(kernels, name):
    km, kc = kernels(name)
    run = execute(kc, HELLO[name])
    assert run.status == "ok", run.outputs
    assert run.text("stdout") == "hello\n"
    meta = run.result
    assert meta["status"] == "ok" and meta["exit_code"] == 0
    assert meta["wall_s"] > 0 and meta["peak_memory"] > 0
    assert "stdout" not in meta and "stderr" not in meta
    if name != "dcodex-python":  # the same cell again comes from the build cache
        assert execute(kc, HELLO[name]).result["cached"] is True


@pytest.mark.parametrize("name, code", [
    ("dcodex-c", '#include <stdio.h>\n#include <unistd.h>\n'
                 'int main(void) { printf("first\\n"); sleep(1); printf("second\\n"); }'),
    ("dcodex-python", 'import time\nprint("first")\ntime.sleep(1)\nprint("second")'),
])
def test_output_streams_while_the_program_runs(kernels, name, code):
    km, kc = kernels(name)
    execute(kc, code)  # build once, so the timing below is the run alone
    run = execute(kc, code)
    assert run.status == "ok"
    assert run.text("stdout") == "first\nsecond\n"
    # (Python's print may write "first" and "\n" separately: look for the words.)
    t_first = next(t for t, _, c in run.outputs if "first" in c["text"])
    t_second = next(t for t, _, c in run.outputs if "second" in c["text"])
    assert run.idle_at - t_first > 0.8, "the first line arrived only when the program ended"
    assert t_second - t_first > 0.8


def test_compile_error_is_one_error_with_coloured_diagnostics(c_kernel):
    km, kc = c_kernel
    run = execute(kc, "%%dcodex c\n\nint main(void) {\n    return 0\n}\n")
    error = single_error(run)
    assert run.kinds == ["error"]  # diagnostics are in the traceback, not in streams
    assert error["ename"] == "CompileError"
    assert error["evalue"] == run.result["message"]
    assert "error" in error["evalue"]
    traceback = "\n".join(error["traceback"])
    assert "\x1b[" in traceback  # gcc's colours kept
    # The header line is blanked, not removed: line numbers are the cell's own.
    assert "main.c:4:" in ANSI.sub("", traceback)
    assert run.result["status"] == "compile_error"


def test_compile_warnings_are_shown_before_the_program_output(c_kernel):
    km, kc = c_kernel
    code = ('%%dcodex --no-cache\n#include <stdio.h>\n'
            'int main(void) { int unused; printf("ran\\n"); return 0; }')
    run = execute(kc, code)
    assert run.status == "ok"
    assert [c["name"] for _, kind, c in run.outputs] == ["stderr", "stdout"]
    assert "unused" in ANSI.sub("", run.text("stderr"))
    assert run.text("stdout") == "ran\n"


FAILURES = [
    # (kernel, cell, ename, status, text the cell printed before failing)
    ("dcodex-c", '#include <stdio.h>\nint main(void) { printf("out\\n"); return 3; }',
     "RuntimeError", "runtime_error", "out\n"),
    ("dcodex-c", '#include <stdio.h>\nint main(void) { printf("boom\\n"); fflush(stdout);'
                 ' *(volatile int *)0 = 1; return 0; }',
     "SignalError", "signaled", "boom\n"),
    ("dcodex-c", '%%dcodex --timeout 0.5\n#include <stdio.h>\n#include <unistd.h>\n'
                 'int main(void) { printf("waiting\\n"); sleep(5); }',
     "WallTimeout", "wall_timeout", "waiting\n"),
    ("dcodex-c", '%%dcodex --cpu-time 1\n#include <stdio.h>\n'
                 'int main(void) { printf("spinning\\n"); for (volatile unsigned long i = 0;; i++); }',
     "TimeLimitExceeded", "time_limit", "spinning\n"),
    ("dcodex-c", '%%dcodex --memory 64M\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n'
                 'int main(void) { printf("allocating\\n"); fflush(stdout);\n'
                 '  for (int i = 0; i < 64; i++) { char *p = malloc(8 << 20);\n'
                 '    if (!p) { fprintf(stderr, "out of memory\\n"); return 1; } memset(p, 1, 8 << 20); }\n'
                 '  return 0; }',
     "MemoryLimitExceeded", "memory_limit", "allocating\n"),
    ("dcodex-python", "%%dcodex --output-limit 1K\nwhile True:\n    print('x' * 99)",
     "OutputLimitExceeded", "output_limit", None),
    ("dcodex-python", "print('before')\nraise ValueError('bad value')",
     "RuntimeError", "runtime_error", "before\n"),
]


@pytest.mark.parametrize("name, code, ename, status, printed", FAILURES,
                         ids=[f"{f[0]}-{f[3]}" for f in FAILURES])
def test_each_failure_gives_its_error(kernels, name, code, ename, status, printed):
    km, kc = kernels(name)
    run = execute(kc, code)
    error = single_error(run)
    assert error["ename"] == ename
    assert run.result["status"] == status
    assert error["evalue"] == run.result["message"] != ""
    assert error["evalue"] in ANSI.sub("", "\n".join(error["traceback"]))
    assert "Traceback" not in "\n".join(error["traceback"])  # no Python internals of the kernel
    if printed is not None:
        assert run.text("stdout") == printed
    if status == "output_limit":
        assert 0 < len(run.text("stdout").encode()) <= 1024
    if status == "runtime_error" and name == "dcodex-python":
        assert "ValueError: bad value" in run.text("stderr")  # the program's own traceback
    assert run.kinds.index("error") == len(run.kinds) - 1  # output first, then the error


def test_the_kernel_carries_on_after_failures(c_kernel):
    km, kc = c_kernel
    assert execute(kc, "int main(void) { return 1; }").status == "error"
    assert execute(kc, HELLO["dcodex-c"]).text() == "hello\n"


# -- the header ----------------------------------------------------------------------------------

def test_mixed_languages_in_one_notebook(c_kernel, py_kernel):
    km, kc = c_kernel
    assert execute(kc, "%%dcodex cpp\n" + HELLO["dcodex-cpp"]).text() == "hello\n"
    assert execute(kc, "%%dcodex python\nimport sys\nprint(sys.version_info[0])").text() == "3\n"
    assert execute(kc, HELLO["dcodex-c"]).text() == "hello\n"  # back to the kernel's language
    km, kc = py_kernel
    assert execute(kc, "%%dcodex c\n" + HELLO["dcodex-c"]).text() == "hello\n"


def test_header_stdin_args_and_flags(c_kernel):
    km, kc = c_kernel
    code = ('%%dcodex --stdin "3 4\\n" --args "x yz" --cflags -DSCALE=10 --ldflags -lm\n'
            '#include <stdio.h>\n#include <math.h>\n'
            'int main(int argc, char **argv) { int a, b; scanf("%d %d", &a, &b);\n'
            '  printf("%d %s %s %.0f\\n", (a + b) * SCALE, argv[1], argv[2], sqrt(16.0)); }')
    run = execute(kc, code)
    assert run.status == "ok", run.outputs
    assert run.text() == "70 x yz 4\n"


def test_bad_option_is_a_clear_error(c_kernel):
    km, kc = c_kernel
    run = execute(kc, "%%dcodex --timeout soon\nint main(void) { return 0; }")
    error = single_error(run)
    assert error["ename"] == "OptionError"
    assert "timeout" in error["evalue"] and "soon" in error["evalue"]
    text = "\n".join(error["traceback"])
    assert "usage: %%dcodex" in text and "Traceback" not in text and "File \"" not in text
    run = execute(kc, "%%dcodex fortran\nprogram x")
    assert single_error(run)["ename"] == "OptionError"
    assert "fortran" in run.errors[0]["evalue"]


@pytest.mark.parametrize("header, message", [
    ("%%dcodex --timeout 999999999", "timeout of 999999999 s is above the maximum of 3600 s"),
    ("%%dcodex --cpu-time 1e99", "invalid duration '1e99'"),
    ("%%dcodex --memory 99999T", "memory of 99999 TiB is above the maximum of 64 GiB"),
    ("%dcodex --output-limit 2G", "output limit of 2 GiB is above the maximum of 1 GiB"),
])
def test_a_limit_above_its_maximum_is_an_option_error(c_kernel, header, message):
    km, kc = c_kernel
    body = "" if header.startswith("%dcodex") else '\n#include <stdio.h>\nint main(void) { puts("RAN"); }'
    run = execute(kc, header + body)
    error = single_error(run)
    assert error["ename"] == "OptionError" and message in error["evalue"], error
    assert "RAN" not in run.text() and "Traceback" not in "\n".join(error["traceback"])


def test_an_absurd_limit_in_the_kernel_environment_is_reported_by_every_cell():
    km, kc = start_kernel("dcodex-c", env={"DCODEX_TIMEOUT": "999999999"})
    try:
        for _ in range(2):
            error = single_error(execute(kc, "int main(void) { return 0; }"))
            assert error["ename"] == "OptionError"
            assert "bad kernel environment: DCODEX_TIMEOUT: timeout of 999999999 s is above the maximum" in error["evalue"]
    finally:
        stop_kernel(km, kc)


def test_header_help_is_output_not_an_error(c_kernel):
    km, kc = c_kernel
    run = execute(kc, "%%dcodex --help")
    assert run.status == "ok"
    assert "--timeout" in run.text("stdout") and "--output-limit" in run.text("stdout")


def test_info_cell_shows_backend_limits_and_isolation(c_kernel):
    km, kc = c_kernel
    run = execute(kc, "%dcodex")
    assert run.status == "ok"
    text = run.text("stdout")
    for word in ("backend", "isolation", "run limits", "wall 10 s", "memory 512 MiB", "output 1 MiB"):
        assert word in text
    assert "wall 2.5 s" in execute(kc, "%dcodex --timeout 2.5").text("stdout")
    assert single_error(execute(kc, "%dcodex\nint main(void) {}"))["ename"] == "OptionError"


def test_kernel_defaults_come_from_the_environment():
    km, kc = start_kernel("dcodex-python", env={"DCODEX_TIMEOUT": "0.5", "DCODEX_OUTPUT_LIMIT": "2K"})
    try:
        assert "wall 0.5 s" in execute(kc, "%dcodex").text()
        assert "output 2 KiB" in execute(kc, "%dcodex").text()
        run = execute(kc, "import time\ntime.sleep(3)")
        assert single_error(run)["ename"] == "WallTimeout"
        assert "0.5 s" in run.errors[0]["evalue"]
        assert execute(kc, "%%dcodex --timeout 2\nimport time\ntime.sleep(0.7)").status == "ok"
    finally:
        stop_kernel(km, kc)


def test_silent_cells_publish_nothing(c_kernel):
    km, kc = c_kernel
    run = execute(kc, HELLO["dcodex-c"], silent=True)
    assert run.status == "ok" and run.outputs == []


def test_parse_cell():
    assert parse_cell("int x;", Language.C) == Cell(Language.C, "int x;")
    cell = parse_cell("\n%%dcodex py --timeout 3\nprint(1)", Language.C)
    assert cell.language is Language.PYTHON and cell.code == "\n\nprint(1)"
    assert cell.options.timeout == 3.0
    assert parse_cell("%dcodex cpp", Language.C).info
    assert parse_cell("%%dcodexx", Language.C) == Cell(Language.C, "%%dcodexx")  # not a header
    with pytest.raises(OptionError):
        parse_cell("%%dcodex --bogus", Language.C)


# -- interrupt -----------------------------------------------------------------------------------

SPIN_C = '#include <stdio.h>\nint main(void) { printf("started\\n"); fflush(stdout); for (;;); }'
SLEEP_PY = 'import time\nprint("started", flush=True)\ntime.sleep(60)'
SLOW_BUILD = ('%%dcodex cpp --no-cache --cflags "-fconstexpr-loop-limit=2147483647 '
              '-fconstexpr-ops-limit=4611686018427387904"\n'
              'constexpr long f() { long s = 0; for (long i = 0; i < 4000000000L; i++) s += i % 7;'
              ' return s; }\nstatic_assert(f() != 1);\nint main() {}\n')


@pytest.mark.parametrize("name, code, mode", [
    ("dcodex-c", SPIN_C, "message"),
    ("dcodex-python", SLEEP_PY, "message"),
    ("dcodex-c", SPIN_C, "signal"),  # frontends that SIGINT the kernel still stop the program
    ("dcodex-c", SLOW_BUILD, "message"),  # interrupting the compiler
])
def test_interrupt_stops_the_program_and_the_kernel_survives(kernels, name, code, mode):
    km, kc = kernels(name)
    spec = km.kernel_spec
    assert spec.interrupt_mode == "message"
    kernel_pid = km.provisioner.process.pid
    msg_id = kc.execute(code)
    started = time.monotonic()
    if code is SLOW_BUILD:
        wait_until(lambda: any(name_of(p).startswith("cc1") for p in descendants(kernel_pid)), 10)
    else:
        while True:  # wait until the program is really running
            msg = kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                break
    assert descendants(kernel_pid), "the program should be running now"

    spec.interrupt_mode = mode
    try:
        interrupted = time.monotonic()
        km.interrupt_kernel()
        run = collect(kc, msg_id, started, timeout=10)
    finally:
        spec.interrupt_mode = "message"
    error = single_error(run)
    t_error = next(t for t, kind, _ in run.outputs if kind == "error")
    assert t_error - interrupted < 0.5
    assert error["ename"] == "Interrupted"
    assert run.result["status"] == "cancelled"
    assert "interrupted" in ANSI.sub("", "\n".join(error["traceback"])).lower()
    assert wait_until(lambda: not descendants(kernel_pid), 2), descendants(kernel_pid)
    assert orphaned_sandbox_processes() == []
    # Still alive and usable.
    assert execute(kc, HELLO[name]).text() == "hello\n"


def test_interrupt_between_cells_is_harmless(c_kernel):
    km, kc = c_kernel
    # Wait for the interrupt_reply: an interrupt that arrives after the next cell has started
    # stops that cell, as it should (km.interrupt_kernel() does not wait for the reply).
    msg = kc.session.msg("interrupt_request", {})
    kc.control_channel.send(msg)
    reply = kc.get_control_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    assert reply["content"]["status"] == "ok"
    assert execute(kc, HELLO["dcodex-c"]).text() == "hello\n"


# -- shutdown and restart ----------------------------------------------------------------------

DAEMON = r'''#include <stdio.h>
#include <unistd.h>
int main(void) {
    if (fork() == 0) { setsid(); if (fork() == 0) { sleep(120); } return 0; }
    printf("daemon planted\n"); fflush(stdout);
    sleep(120);
}'''


@pytest.mark.parametrize("how", ["shutdown", "restart", "restart-now"])
def test_shutdown_and_restart_leave_nothing_behind(how):
    km, kc = start_kernel("dcodex-c")
    try:
        kernel = psutil.Process(km.provisioner.process.pid)
        msg_id = kc.execute(DAEMON)
        while True:
            msg = kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                break
        running = descendants(kernel.pid)
        assert len(running) >= 3  # launcher, program, daemon (and more)

        started = time.monotonic()
        if how == "shutdown":
            km.shutdown_kernel(now=False)
        else:
            km.restart_kernel(now=(how == "restart-now"))
        assert time.monotonic() - started < 3  # no waiting out a timeout
        assert wait_until(lambda: not alive(kernel), 3)
        assert wait_until(lambda: not [p for p in running if alive(p)], 3), running
        assert orphaned_sandbox_processes() == []
        if how != "shutdown":
            kc.wait_for_ready(timeout=30)
            assert execute(kc, HELLO["dcodex-c"]).text() == "hello\n"
    finally:
        kc.stop_channels()
        if km.has_kernel:
            km.shutdown_kernel(now=True)


# -- editing help -------------------------------------------------------------------------------

def test_completion_offers_keywords_identifiers_and_header_options():
    code = "int counter = 0;\nint main(void) { cou"
    reply = editing.complete(code, len(code), Language.C, ["--timeout", "--cpu-time"])
    assert reply["matches"] == ["counter"] and reply["cursor_start"] == len(code) - 3
    assert "return" in editing.complete("ret", 3, Language.C)["matches"]
    assert "#include" in editing.complete("#inc", 4, Language.C)["matches"]
    assert "nullptr" in editing.complete("null", 4, Language.CPP)["matches"]
    assert "nullptr" not in editing.complete("null", 4, Language.C)["matches"]
    assert "lambda" in editing.complete("lamb", 4, Language.PYTHON)["matches"]
    assert editing.complete("x = my_value\nmy_", 16, Language.PYTHON)["matches"] == ["my_value"]
    header = "%%dcodex --ti"
    assert editing.complete(header, len(header), Language.C, ["--timeout", "--cpu-time"])["matches"] == ["--timeout"]


@pytest.mark.parametrize("language, code, status", [
    (Language.C, "int main(void) { return 0; }", "complete"),
    (Language.C, "int main(void) {\n  if (x) {", "incomplete"),
    (Language.C, 'const char *s = "{";', "complete"),
    (Language.C, "/* { */ int x;", "complete"),
    (Language.C, "// {\nint x;", "complete"),
    (Language.C, "/* unfinished", "incomplete"),
    (Language.C, "#define TWICE(x) \\", "incomplete"),
    (Language.C, "int x = (1 + 2));", "invalid"),
    (Language.C, "int a[3] = {1, 2, 3];", "invalid"),
    (Language.CPP, "%%dcodex cpp --timeout 2\nstruct S {", "incomplete"),
    (Language.PYTHON, "x = 1", "complete"),
    (Language.PYTHON, "for i in range(3):", "incomplete"),
    (Language.PYTHON, "def f():\n    return 1", "incomplete"),  # like IPython: a blank line ends it
    (Language.PYTHON, "def f():\n    return 1\n", "complete"),
    (Language.PYTHON, "x = (1,", "incomplete"),
    (Language.PYTHON, "x = (1))", "invalid"),
    (Language.PYTHON, "%%dcodex python\nprint('hi')", "complete"),
])
def test_is_complete(language, code, status):
    assert editing.is_complete(code, language)["status"] == status


def test_is_complete_indent():
    assert editing.is_complete("for i in range(3):", Language.PYTHON)["indent"] == "    "
    assert editing.is_complete("int f() {\n  if (1) {", Language.C)["indent"] == "        "


def test_kernel_answers_completion_inspect_and_is_complete(py_kernel):
    km, kc = py_kernel
    msg_id = kc.complete("total = 1\nprint(tot", 19)
    reply = kc.get_shell_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["matches"] == ["total"]
    kc.is_complete("%%dcodex c\nint main(void) {")
    assert kc.get_shell_msg(timeout=10)["content"]["status"] == "incomplete"
    kc.inspect("%%dcodex --time", 10)
    reply = kc.get_shell_msg(timeout=10)["content"]
    assert reply["found"] and "--timeout" in reply["data"]["text/plain"]


# -- kernel info and kernelspecs ------------------------------------------------------------------

@pytest.mark.parametrize("name, language, extension", [
    ("dcodex-c", "c", ".c"), ("dcodex-cpp", "c++", ".cpp"), ("dcodex-python", "python", ".py")])
def test_kernel_info(kernels, name, language, extension):
    km, kc = kernels(name)
    kc.kernel_info()
    info = kc.get_shell_msg(timeout=10)["content"]
    lang = info["language_info"]
    assert lang["name"] == language and lang["file_extension"] == extension
    assert lang["mimetype"] and lang["codemirror_mode"] and lang["pygments_lexer"] and lang["version"]
    assert "debugger" not in info.get("supported_features", [])
    assert info["implementation"] == "dcodex"


def test_installed_kernelspecs():
    for name, (language, display, spec_language) in kernelspec.SPECS.items():
        folder = os.path.join(kernels_dir(), name)
        with open(os.path.join(folder, "kernel.json")) as f:
            spec = json.load(f)
        assert spec["argv"][0] == kernelspec.interpreter() == os.path.abspath(spec["argv"][0])
        assert spec["argv"][-1] == f"--DCodeXKernel.language={language.value}"
        assert "{connection_file}" in spec["argv"]
        assert spec["interrupt_mode"] == "message"
        assert spec["metadata"] == {"debugger": False}
        assert spec["language"] == spec_language and spec["display_name"] == display
        for size in (32, 64):
            assert png_size(os.path.join(folder, f"logo-{size}x{size}.png")) == (size, size)


def test_venv_interpreter_path_is_kept():
    # In a venv the symlink's target would lose the venv's packages; outside, resolve it.
    if sys.prefix != sys.base_prefix:
        assert kernelspec.interpreter() == os.path.abspath(sys.executable)
        assert kernelspec.interpreter().startswith(sys.prefix)
    else:
        assert kernelspec.interpreter() == os.path.realpath(sys.executable)


def test_repository_kernelspec_folder_matches_the_generator():
    top = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernelspec")
    for name in kernelspec.SPECS:
        with open(os.path.join(top, name, "kernel.json")) as f:
            assert json.load(f) == kernelspec.kernel_json(name, python="python")
        for size in (32, 64):
            with open(os.path.join(top, name, f"logo-{size}x{size}.png"), "rb") as f:
                assert png_pixels(f.read()) == png_pixels(kernelspec.logo_png(kernelspec.SPECS[name][0], size))


def test_cli_install_into_a_prefix(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dcodex_kernel", "install", "--prefix", str(tmp_path),
                          "--env", "DCODEX_TIMEOUT=30"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in kernelspec.SPECS:
        with open(tmp_path / "share" / "jupyter" / "kernels" / name / "kernel.json") as f:
            spec = json.load(f)
        assert spec["env"] == {"DCODEX_TIMEOUT": "30"}
        assert name in out.stdout
    bad = subprocess.run([sys.executable, "-m", "dcodex_kernel", "install", "--prefix", str(tmp_path),
                          "--env", "DCODEX_MEMORY=lots"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "DCODEX_MEMORY" in bad.stderr


def png_size(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def png_pixels(data: bytes) -> bytes:
    """The decompressed image data (what the pixels are, whatever zlib version wrote them)."""
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(idat)


def test_banner_warns_when_programs_are_not_confined():
    """The kernel banner says so when a confinement layer is missing here, and nothing when all
    are there (the layers come from the backend's real Capabilities)."""
    from types import SimpleNamespace

    from dcodex_kernel.kernel import DCodeXKernel
    from dcodex_kernel.sandbox import isolation

    caps = isolation.detect()
    weak = isolation.Capabilities(root=caps.root, pid_namespace=False, user_namespace=False)
    warning = DCodeXKernel._confinement_warning(SimpleNamespace(backend=SimpleNamespace(caps=weak)))
    assert "not fully confined" in warning and "filesystem" in warning and "seccomp" in warning
    full = DCodeXKernel._confinement_warning(SimpleNamespace(backend=SimpleNamespace(caps=caps)))
    if caps.strict_problems():
        assert "not fully confined" in full
    else:
        assert full == ""
