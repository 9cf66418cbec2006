"""Test cases with verdicts: `verdicts` (loading judge-layout directories, comparison modes) and
the engine's case loop against real gcc/g++/python (build once, each case its own sandbox, a
verdict per case, nothing left behind)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from dcodex_kernel.build_cache import BuildCache
from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.cancel import CancelToken
from dcodex_kernel.events import CaseResult, Output, Result, Status
from dcodex_kernel.request import Language, Limits, Request
from dcodex_kernel.verdicts import (MAX_EXPECTED_BYTES, Case, Mode, compare, load_cases,
                                    natural_key, parse_mode, show)


def write_cases(root, pairs: dict, ext=".out"):
    root.mkdir(exist_ok=True)
    for name, (given, expected) in pairs.items():
        (root / f"{name}.in").write_bytes(given if isinstance(given, bytes) else given.encode())
        (root / f"{name}{ext}").write_bytes(expected if isinstance(expected, bytes) else expected.encode())
    return root


def execute(backend, request, cancel=None):
    """(the Result, the Output events before it); exactly one Result, last."""
    events = list(backend.execute(request, cancel))
    results = [e for e in events if isinstance(e, Result)]
    assert len(results) == 1 and events[-1] is results[0], "exactly one Result, last"
    return results[0], [e for e in events[:-1] if isinstance(e, Output)]  # not the Phases


SUM_C = r"""#include <stdio.h>
int main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 1; printf("%ld\n", a + b); return 0; }
"""


# ---------------------------------------------------------------- loading

def test_load_cases_natural_order_with_out_and_ans(tmp_path):
    d = write_cases(tmp_path / "cases", {"10": ("10 0", "10\n"), "2": ("1 1", "2\n"), "1": ("0 1", "1\n")})
    write_cases(d, {"case2": ("x", "y"), "case10": ("z", "w")}, ext=".ans")
    (d / "README.md").write_text("ignored")
    (d / "sub").mkdir()
    cases = load_cases(d)
    assert [c.name for c in cases] == ["1", "2", "10", "case2", "case10"]
    assert cases[2] == Case("10", b"10 0", b"10\n")
    assert cases[4].expected == b"w"
    assert sorted(["a10", "a9", "b1", "A2"], key=natural_key) == ["A2", "a9", "a10", "b1"]


@pytest.mark.parametrize("make, says", [
    (lambda d: write_cases(d, {"1": ("1", "1"), "3": ("3", "3")}) and (d / "2.in").write_text("2"),
     "2.in has no 2.out or 2.ans"),
    (lambda d: d.mkdir(), "holds no cases"),
    (lambda d: write_cases(d, {"1": ("1", b"ok\0\1\2")}), "is binary"),
    (lambda d: write_cases(d, {"1": ("1", b"caf\xe9\n")}), "is not UTF-8"),
    (lambda d: write_cases(d, {"1": ("1", "1")}) and os.truncate(d / "1.out", MAX_EXPECTED_BYTES + 1),
     "larger than the maximum of 16 MiB"),
    (lambda d: d.write_text("not a dir"), "is not a directory"),
    (lambda d: None, "no such directory"),
    (lambda d: write_cases(d, {"1": ("1", "1")}) and (d / "1.ans").write_text("1"), "both 1.out and 1.ans"),
    (lambda d: d.mkdir() or (d / "7.out").write_text("7"), "7.out has no 7.in"),
    (lambda d: d.mkdir() or (d / "1.in").mkdir() or (d / "1.out").write_text("1"), "not a regular file"),
])
def test_bad_case_directories_are_one_clear_value_error(tmp_path, make, says):
    d = tmp_path / "cases"
    make(d)
    with pytest.raises(ValueError) as info:
        load_cases(d)
    message = str(info.value)
    assert says in message and message.startswith("cases: ") and "\n" not in message


# ---------------------------------------------------------------- comparing

@pytest.mark.parametrize("expected, actual, accepted", [
    ("1\n2\n", "1\n2\n", {"default", "exact", "tokens", "float:0"}),
    ("1\n2\n", "1  \n2", {"default", "tokens", "float:0"}),  # trailing spaces, no final newline
    ("1\n2\n", "1\r\n2\r\n\n\n", {"default", "tokens", "float:0"}),  # CRLF, blank lines at the end
    ("1 2\n", "1  2\n", {"tokens", "float:0"}),  # whitespace inside a line
    ("1 2\n", "1\n2\n", {"tokens", "float:0"}),
    ("\n1\n", "1\n", {"tokens", "float:0"}),  # a leading blank line matters to lines
    ("3.14159265 pi\n", "3.1415927 pi\n", {"float:1e-6"}),
    ("1000000\n", "1000000.5\n", {"float:1e-6"}),  # relative
    ("0\n", "1e-7\n", {"float:1e-6"}),  # absolute
    ("3.14 pi\n", "3.14 PI\n", set()),  # words stay exact under float
    ("1\n2\n", "1\n", set()),
])
def test_each_mode_accepts_what_it_should(expected, actual, accepted):
    for mode in ("default", "exact", "tokens", "float:0", "float:1e-6"):
        want = mode in accepted or (mode == "float:1e-6" and "float:0" in accepted)
        ok, detail = compare(expected.encode(), actual, mode)
        assert ok is want, (mode, expected, actual, detail)
        assert (detail == "") is ok
        assert compare(expected, actual.encode(), mode) == (ok, detail)  # str or bytes alike


def test_wrong_answer_details_name_the_first_differing_line():
    assert compare(b"1\n2\n5\n", "1\n2\n6\n") == (False, "line 3: expected '5', got '6'")
    assert compare(b"1\n2\n", "1\n") == (False, "line 2: expected '2', got end of output")
    assert compare(b"1\n", "1\n2\n") == (False, "line 2: expected end of output, got '2'")
    assert compare(b"5\n", "5", "exact") == (False, r"line 1: expected '5\n', got '5'")
    assert compare(b"a b\nc d\n", "a b\nc e\n", "tokens") == (False, "line 2: expected 'd', got 'e'")
    assert compare(b"1.5\n", "1.6", "float:0.01") == \
        (False, "line 1: expected '1.5', got '1.6' (off by 0.1 > 0.01)")
    ok, detail = compare(b"x\n", "\x1b[31m" + "y" * 500 + "\n")
    assert not ok and detail == "line 1: expected 'x', got '\\x1b[31m" + "y" * 35 + "…'"
    assert len(detail) < 80 and show("it's") == '"it\'s"'


def test_parse_mode():
    assert parse_mode("default") == Mode("default") and parse_mode(" Tokens ") == Mode("tokens")
    assert parse_mode("float") == Mode("float", 1e-6) and parse_mode("float:1e-3") == Mode("float", 1e-3)
    assert str(parse_mode("float:0.5")) == "float:0.5" and str(parse_mode("exact")) == "exact"
    for bad, says in (("fuzzy", "unknown comparison mode 'fuzzy'"), ("float:abc", "tolerance"),
                      ("float:-1", "tolerance"), ("float:nan", "tolerance"), ("float:inf", "tolerance"),
                      ("", "unknown comparison mode")):
        with pytest.raises(ValueError, match=says):
            parse_mode(bad)


def test_request_validates_cases_and_compare():
    cases = [Case("1", "1 2\n", "3\n")]
    request = Request(Language.C, SUM_C, cases=cases, compare="Float:1e-3")
    assert request.cases == tuple(cases) and request.compare == "float:0.001"
    assert Request(Language.C, SUM_C).cases == () and Request(Language.C, SUM_C).compare == "default"
    with pytest.raises(ValueError, match="unknown comparison mode"):
        Request(Language.C, SUM_C, cases=cases, compare="close enough")
    with pytest.raises(ValueError, match="stdin and cases"):
        Request(Language.C, SUM_C, cases=cases, stdin="1 2")
    with pytest.raises(ValueError, match="verdicts.Case"):
        Request(Language.C, SUM_C, cases=[("1 2", "3")])


# ---------------------------------------------------------------- the engine

pytestmark_engine = pytest.mark.usefixtures("no_leftovers")


@pytestmark_engine
def test_cases_from_a_directory_in_order_built_once(tmp_path):
    backend = LocalBackend(BuildCache(tmp_path / "cache"))
    d = write_cases(tmp_path / "cases", {str(i): (f"{i} {i * i}\n", f"{i + i * i}\n") for i in (1, 2, 10, 11, 3)})
    # A warning: the build's diagnostics appear once, not once per case.
    code = SUM_C.replace("int main(void) {", "int main(void) { int unused;")
    request = Request(Language.C, code, cases=load_cases(d), cflags=("-Wall",))
    result, events = execute(backend, request)
    assert result.status is Status.OK and result.message == "" and not result.cached
    assert [c.name for c in result.cases] == ["1", "2", "3", "10", "11"]
    assert all(isinstance(c, CaseResult) and c.verdict == "accepted" and c.message == "" for c in result.cases)
    assert all(c.exit_code == 0 and c.wall_s > 0 and c.peak_memory > 0 for c in result.cases)
    diagnostics = "".join(e.text for e in events if e.phase == "compile")
    assert diagnostics.count("warning:") == 1 and "unused" in diagnostics
    assert not [e for e in events if isinstance(e, Output) and e.phase == "run"], "no per-case output streamed"
    assert len([e for e in os.listdir(tmp_path / "cache") if not e.startswith(".")]) == 1  # one build
    again, _ = execute(backend, request)
    assert again.status is Status.OK and again.cached


@pytestmark_engine
def test_wrong_answer_with_its_detail(backend):
    cases = [Case("a", "1 2\n", "3\n"), Case("b", "2 2\n", "5\n"), Case("c", "5 5\n", "10\n")]
    result, _ = execute(backend, Request(Language.C, SUM_C, cases=cases))
    assert result.status is Status.RUNTIME_ERROR and result.message == "1 of 3 cases failed"
    assert [c.verdict for c in result.cases] == ["accepted", "wrong_answer", "accepted"]
    assert result.cases[1].message == "line 1: expected '5', got '4'"
    assert result.exit_code is None and result.cpu_s == pytest.approx(sum(c.cpu_s for c in result.cases))


@pytestmark_engine
@pytest.mark.parametrize("printed, expected, passes, fails", [
    ("1 2 \\n\\n", "1 2\n", "default", "exact"),
    ("1  2\\n", "1 2\n", "tokens", "default"),
    ("3.1415927 pi\\n", "3.14159265 pi\n", "float:1e-6", "tokens"),
    ("3.15 pi\\n", "3.14159265 pi\n", "float:0.01", "float:1e-6"),
])
def test_each_mode_end_to_end(backend, printed, expected, passes, fails):
    code = f'import sys\nsys.stdout.write("{printed}")\n'
    case = Case("only", b"", expected.encode())
    ok, _ = execute(backend, Request(Language.PYTHON, code, cases=[case], compare=passes))
    assert ok.status is Status.OK and ok.cases[0].verdict == "accepted"
    wrong, _ = execute(backend, Request(Language.PYTHON, code, cases=[case], compare=fails))
    assert wrong.status is Status.RUNTIME_ERROR and wrong.cases[0].verdict == "wrong_answer"
    assert wrong.cases[0].message.startswith("line 1: expected ")


LIMITS_CPP = r"""#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <unistd.h>
int main() {
    std::string what; std::cin >> what;
    if (what == "cpu") { volatile unsigned long n = 0; for (;;) n++; }
    if (what == "wall") { sleep(60); }
    if (what == "memory") { for (;;) { char *p = (char *)malloc(16 << 20); if (!p) return 3; memset(p, 1, 16 << 20); } }
    if (what == "output") { for (;;) std::cout << "spam spam spam spam\n"; }
    if (what == "segv") { raise(SIGSEGV); }
    if (what == "exit") { return 3; }
    std::cout << what << std::endl;
}
"""


@pytestmark_engine
def test_a_case_that_hits_each_limit_has_that_verdict(backend):
    names = ["cpu", "wall", "memory", "output", "segv", "exit", "fine"]
    cases = [Case(n, f"{n}\n", f"{n}\n") for n in names]
    limits = Limits(cpu_s=0.5, wall_s=3, memory=96 << 20, output=64 << 10)
    started = time.monotonic()
    result, _ = execute(backend, Request(Language.CPP, LIMITS_CPP, cases=cases, limits=limits))
    elapsed = time.monotonic() - started
    verdicts = {c.name: c.verdict for c in result.cases}
    assert verdicts == {"cpu": "time_limit", "wall": "wall_timeout", "memory": "memory_limit",
                        "output": "output_limit", "segv": "signaled", "exit": "runtime_error",
                        "fine": "accepted"}
    by_name = {c.name: c for c in result.cases}
    assert by_name["segv"].signal == 11 and by_name["exit"].exit_code == 3
    assert "Wall-clock limit of 3 s" in by_name["wall"].message
    assert result.status is Status.RUNTIME_ERROR and result.message == "6 of 7 cases failed"
    assert elapsed < 8, f"cases should run side by side ({elapsed:.1f} s)"


@pytestmark_engine
def test_compile_error_is_reported_once(backend):
    cases = [Case(str(i), "1 2\n", "3\n") for i in range(5)]
    result, events = execute(backend, Request(Language.C, "int main(void) { return nope; }\n", cases=cases))
    assert result.status is Status.COMPILE_ERROR and "nope" in result.message and result.cases == ()
    assert events and all(e.phase == "compile" for e in events)


@pytestmark_engine
def test_fifty_cases_leave_nothing_behind_and_to_dict_carries_them(backend):
    cases = [Case(f"t{i}", f"{i} {i}\n", f"{2 * i}\n" if i % 10 else "wrong\n") for i in range(50)]
    result, _ = execute(backend, Request(Language.C, SUM_C, cases=cases))
    assert [c.name for c in result.cases] == [f"t{i}" for i in range(50)]
    assert [c.name for c in result.cases if c.verdict == "wrong_answer"] == ["t0", "t10", "t20", "t30", "t40"]
    assert result.message == "5 of 50 cases failed"
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["status"] == "runtime_error" and len(doc["cases"]) == 50
    assert doc["cases"][10] == {"name": "t10", "verdict": "wrong_answer",
                                "message": "line 1: expected 'wrong', got '20'",
                                **{k: doc["cases"][10][k] for k in ("wall_s", "cpu_s", "peak_memory")},
                                "exit_code": 0, "signal": None}
    assert Result(Status.OK).to_dict()["cases"] == []


@pytestmark_engine
def test_cancel_stops_every_case(backend):
    cases = [Case(str(i), "", "") for i in range(6)]
    with CancelToken() as cancel:
        timer = threading.Timer(0.5, cancel.cancel)
        timer.start()
        started = time.monotonic()
        result, _ = execute(backend, Request(Language.PYTHON, "import time\ntime.sleep(60)\n", cases=cases), cancel)
        elapsed = time.monotonic() - started
        timer.join()
    assert result.status is Status.CANCELLED and result.message == "Interrupted"
    assert [c.verdict for c in result.cases] == ["cancelled"] * 6
    assert elapsed < 2.5, f"cancel took {elapsed:.2f} s"


@pytestmark_engine
def test_cases_run_side_by_side(backend):
    cases = [Case(str(i), "", "done\n") for i in range(4)]
    code = "import time\ntime.sleep(0.5)\nprint('done')\n"
    started = time.monotonic()
    result, _ = execute(backend, Request(Language.PYTHON, code, cases=cases))
    elapsed = time.monotonic() - started
    assert result.status is Status.OK, result.cases
    workers = min(4, len(os.sched_getaffinity(0)))
    assert elapsed < 4 * 0.5 / workers + 0.8, f"{elapsed:.2f} s for 4 cases of 0.5 s on {workers} workers"


@pytestmark_engine
def test_case_parallelism_bounds_how_many_run_at_once(backend, monkeypatch):
    monkeypatch.setattr(backend, "case_parallelism", 1)
    cases = [Case(str(i), "", "") for i in range(3)]
    started = time.monotonic()
    result, _ = execute(backend, Request(Language.PYTHON, "import time\ntime.sleep(0.3)\n", cases=cases))
    assert result.status is Status.OK and time.monotonic() - started >= 0.9
