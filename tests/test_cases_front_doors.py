"""`--cases` and `--compare` through the shared option grammar, the one case table, and the same
case directory through the three front doors: `dcodex run` (a subprocess), a real DCodeX kernel
(jupyter_client) and the IPython magics (a real shell)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
