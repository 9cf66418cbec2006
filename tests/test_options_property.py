"""Property tests of the option grammar and `Limits`: whatever a person types into a `%%dcodex`
header (kernel), a magic's line or `dcodex run`'s arguments, and whatever a DCODEX_* variable
or a limit setting holds, the front door gives a Request whose limits the engine can honour, or
its one clear error (OptionError / ValueError; UsageError / TraitError in IPython; argparse's
exit 2 on the command line) — never another exception."""

from __future__ import annotations

import contextlib
import io
import math
import shlex

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from IPython.core.error import UsageError
from traitlets import TraitError

from dcodex_kernel import cli
from dcodex_kernel.kernel import cell_request, parse_cell
from dcodex_kernel.magics import DCodeXMagics, split_words_or_usage
from dcodex_kernel.options import OptionError, header_parser, join_flag_values, parse_words
from dcodex_kernel.request import Language, Limits, Request, parse_seconds, parse_size

from .support import ipython_shell

PROPERTY = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

OPTIONS = sorted(o for o in header_parser(magic=True)._option_string_actions) + [
    "--lang", "--json", "--cpu_time", "--time", "-t", "--", "-"]
LIMIT_OPTIONS = ["--timeout", "--cpu-time", "--memory", "--output-limit"]

# Values people (and fuzzers) give limits: sane, absurd, malformed.
numbers = st.one_of(
    st.integers(min_value=-10, max_value=10 ** 30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.sampled_from(["999999999", "1e99", "1E9", "inf", "-inf", "nan", "0", "0.0", "-1", ".5",
                     "5.", "1" * 400, "9" * 5000, "3600", "3600.0001", "0.000001", "٣", "１２"]),
)
sizes = st.builds(lambda n, unit, suffix: f"{n}{unit}{suffix}", numbers,
                  st.sampled_from(["", "k", "K", "m", "M", "g", "G", "t", "T", "P", "x"]),
                  st.sampled_from(["", "b", "B", "iB", "ib", " ", " M"]))
durations = st.builds(lambda n, unit: f"{n}{unit}", numbers,
                      st.sampled_from(["", "s", "ms", "S", "MS", "m", "h", " s", "us"]))
junk = st.text(max_size=12)  # any unicode, control characters and quotes included
values = st.one_of(sizes, durations, junk, st.sampled_from(["99999T", "64G", "64.0001G", "1G"]))
languages = st.sampled_from(["c", "cpp", "c++", "python", "py", "PY", "fortran", ""])
words = st.lists(st.one_of(st.sampled_from(OPTIONS), values, languages, junk), max_size=8)


@st.composite
def option_words(draw) -> list[str]:
    """Argument words: a limit option with a value, then anything."""
    out = []
    for _ in range(draw(st.integers(0, 3))):
        out += [draw(st.sampled_from(LIMIT_OPTIONS)), draw(values)]
    out += draw(words)
    return draw(st.permutations(out)) if draw(st.booleans()) else out


# Well-formed limits of any size (most of them parse: the values then reach Limits).
well_formed = st.one_of(
    st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 10 ** 20),
              st.sampled_from(["", "s", "ms", "k", "M", "G", "T"])),
    st.builds(lambda x: f"{x:.3f}", st.floats(0.001, 1e12)))


@st.composite
def well_formed_words(draw) -> list[str]:
    out = [draw(st.sampled_from(["c", "cpp", "python"]))] if draw(st.booleans()) else []
    for option in draw(st.lists(st.sampled_from(LIMIT_OPTIONS), max_size=4)):
        out += [option, draw(well_formed)]
    return out


@st.composite
def header_lines(draw) -> str:
    """A header's text after `%%dcodex`: the words quoted as a shell would, or joined raw (so
    unbalanced quotes and backslashes reach shlex too)."""
    ws = draw(st.one_of(option_words(), well_formed_words()))
    if draw(st.booleans()):
        return " ".join(shlex.quote(w) for w in ws)
    return " ".join(ws)


def assert_honourable(request):
    assert isinstance(request, Request)
    for limits in (request.limits, request.compile_limits):
        for name, top in Limits.MAX.items():
            value = getattr(limits, name, None)
            if value is not None:
                assert Limits.MIN.get(name, 0) <= value <= top and value > 0, (name, value)


def assert_clear(error: BaseException):
    message = str(error)
    assert message.strip(), f"{type(error).__name__} without a message"
    assert "Traceback" not in message


# ---- the kernel's cell header ----------------------------------------------------------------

@PROPERTY
@given(header_lines(), st.sampled_from(["%%dcodex", "%dcodex"]))
def test_kernel_header_gives_a_request_or_an_option_error(line, magic):
    code = f"{magic} {line}" + ("" if magic == "%dcodex" else "\nint main(void) { return 0; }\n")
    try:
        cell = parse_cell(code, Language.C)
        request = cell_request(cell, Limits())
    except OptionError as e:  # HelpRequested too: its text is the help
        assert_clear(e)
        return
    assert_honourable(request)


# ---- the IPython magics ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def shell():
    return ipython_shell()


@PROPERTY
@given(line=header_lines())
def test_magic_cell_gives_a_request_or_a_usage_error(shell, line):
    magics = DCodeXMagics(shell=shell)  # a fresh session each time: no state carries over
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # --help prints the grammar
            ns = magics._parse(split_words_or_usage(line), "%%dcodex")
        if ns is None:
            return
        request = magics._request(ns, "print(1)\n", ns.language or Language.PYTHON, local_ns={})
    except UsageError as e:
        assert_clear(e)
        return
    assert_honourable(request)


@PROPERTY
@given(line=header_lines())
def test_magic_config_sets_honourable_defaults_or_a_usage_error(shell, line):
    magics = DCodeXMagics(shell=shell)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            magics.dcodex_line(f"config {line}", local_ns={})
    except UsageError as e:
        assert_clear(e)
    # whatever was accepted, the session's limits are valid ones
    assert_honourable(Request(Language.C, "", limits=magics.limits()))


limit_settings = st.one_of(values, st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
                           st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                           st.none(), st.lists(st.integers(), max_size=2))


@PROPERTY
@given(trait=st.sampled_from(["timeout", "cpu_time", "memory", "output_limit"]),
       value=limit_settings)
def test_magic_limit_settings_are_valid_or_a_trait_error(shell, trait, value):
    magics = DCodeXMagics(shell=shell)
    try:
        setattr(magics, trait, value)  # what `%config DCodeXMagics.timeout = …` does
    except TraitError as e:
        assert_clear(e)
    assert_honourable(Request(Language.C, "", limits=magics.limits()))


# ---- the command line ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def program(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "prog.c"
    path.write_text("int main(void) { return 0; }\n")
    return str(path)


@PROPERTY
@given(argv=st.one_of(option_words(), well_formed_words()))
def test_cli_gives_a_request_or_a_clear_error(program, argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            ns = parse_words(cli.build_parser(), join_flag_values(["run", program, *argv]))
        request = cli.build_request(ns, environ={})
    except SystemExit as e:  # argparse: usage and the error on stderr, exit 2 (or --help: 0)
        assert e.code in (0, 2), e.code
        if e.code == 2:
            assert "error:" in err.getvalue() and "Traceback" not in err.getvalue()
        return
    except (OptionError, ValueError) as e:  # what main() prints as `dcodex run: …`, exit 2
        assert_clear(e)
        return
    assert_honourable(request)


# ---- the DCODEX_* variables and Limits itself ------------------------------------------------

@PROPERTY
@given(env=st.dictionaries(st.sampled_from(sorted(Limits.ENV)), values, max_size=5))
def test_environment_gives_limits_or_a_value_error_naming_the_variable(env):
    try:
        limits = Limits.from_env(env)
    except ValueError as e:
        assert_clear(e)
        assert str(e).split(":")[0] in env
        return
    assert_honourable(Request(Language.C, "", limits=limits))


any_limit_value = st.one_of(st.integers(min_value=-(10 ** 40), max_value=10 ** 40),
                            st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                            st.text(max_size=4), st.none())


@PROPERTY
@given(changes=st.dictionaries(st.sampled_from(sorted(Limits.MAX)), any_limit_value, max_size=4))
def test_limits_are_within_their_maxima_or_a_value_error(changes):
    try:
        limits = Limits(**changes)
    except ValueError as e:
        assert_clear(e)
        return
    assert_honourable(Request(Language.C, "", limits=limits))


@PROPERTY
@given(text=values)
def test_parsers_give_a_number_or_a_value_error(text):
    for parse in (parse_size, parse_seconds):
        try:
            value = parse(text)
        except ValueError as e:
            assert_clear(e)
            continue
        assert value > 0 and (isinstance(value, int) or math.isfinite(value))


# ---- the maxima themselves, through each front door -------------------------------------------

@PROPERTY
@given(seconds=st.floats(min_value=0.001, max_value=10 * Limits.MAX["wall_s"]))
def test_a_timeout_is_taken_up_to_the_maximum_and_refused_above(seconds):
    text = f"{seconds:.3f}"
    value = float(text)
    assume(value > 0)
    line = f"%%dcodex c --timeout {text}\nint main(void) {{ return 0; }}"
    if value <= Limits.MAX["wall_s"]:
        assert cell_request(parse_cell(line, Language.C), Limits()).limits.wall_s == value
    else:
        with pytest.raises(OptionError, match="above the maximum of 3600 s"):
            cell_request(parse_cell(line, Language.C), Limits())
