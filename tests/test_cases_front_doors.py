"""`--cases` and `--compare` through the shared option grammar, the one case table, and the same
case directory through the three front doors: `dcodex run` (a subprocess), a real DCodeX kernel
(jupyter_client) and the IPython magics (a real shell)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dcodex_kernel import case_table
from dcodex_kernel.events import CaseResult
from dcodex_kernel.options import OptionError, parse_header, request_from
from dcodex_kernel.request import Language, Limits
from dcodex_kernel.verdicts import Case


SUM_C = r"""#include <stdio.h>
int main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 1; printf("%ld\n", a + b); return 0; }
"""
# Case 10 expects a wrong sum: the program is right, the case says 2/3 accepted (and orders 10 last).
PAIRS = {"1": ("1 2\n", "3\n"), "2": ("40 2\n", "42\n"), "10": ("2 2\n", "5\n")}


@pytest.fixture
def cases_dir(tmp_path):
    d = tmp_path / "cases"
    d.mkdir()
    for name, (given, expected) in PAIRS.items():
        (d / f"{name}.in").write_text(given)
        (d / f"{name}.out").write_text(expected)
    return d


def request(line, **kw):
    return request_from(parse_header(line), code="", language=Language.C, base=Limits(), **kw)


# ---------------------------------------------------------------- the shared grammar

def test_cases_and_compare_build_the_request(cases_dir):
    r = request(f"c --cases {cases_dir} --compare float:1e-3")
    assert [c.name for c in r.cases] == ["1", "2", "10"] and r.compare == "float:0.001"
    assert r.cases[2] == Case("10", b"2 2\n", b"5\n") and r.stdin == b""
    assert request("c --compare TOKENS").compare == "tokens"
    assert request("c").cases == () and request("c").compare == "default"


@pytest.mark.parametrize("line, says", [
    ("c --cases /no/such/dir", "cases: no such directory: /no/such/dir"),
    ("c --compare fuzzy", "unknown comparison mode 'fuzzy'"),
    ("c --compare float:-1", "needs a tolerance that is a number >= 0"),
    ("c --cases {d} --stdin 1", "argument --stdin: not allowed with argument --cases"),
    ("c --cases {d} --stdin-file x", "argument --stdin-file: not allowed with argument --cases"),
])
def test_bad_cases_or_compare_is_one_option_error(cases_dir, line, says):
    with pytest.raises(OptionError) as e:
        request(line.format(d=cases_dir))
    assert says in str(e.value)


def test_an_empty_or_incomplete_directory_is_the_loaders_message(tmp_path):
    with pytest.raises(OptionError, match="holds no cases"):
        request(f"c --cases {tmp_path}")
    (tmp_path / "1.in").write_text("1")
    with pytest.raises(OptionError, match=r"1.in has no 1.out or 1.ans"):
        request(f"c --cases {tmp_path}")


# ---------------------------------------------------------------- the one table

TABLE_CASES = [
    CaseResult("1", "accepted", wall_s=0.0012, peak_memory=1 << 20),
    CaseResult("2", "wrong_answer", "line 1: expected '<b>5</b>', got '4'", wall_s=0.002,
               peak_memory=3 << 19),
    CaseResult("10", "time_limit", "CPU time limit of 1 s exceeded", wall_s=1.25),
]


def test_text_table_lines_and_summary():
    text = case_table.text_table(TABLE_CASES)
    lines = text.splitlines()
    assert lines[0].split() == ["case", "verdict", "time", "memory", "detail"]
    assert lines[1].split() == ["1", "accepted", "1", "ms", "1.0", "MiB"]
    assert "wrong_answer" in lines[2] and "line 1: expected '<b>5</b>', got '4'" in lines[2]
    assert lines[3].split()[:4] == ["10", "time_limit", "1250", "ms"] and " - " in lines[3]
    assert lines[-1] == "1/3 accepted" and text.endswith("\n")
    assert case_table.failure(TABLE_CASES) == "2 of 3 cases failed"
    assert case_table.failure(TABLE_CASES[:1]) == "" and case_table.summary(TABLE_CASES[:1]) == "1/1 accepted"


def test_html_table_is_escaped_and_bundled():
    bundle = case_table.bundle(TABLE_CASES)
    assert set(bundle) == {"text/html", "text/plain"}
    page = bundle["text/html"]
    assert "&lt;b&gt;5&lt;/b&gt;" in page and "<b>5</b>" not in page
    assert page.count("<tr>") == 4 and "1/3 accepted" in page
    long = CaseResult("x", "runtime_error", "y" * 500)
    assert len(case_table.text_table([long]).splitlines()[1]) < 160


# ---------------------------------------------------------------- dcodex run

def dcodex(*args):
    return subprocess.run([sys.executable, "-m", "dcodex_kernel", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def sum_c(tmp_path):
    path = tmp_path / "sum.c"
    path.write_text(SUM_C)
    return str(path)


def check_table(text):
    """The table of the three cases: in natural order, 10 a wrong answer with its first line."""
    lines = text.strip().splitlines()
    assert lines[0].split() == ["case", "verdict", "time", "memory", "detail"], text
    assert [line.split()[:2] for line in lines[1:4]] == [
        ["1", "accepted"], ["2", "accepted"], ["10", "wrong_answer"]], text
    assert "line 1: expected '5', got '4'" in lines[3]
    assert lines[4] == "2/3 accepted"


@pytest.mark.usefixtures("no_leftovers")
def test_cli_prints_the_table_and_exits_1_unless_all_accepted(sum_c, cases_dir):
    proc = dcodex("run", sum_c, "--cases", str(cases_dir))
    assert proc.returncode == 1, proc.stderr
    check_table(proc.stdout)
    assert proc.stderr == ""
    (cases_dir / "10.out").write_text("4\n")
    proc = dcodex("run", sum_c, "--cases", str(cases_dir))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("3/3 accepted"), proc


def test_cli_json_carries_every_case(sum_c, cases_dir):
    doc = json.loads(dcodex("run", sum_c, "--cases", str(cases_dir), "--json").stdout)
    assert doc["status"] == "runtime_error" and doc["message"] == "1 of 3 cases failed"
    assert [(c["name"], c["verdict"]) for c in doc["cases"]] == [
        ("1", "accepted"), ("2", "accepted"), ("10", "wrong_answer")]
    assert doc["cases"][2]["message"] == "line 1: expected '5', got '4'"


def test_cli_compile_error_is_65_and_no_table(tmp_path, cases_dir):
    bad = tmp_path / "bad.c"
    bad.write_text("int main( {")
    proc = dcodex("run", str(bad), "--cases", str(cases_dir))
    assert proc.returncode == 65 and "compile_error" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("args, says", [
    (["--cases", "/no/such/dir"], "dcodex run: cases: no such directory: /no/such/dir"),
    (["--compare", "fuzzy"], "unknown comparison mode 'fuzzy'"),
])
def test_cli_bad_cases_or_compare_is_one_clear_error(sum_c, args, says):
    proc = dcodex("run", sum_c, *args)
    assert proc.returncode == 2 and says in proc.stderr and proc.stdout == ""
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- the kernel

@pytest.fixture(scope="module")
def c_kernel():
    from .kernel_support import start_kernel, stop_kernel

    km, kc = start_kernel("dcodex-c")
    yield kc
    stop_kernel(km, kc)


def test_kernel_shows_one_table_and_fails_with_one_error(c_kernel, cases_dir):
    from .kernel_support import execute

    run = execute(c_kernel, f"%%dcodex --cases {cases_dir}\n{SUM_C}")
    assert run.kinds == ["display_data", "error"], run.outputs
    data = run.outputs[0][2]["data"]
    assert set(data) == {"text/html", "text/plain"}
    check_table(data["text/plain"])
    assert "wrong_answer" in data["text/html"] and "2/3 accepted" in data["text/html"]
    error = run.errors[0]
    assert run.status == "error" and error["ename"] == "TestsFailed"
    assert error["evalue"] == "1 of 3 cases failed" == run.reply["content"]["evalue"]
    assert [(c["name"], c["verdict"]) for c in run.result["cases"]] == [
        ("1", "accepted"), ("2", "accepted"), ("10", "wrong_answer")]

    (cases_dir / "10.out").write_text("4\n")
    run = execute(c_kernel, f"%%dcodex c --cases {cases_dir} --compare tokens\n{SUM_C}")
    assert run.status == "ok" and run.kinds == ["display_data"], run.outputs
    assert run.outputs[0][2]["data"]["text/plain"].strip().endswith("3/3 accepted")
    assert len(run.result["cases"]) == 3


@pytest.mark.parametrize("header, says", [
    ("--cases /no/such/dir", "cases: no such directory: /no/such/dir"),
    ("--compare fuzzy", "unknown comparison mode 'fuzzy'"),
])
def test_kernel_bad_cases_or_compare_is_one_option_error(c_kernel, header, says):
    from .kernel_support import execute

    run = execute(c_kernel, f"%%dcodex {header}\n{SUM_C}")
    assert run.status == "error" and run.kinds == ["error"], run.outputs
    assert run.errors[0]["ename"] == "OptionError" and says in run.errors[0]["evalue"]


# ---------------------------------------------------------------- the magics



def magic(ip, line, body=SUM_C):
    """(the ExecutionResult, the displayed bundles) of one `%%dcodex` cell."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        r = ip.run_cell(f"%%dcodex {line}\n{body}")
    return r, [out.data for out in captured.outputs]


def test_magic_displays_the_table_and_raises_tests_failed(ip, cases_dir):
    from dcodex_kernel.magics import DCodeXError

    r, shown = magic(ip, f"c --cases {cases_dir} --out res")
    assert isinstance(r.error_in_exec, DCodeXError), r
    assert str(r.error_in_exec) == "TestsFailed: 1 of 3 cases failed"
    assert len(shown) == 1 and set(shown[0]) == {"text/html", "text/plain"}
    check_table(shown[0]["text/plain"])
    res = ip.user_ns["res"]
    assert [(c.name, c.verdict) for c in res.cases] == [
        ("1", "accepted"), ("2", "accepted"), ("10", "wrong_answer")]
    r, shown = magic(ip, f"c --cases {cases_dir} --no-raise-error --quiet")
    assert r.error_in_exec is None and len(shown) == 1


def test_magic_cases_from_a_variable(ip):
    ip.user_ns["pairs"] = [("1 2\n", "3\n"), ("2 2", "4")]
    r, shown = magic(ip, "cpp --cases pairs --out res --quiet")
    assert r.error_in_exec is None, r
    assert [c.name for c in ip.user_ns["res"].cases] == ["1", "2"]
    assert shown[0]["text/plain"].strip().endswith("2/2 accepted")
    ip.user_ns["named"] = {"small": ("1 1", "2"), "big": (b"1000000 1", b"1000002\n")}
    r, shown = magic(ip, "c --cases named --out res --quiet")
    assert str(r.error_in_exec) == "TestsFailed: 1 of 2 cases failed"
    assert [(c.name, c.verdict) for c in ip.user_ns["res"].cases] == [
        ("small", "accepted"), ("big", "wrong_answer")]


@pytest.mark.parametrize("line, says", [
    ("c --cases /no/such/dir", "cases: no such directory: /no/such/dir"),
    ("c --compare fuzzy", "unknown comparison mode 'fuzzy'"),
    ("c --cases notpairs", "--cases: notpairs is a int, not a list of (input, expected) pairs"),
    ("c --cases badpair", "--cases: badpair: case 1 is not an (input, expected) pair"),
    ("c --cases pairs --stdin 1", "not allowed with argument --cases"),
])
def test_magic_bad_cases_or_compare_is_one_usage_error(ip, line, says):
    from IPython.core.error import UsageError

    ip.user_ns.update(notpairs=3, badpair=["just input"], pairs=[("1 1", "2")])
    r, shown = magic(ip, line)
    assert isinstance(r.error_in_exec, UsageError) and says in str(r.error_in_exec), r
    assert shown == []


def test_compile_error_is_one_error_and_no_table_in_kernel_and_magic(c_kernel, ip, cases_dir):
    from dcodex_kernel.magics import DCodeXError
    from .kernel_support import execute

    run = execute(c_kernel, f"%%dcodex --cases {cases_dir}\nint main( {{")
    assert run.kinds == ["error"] and run.errors[0]["ename"] == "CompileError", run.outputs
    assert run.result["status"] == "compile_error" and run.result["cases"] == []
    r, shown = magic(ip, f"c --cases {cases_dir}", "int main( {")
    assert isinstance(r.error_in_exec, DCodeXError) and str(r.error_in_exec).startswith("compile_error")
    assert shown == []


def test_cases_through_a_server_give_the_same_table_and_exit_code(sum_c, cases_dir):
    """`dcodex run --cases --server`: the server builds once and runs the cases (the request
    carries them), and the CLI shows the same verdicts and exit code as on this machine."""
    from .test_server import Served

    here = dcodex("run", sum_c, "--cases", str(cases_dir))
    served = Served()
    try:
        there = dcodex("run", sum_c, "--cases", str(cases_dir), "--server", served.address)
    finally:
        assert served.stop() == 0
    assert there.returncode == here.returncode == 1, there
    verdicts = [line.split()[:2] for line in there.stdout.splitlines()[1:4]]
    assert verdicts == [line.split()[:2] for line in here.stdout.splitlines()[1:4]], there.stdout
    assert "2/3 accepted" in there.stdout


def test_magic_run_file_with_cases_and_config_refuses_them(ip, sum_c, cases_dir):
    from IPython.core.error import UsageError
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        ip.run_line_magic("dcodex", f"run {sum_c} --cases {cases_dir} --no-raise-error --out res --quiet")
    check_table(captured.outputs[0].data["text/plain"])
    assert len(ip.user_ns["res"].cases) == 3
    with pytest.raises(UsageError, match="--cases, --compare cannot be a session default"):
        ip.run_line_magic("dcodex", f"config --cases {cases_dir} --compare exact")
