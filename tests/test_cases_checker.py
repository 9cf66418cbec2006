"""`--checker` (a C, C++ or Python program run in the sandbox, or a Python function in the
magics) and `--show-output`, in the engine, through a real server and in the three front doors;
bad case input as one clear error in each front door; each limit's verdict in the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dcodex_kernel.backends.remote import RemoteBackend
from dcodex_kernel.events import Output, Status
from dcodex_kernel.request import Checker, Language, Limits, Request
from dcodex_kernel.verdicts import MAX_EXPECTED_BYTES, Case, checker_answer, comment

from .test_cases import LIMITS_CPP, SUM_C, execute

# A checker that accepts any output whose first number is the sum of the input's two numbers,
# printing a comment; its paths are the case's input, expected and actual output.
CHECK_PY = """import sys
given, expected, actual = (open(p).read() for p in sys.argv[1:4])
a, b = map(int, given.split())
got = actual.split()
if got and got[0] == str(a + b):
    print(f"sum {a + b} ok ({sys.argv[3]})")
    sys.exit(0)
print(f"want {a + b}, got {got[:1]}")
sys.exit(1)
"""
CHECK_C = r"""#include <stdio.h>
int main(int argc, char **argv) {
    long a, b, got;
    FILE *in = fopen(argv[1], "r"), *out = fopen(argv[3], "r");
    if (argc != 4 || !in || !out || fscanf(in, "%ld %ld", &a, &b) != 2) return 2;
    if (fscanf(out, "%ld", &got) != 1 || got != a + b) { printf("want %ld\n", a + b); return 1; }
    printf("ok %ld\n", got);
    return 0;
}
"""
CASES = [Case("1", "1 2\n", "anything\n"), Case("2", "2 2\n", "x"), Case("3", "40 2\n", "")]
WRONG_C = SUM_C.replace('printf("%ld\\n", a + b)', 'printf("%ld\\n", a + b + (a == 2))')


def verdicts(result):
    return [(c.name, c.verdict, c.message) for c in result.cases]


# ---------------------------------------------------------------- the engine

@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("language, code", [(Language.PYTHON, CHECK_PY), (Language.C, CHECK_C),
                                            (Language.CPP, CHECK_C)])
def test_a_checker_program_accepts_and_rejects_with_its_comment(backend, language, code):
    checker = Checker(language, code, "check")
    result, events = execute(backend, Request(Language.C, WRONG_C, cases=CASES, checker=checker))
    assert result.status is Status.RUNTIME_ERROR and result.message == "1 of 3 cases failed"
    got = verdicts(result)
    assert [v[:2] for v in got] == [("1", "accepted"), ("2", "wrong_answer"), ("3", "accepted")]
    if language is Language.PYTHON:  # the paths are the run's own (its box, or its work dir)
        assert got[0][2].startswith("sum 3 ok (/") and got[0][2].endswith("/actual)")
        assert got[1][2] == "want 4, got ['5']"
    else:
        assert got[0][2] == "ok 3" and got[1][2] == "want 4"
    assert not [e for e in events if isinstance(e, Output) and e.phase == "run"]


# The session workspace's files reach the checker as they reach the program: a reference table
# it reads (relative to its run dir), a header a C checker includes, and files named like the
# checker's own three, which live in dcodex_check/ (argv), so the workspace's stay as they are.
WORKSPACE = (("table.txt", b"1 2=3\n2 2=4\n40 2=42\n"), ("input", b"workspace input\n"),
             ("expected", b"not the case's\n"), ("want.h", b'#define TABLE "table.txt"\n'))
TABLE_CHECK_PY = """import sys
given, expected, actual = (open(p).read() for p in sys.argv[1:4])
rows = dict(line.rstrip("\\n").split("=") for line in open("table.txt"))
with open("table.txt", "a") as f:  # this run's own copy: the next case's checker gets a fresh one
    f.write("changed=by a checker\\n")
want = rows[given.strip()]
where = "/".join(sys.argv[1].split("/")[-2:])
print(f"table says {want}; {len(rows)} rows; {open('input').read().strip()!r}; {where}")
sys.exit(0 if actual.strip() == want else 1)
"""
TABLE_CHECK_C = r"""#include <stdio.h>
#include <string.h>
#include "want.h"
int main(int argc, char **argv) {
    char given[64] = "", got[64] = "", line[128];
    FILE *in = fopen(argv[1], "r"), *out = fopen(argv[3], "r"), *table = fopen(TABLE, "r");
    if (argc != 4 || !in || !out || !table || !fgets(given, sizeof given, in)) return 2;
    given[strcspn(given, "\n")] = 0;
    if (fgets(got, sizeof got, out)) got[strcspn(got, "\n")] = 0;
    while (fgets(line, sizeof line, table)) {
        char *want = strchr(line, '=');
        if (!want) continue;
        *want++ = 0;
        want[strcspn(want, "\n")] = 0;
        if (!strcmp(line, given)) { printf("table says %s\n", want); return strcmp(want, got) != 0; }
    }
    return 2;
}
"""


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("language, code", [(Language.PYTHON, TABLE_CHECK_PY), (Language.C, TABLE_CHECK_C)])
def test_a_checker_program_gets_the_workspace_files(backend, language, code):
    checker = Checker(language, code, "check")
    result, _ = execute(backend, Request(Language.C, WRONG_C, cases=CASES, checker=checker,
                                         files=WORKSPACE))
    got = verdicts(result)
    assert [v[:2] for v in got] == [("1", "accepted"), ("2", "wrong_answer"), ("3", "accepted")], got
    if language is Language.PYTHON:
        assert [v[2] for v in got] == [f"table says {n}; 3 rows; 'workspace input'; dcodex_check/input"
                                       for n in (3, 4, 42)]
    else:  # the header came from the workspace at its build, the table at its run
        assert [v[2] for v in got] == ["table says 3", "table says 4", "table says 42"]
    # Without the workspace the same checker finds no table (Python) or no header (C).
    bare, _ = execute(backend, Request(Language.C, SUM_C, cases=CASES[:1], checker=checker))
    if language is Language.PYTHON:
        assert [c.verdict for c in bare.cases] == ["checker_error"]
        assert "FileNotFoundError" in bare.cases[0].message
    else:
        assert bare.status is Status.COMPILE_ERROR and "want.h" in bare.message


def test_the_checkers_own_directory_is_no_workspace_name():
    for name in ("dcodex_check", "dcodex_check/input"):
        with pytest.raises(ValueError, match="dcodex_check is where a --checker is given a case's input"):
            Request(Language.C, SUM_C, files=((name, b""),))


CRASHING = {
    "segv": (Language.C, "#include <signal.h>\nint main(void) { raise(SIGSEGV); }\n",
             "checker signaled: Killed by signal SIGSEGV"),
    "loop": (Language.C, "int main(void) { for (volatile int i = 0;; i++); }\n",
             "checker time_limit: CPU time limit of 1 s exceeded"),
    "raise": (Language.PYTHON, "import sys\nprint('half')\n1 / 0\n",
              "checker runtime_error: Exited with status 3: ZeroDivisionError: division by zero"),
    "exit 2": (Language.PYTHON, "import sys\nsys.exit(2)\n", "checker runtime_error: Exited with status 2"),
}


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("kind", CRASHING)
def test_a_checker_that_crashes_or_hits_a_limit_is_checker_error(backend, kind):
    language, code, says = CRASHING[kind]
    request = Request(Language.C, SUM_C, cases=CASES[:2], checker=Checker(language, code),
                      limits=Limits(cpu_s=1, wall_s=5))
    result, _ = execute(backend, request)
    assert [c.verdict for c in result.cases] == ["checker_error"] * 2, verdicts(result)
    assert result.cases[0].message.startswith(says), result.cases[0].message
    assert result.status is Status.RUNTIME_ERROR and result.message == "2 of 2 cases failed"


@pytest.mark.usefixtures("no_leftovers")
def test_a_checker_that_does_not_compile_is_one_compile_error(backend):
    result, events = execute(backend, Request(Language.C, SUM_C, cases=CASES,
                                              checker=Checker(Language.CPP, "int main( {", "chk.cpp")))
    assert result.status is Status.COMPILE_ERROR and result.cases == ()
    assert result.message.startswith("checker chk.cpp: ") and "error" in result.message
    assert any(e.phase == "compile" and "error" in e.text for e in events)


@pytest.mark.usefixtures("no_leftovers")
def test_a_failed_run_is_not_given_to_the_checker(backend):
    code = "import sys\nn = int(sys.stdin.read().split()[0])\nif n == 2: raise SystemExit(4)\nprint(n)\n"
    checker = Checker(Language.PYTHON, "import sys\nprint('judged')\n")
    result, _ = execute(backend, Request(Language.PYTHON, code, cases=CASES[:2], checker=checker))
    assert verdicts(result) == [("1", "accepted", "judged"), ("2", "runtime_error", "Exited with status 4")]


@pytest.mark.usefixtures("no_leftovers")
def test_a_function_checker(backend):
    seen = []

    def check(given, expected, actual):
        seen.append((given, expected, actual))
        a, b = map(int, given.split())
        if a == 40:
            raise KeyError("boom")
        return int(actual) == a + b, f"sum of {a} and {b}"

    result, _ = execute(backend, Request(Language.C, WRONG_C, cases=CASES, checker=check))
    assert verdicts(result) == [("1", "accepted", "sum of 1 and 2"), ("2", "wrong_answer", "sum of 2 and 2"),
                                ("3", "checker_error", "the checker raised KeyError: 'boom'")]
    assert sorted(seen) == [("1 2\n", "anything\n", "3\n"), ("2 2\n", "x", "5\n"), ("40 2\n", "", "42\n")]
    result, _ = execute(backend, Request(Language.C, SUM_C, cases=CASES[:1], checker=lambda *_: "yes"))
    assert verdicts(result) == [("1", "checker_error", "the checker returned \"'yes'\", not a bool or (bool, comment)")]
    result, _ = execute(backend, Request(Language.C, SUM_C, cases=CASES[:1], checker=lambda *_: False))
    assert verdicts(result) == [("1", "wrong_answer", "rejected by the checker")]


def test_checker_answer_and_comment():
    assert checker_answer(True) == (True, "") and checker_answer((False, "no\nway")) == (False, "no way")
    for bad in (1, None, (1, "x"), (True, "a", "b")):
        with pytest.raises(ValueError, match="not a bool or"):
            checker_answer(bad)
    assert comment("a\x1b[31m  b\n\n c") == "a\\x1b[31m b c"
    assert len(comment("x" * 500)) == 100 and comment("x" * 500).endswith("…")


def test_request_checks_checker_and_show_output():
    with pytest.raises(ValueError, match="--checker needs --cases"):
        Request(Language.C, SUM_C, checker=Checker(Language.C, CHECK_C))
    with pytest.raises(ValueError, match="--checker and --compare cannot be used together"):
        Request(Language.C, SUM_C, cases=CASES, compare="tokens", checker=Checker(Language.C, CHECK_C))
    with pytest.raises(ValueError, match="--show-output needs --cases"):
        Request(Language.C, SUM_C, show_output=True)
    with pytest.raises(ValueError, match="a checker must be a Checker or a callable"):
        Request(Language.C, SUM_C, cases=CASES, checker="check.py")
    with pytest.raises(ValueError, match="NUL"):
        Checker(Language.C, "int main(){}\0")


SHOW_PY = "import sys, time\nn = int(sys.stdin.read())\ntime.sleep(0.05 * (n < 4) * (4 - n))\nprint('out', n)\nprint('err', n, file=sys.stderr)\nsys.stdout.write('no newline')\n"


@pytest.mark.usefixtures("no_leftovers")
def test_show_output_streams_each_case_in_order_under_a_header(backend):
    cases = [Case(str(n), str(n), "out %d\nno newline" % n) for n in (1, 2, 3, 10)]
    result, events = execute(backend, Request(Language.PYTHON, SHOW_PY, cases=cases, show_output=True))
    assert result.status is Status.OK, verdicts(result)
    stdout = "".join(e.text for e in events if e.stream == "stdout")
    assert stdout == "".join(f"=== case {n} ===\nout {n}\nno newline\n" for n in (1, 2, 3)) + \
        "=== case 10 ===\nout 10\nno newline"
    # Each case's stderr comes after its own header and before the next one.
    order = [(e.stream, e.text.strip()) for e in events if e.text.strip()]
    for n, following in ((1, 2), (2, 3), (3, 10)):
        at = order.index(("stderr", f"err {n}"))
        assert order.index(("stdout", f"=== case {n} ===")) < at < order.index(("stdout", f"=== case {following} ==="))
    _, quiet = execute(backend, Request(Language.PYTHON, SHOW_PY, cases=cases))
    assert [e for e in quiet if e.phase == "run"] == []


@pytest.mark.usefixtures("no_leftovers")
def test_fifty_cases_with_a_checker_and_output_leave_nothing_behind(backend):
    cases = [Case(str(i), f"{i} {i}\n", "") for i in range(50)]
    result, events = execute(backend, Request(Language.C, WRONG_C, cases=cases, show_output=True,
                                              checker=Checker(Language.C, CHECK_C)))
    assert [c.name for c in result.cases] == [str(i) for i in range(50)]
    assert [c.name for c in result.cases if not c.accepted] == ["2"]
    headers = [e.text for e in events if e.text.startswith("=== case")]
    assert headers == [f"=== case {i} ===\n" for i in range(50)]


# ---------------------------------------------------------------- through a server

@pytest.fixture(scope="module")
def served():
    from .test_server import Served

    server = Served()
    yield server
    assert server.stop() == 0


def test_a_checker_program_and_show_output_run_on_the_server(served):
    remote = RemoteBackend(served.address)
    request = Request(Language.C, WRONG_C, cases=CASES, checker=Checker(Language.C, CHECK_C, "chk.c"),
                      show_output=True)
    result, events = execute(remote, request)
    assert [v[:2] for v in verdicts(result)] == [("1", "accepted"), ("2", "wrong_answer"), ("3", "accepted")]
    assert result.cases[1].message == "want 4"
    assert "".join(e.text for e in events if e.phase == "run") == \
        "=== case 1 ===\n3\n=== case 2 ===\n5\n=== case 3 ===\n42\n"
    bad, _ = execute(remote, Request(Language.C, SUM_C, cases=CASES,
                                     checker=Checker(Language.C, "int main( {", "chk.c")))
    assert bad.status is Status.COMPILE_ERROR and bad.message.startswith("checker chk.c: ")
    refused, _ = execute(remote, Request(Language.C, SUM_C, cases=CASES, checker=lambda *_: True))
    assert refused.status is Status.REJECTED and "runs only on this machine" in refused.message
    # The session's workspace reaches the checker on the server too.
    table, _ = execute(remote, Request(Language.C, WRONG_C, cases=CASES, files=WORKSPACE,
                                       checker=Checker(Language.PYTHON, TABLE_CHECK_PY, "check.py")))
    assert [(c.verdict, c.message.split(";")[0]) for c in table.cases] == [
        ("accepted", "table says 3"), ("wrong_answer", "table says 4"), ("accepted", "table says 42")]


# ---------------------------------------------------------------- the front doors

def dcodex(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dcodex_kernel", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.fixture
def exercise(tmp_path):
    """sum.c (wrong for 2 2), check.py, and cases/ with three cases."""
    (tmp_path / "sum.c").write_text(WRONG_C)
    (tmp_path / "check.py").write_text(CHECK_PY)
    d = tmp_path / "cases"
    d.mkdir()
    for case in CASES:
        (d / f"{case.name}.in").write_bytes(case.input)
        (d / f"{case.name}.out").write_bytes(case.expected)
    return tmp_path


def check_checker_table(text):
    lines = text.strip().splitlines()
    assert [line.split()[:2] for line in lines[1:4]] == [["1", "accepted"], ["2", "wrong_answer"],
                                                         ["3", "accepted"]], text
    assert "want 4, got ['5']" in lines[2] and "sum 3 ok" in lines[1]
    assert lines[4] == "2/3 accepted"


@pytest.mark.usefixtures("no_leftovers")
def test_cli_checker_and_show_output(exercise):
    proc = dcodex("run", "sum.c", "--cases", "cases", "--checker", "check.py", cwd=exercise)
    assert proc.returncode == 1, proc.stderr
    check_checker_table(proc.stdout)
    proc = dcodex("run", "sum.c", "--cases", "cases", "--show-output", cwd=exercise)
    assert proc.stdout.startswith("=== case 1 ===\n3\n=== case 2 ===\n5\n=== case 3 ===\n42\ncase"), proc.stdout
    doc = json.loads(dcodex("run", "sum.c", "--cases", "cases", "--checker", "check.py", "--json",
                            cwd=exercise).stdout)
    assert [c["verdict"] for c in doc["cases"]] == ["accepted", "wrong_answer", "accepted"]
    # --file: the checker reads it too.
    (exercise / "table.txt").write_bytes(WORKSPACE[0][1])
    (exercise / "check_table.py").write_text(TABLE_CHECK_PY.replace("open('input').read().strip()", "0"))
    proc = dcodex("run", "sum.c", "--cases", "cases", "--checker", "check_table.py", "--file", "table.txt",
                  cwd=exercise)
    assert proc.returncode == 1 and "table says 4; 3 rows" in proc.stdout, proc.stdout + proc.stderr


def bad_inputs(root):
    """name -> (make it under root/cases, what the one error says)."""
    def missing(d):
        (d / "1.in").write_text("1 1")
    def empty(d):
        pass
    def binary(d):
        (d / "1.in").write_text("1 1")
        (d / "1.out").write_bytes(b"\x7fELF\0\0\1")
    def huge(d):
        (d / "1.in").write_text("1 1")
        with open(d / "1.out", "wb") as f:
            f.truncate(MAX_EXPECTED_BYTES + 1)
    return {"missing .out": (missing, "1.in has no 1.out or 1.ans"), "empty": (empty, "holds no cases"),
            "binary": (binary, "is binary"), "huge": (huge, "larger than the maximum of 16 MiB")}


BAD = list(bad_inputs(None))


def make_bad(root, kind):
    d = root / "cases"
    d.mkdir(parents=True, exist_ok=True)
    make, says = bad_inputs(root)[kind]
    make(d)
    return d, says


@pytest.mark.parametrize("kind", BAD)
def test_cli_bad_cases_is_one_clear_error(exercise, tmp_path, kind):
    d, says = make_bad(tmp_path / "bad", kind)
    proc = dcodex("run", str(exercise / "sum.c"), "--cases", str(d))
    assert proc.returncode == 2 and says in proc.stderr and proc.stdout == "", proc
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, says", [
    (["--checker", "check.txt"], "--checker: cannot tell the language of 'check.txt'"),
    (["--checker", "nope.py"], "--checker: No such file or directory"),
    (["--checker", "check.py", "--compare", "tokens"], "--checker and --compare cannot be used together"),
])
def test_cli_bad_checker_is_one_clear_error(exercise, args, says):
    proc = dcodex("run", "sum.c", "--cases", "cases", *args, cwd=exercise)
    assert proc.returncode == 2 and says in proc.stderr and proc.stdout == "", proc


@pytest.mark.usefixtures("no_leftovers")
def test_cli_table_shows_each_limit(tmp_path):
    (tmp_path / "limits.cpp").write_text(LIMITS_CPP)
    d = tmp_path / "cases"
    d.mkdir()
    names = ["cpu", "wall", "memory", "output", "segv", "exit", "fine"]
    for n in names:
        (d / f"{n}.in").write_text(n)
        (d / f"{n}.out").write_text(n)
    proc = dcodex("run", str(tmp_path / "limits.cpp"), "--cases", str(d), "--cpu-time", "0.5",
                  "--timeout", "3", "--memory", "96M", "--output-limit", "64K")
    assert proc.returncode == 1, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:-1]}
    want = {"cpu": ("time_limit", "CPU time limit of 0.5 s exceeded"),
            "wall": ("wall_timeout", "Wall-clock limit of 3 s exceeded"),
            "memory": ("memory_limit", "Memory limit of 96 MiB reached"),
            "output": ("output_limit", "Output limit of 64 KiB reached"),
            "segv": ("signaled", "Killed by signal SIGSEGV"), "exit": ("runtime_error", "Exited with status 3"),
            "fine": ("accepted", "")}
    for name, (verdict, message) in want.items():
        assert rows[name].split()[1] == verdict and message in rows[name], rows[name]
    assert proc.stdout.splitlines()[-1] == "1/7 accepted"


@pytest.fixture(scope="module")
def c_kernel():
    from .kernel_support import start_kernel, stop_kernel

    km, kc = start_kernel("dcodex-c")
    yield kc
    stop_kernel(km, kc)


@pytest.mark.usefixtures("no_leftovers")
def test_kernel_cases_and_checker_from_the_session_workspace(c_kernel):
    from .kernel_support import execute as run

    for case in CASES:
        assert run(c_kernel, f"%%file cases/{case.name}.in\n{case.input.decode()}").status == "ok"
        assert run(c_kernel, f"%%file cases/{case.name}.out\n{case.expected.decode()}").status == "ok"
    assert run(c_kernel, f"%%file check.py\n{CHECK_PY}").status == "ok"
    r = run(c_kernel, f"%%dcodex --cases cases --checker check.py\n{WRONG_C}")
    assert r.kinds == ["display_data", "error"] and r.errors[0]["evalue"] == "1 of 3 cases failed", r.outputs
    check_checker_table(r.outputs[0][2]["data"]["text/plain"])
    assert "checker" not in r.outputs[0][2]["data"]["text/html"] or "want 4" in r.outputs[0][2]["data"]["text/html"]
    r = run(c_kernel, f"%%dcodex --cases cases --show-output --compare tokens --no-cache\n{SUM_C}")
    assert r.status == "error", r.outputs  # '3' is not 'anything': the cases want the checker
    assert r.text("stdout") == "=== case 1 ===\n3\n=== case 2 ===\n4\n=== case 3 ===\n42\n"
    assert r.kinds[-2:] == ["display_data", "error"]
    # A checker that reads a reference table written with %%file (and its own `input` file).
    for name, data in (("table.txt", WORKSPACE[0][1]), ("input", WORKSPACE[1][1]),
                       ("check_table.py", TABLE_CHECK_PY.encode())):
        assert run(c_kernel, f"%%file {name}\n{data.decode()}").status == "ok"
    r = run(c_kernel, f"%%dcodex --cases cases --checker check_table.py\n{WRONG_C}")
    assert r.kinds == ["display_data", "error"], r.outputs
    rows = r.outputs[0][2]["data"]["text/plain"].splitlines()[1:4]
    assert all(f"table says {n}; 3 rows; 'workspace input'" in row for n, row in zip((3, 4, 42), rows)), rows


@pytest.mark.parametrize("kind", BAD)
def test_kernel_bad_cases_is_one_option_error(c_kernel, tmp_path, kind):
    from .kernel_support import execute as run

    d, says = make_bad(tmp_path, kind)
    r = run(c_kernel, f"%%dcodex --cases {d}\n{SUM_C}")
    assert r.kinds == ["error"] and r.errors[0]["ename"] == "OptionError", r.outputs
    assert says in r.errors[0]["evalue"]




def magic(ip, line, body):
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        r = ip.run_cell(f"%%dcodex {line}\n{body}")
    return r, captured


@pytest.mark.usefixtures("no_leftovers")
def test_magic_checker_function_file_and_show_output(ip, exercise):
    from dcodex_kernel.magics import DCodeXError

    ip.user_ns["pairs"] = [(c.input, c.expected) for c in CASES]
    ip.run_cell("def judge(given, expected, actual):\n"
                "    a, b = map(int, given.split())\n"
                "    return int(actual) == a + b, f'wanted {a + b}'\n")
    r, captured = magic(ip, "c --cases pairs --checker judge --out res", WRONG_C)
    assert isinstance(r.error_in_exec, DCodeXError) and str(r.error_in_exec) == "TestsFailed: 1 of 3 cases failed"
    assert [(c.verdict, c.message) for c in ip.user_ns["res"].cases] == [
        ("accepted", "wanted 3"), ("wrong_answer", "wanted 4"), ("accepted", "wanted 42")]
    r, captured = magic(ip, f"c --cases {exercise / 'cases'} --checker {exercise / 'check.py'} --no-raise-error --quiet", WRONG_C)
    check_checker_table(captured.outputs[0].data["text/plain"])
    r, captured = magic(ip, "c --cases pairs --checker judge --show-output --quiet --no-raise-error", SUM_C)
    assert captured.stdout == "=== case 1 ===\n3\n=== case 2 ===\n4\n=== case 3 ===\n42\n"
    ip.user_ns["notfun"] = 3
    r, _ = magic(ip, "c --cases pairs --checker notfun", SUM_C)
    assert "--checker: notfun is a int, not a function" in str(r.error_in_exec)
    r, _ = magic(ip, "c --cases pairs --checker judge --server 127.0.0.1:1", SUM_C)
    assert r.error_in_exec.status is Status.REJECTED and "runs only on this machine" in str(r.error_in_exec)
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="--checker, --show-output cannot be a session default"):
        ip.run_line_magic("dcodex", "config --checker judge --show-output")


@pytest.mark.parametrize("kind", BAD)
def test_magic_bad_cases_is_one_usage_error(ip, tmp_path, kind):
    from IPython.core.error import UsageError

    d, says = make_bad(tmp_path, kind)
    r, captured = magic(ip, f"c --cases {d}", SUM_C)
    assert isinstance(r.error_in_exec, UsageError) and says in str(r.error_in_exec), r
    assert captured.outputs == []


# ---------------------------------------------------------------- an ordinary user's engine

ORDINARY_RUNNER = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.events import collect
from dcodex_kernel.request import Checker, Request
from dcodex_kernel.verdicts import Case
spec = json.load(sys.stdin)
cases = [Case(*c) for c in spec["cases"]]
out = {}
for language, code in spec["checkers"].items():
    result = collect(LocalBackend().execute(Request("c", spec["program"], cases=cases,
                                                    checker=Checker(language, code), show_output=True)))
    out[language] = {"status": result.status.value, "isolation": list(result.isolation),
                     "stdout": result.stdout,
                     "cases": [[c.name, c.verdict, c.message] for c in result.cases]}
print(json.dumps(out))
'''

@pytest.mark.skipif(os.geteuid() != 0, reason="the suite runs as an ordinary user already")
def test_checkers_in_an_ordinary_users_engine(tmp_path):
    """The engine as an ordinary user (no per-run uid, a user namespace): a C and a Python
    checker are built and run in the sandbox there too, with the same verdicts."""
    from .support import run_as_ordinary_user

    spec = {"program": WRONG_C, "cases": [[c.name, c.input.decode(), c.expected.decode()] for c in CASES],
            "checkers": {"c": CHECK_C, "python": CHECK_PY}}
    out = json.loads(run_as_ordinary_user(ORDINARY_RUNNER, input=json.dumps(spec)))
    for language in ("c", "python"):
        got = out[language]
        assert got["status"] == "runtime_error" and "per-run-uid" not in got["isolation"], got
        assert [c[:2] for c in got["cases"]] == [["1", "accepted"], ["2", "wrong_answer"],
                                                ["3", "accepted"]], got
        assert got["stdout"] == "=== case 1 ===\n3\n=== case 2 ===\n5\n=== case 3 ===\n42\n"
    assert out["c"]["cases"][1][2] == "want 4" and out["python"]["cases"][1][2] == "want 4, got ['5']"
