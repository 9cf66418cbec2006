"""The one option grammar shared by the `%%dcodex LANG [options]` cell header (kernel and
IPython magics) and `dcodex run`: parse the words, then build a Request from them."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from dataclasses import replace

from .request import MAX_CHECKER_BYTES, MAX_REPEAT, Checker, Language, Limits, Request, parse_seconds, parse_size
from .verdicts import MODES, Case, cases_in_files, load_cases, parse_mode

# Options whose value is itself a list of flags: `--cflags -O3` must not read -O3 as an option.
FLAG_VALUED = ("--cflags", "--ldflags", "--args")


class OptionError(ValueError):
    """A bad header or command line; str() is a message fit to show a person."""


class HelpRequested(OptionError):
    """`-h`/`--help` was given: str() is the help text, to show as output rather than as a failure."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise OptionError(f"{self.prog}: {message}\n{self.format_usage().rstrip()}")

    def print_help(self, file=None):  # -h inside a cell: hand the text back, print nothing
        raise HelpRequested(self.format_help())

    def exit(self, status=0, message=None):  # --help inside a cell must not exit the kernel
        raise OptionError(message or self.format_help())


def _typed(parse, what, limit):
    """An argparse type: parse the text, then check it against `Limits` (which owns the maxima)."""
    def convert(text):
        try:
            value = parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{what}: {e}") from None
        try:
            return Limits.check(limit, value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = what
    return convert


def _mode(text: str) -> str:
    try:
        return str(parse_mode(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_mode.__name__ = "comparison mode"


def _repeat_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"repeat: {text!r} is not a whole number") from None
    if not 1 <= value <= MAX_REPEAT:
        raise argparse.ArgumentTypeError(f"repeat: {value} is not between 1 and {MAX_REPEAT}")
    return value


_repeat_count.__name__ = "repeat count"


def at_most(limit: str) -> str:
    return f"at most {Limits.show(limit, Limits.MAX[limit])}"


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options every front door understands, with one meaning everywhere."""
    g = parser.add_argument_group("limits and input")
    g.add_argument("--timeout", metavar="SECONDS", type=_typed(parse_seconds, "timeout", "wall_s"),
                   help=f"wall-clock limit of the run (e.g. 10, 2.5s, 500ms; {at_most('wall_s')})")
    g.add_argument("--cpu-time", metavar="SECONDS", type=_typed(parse_seconds, "cpu time", "cpu_s"),
                   help=f"CPU-time limit of the run ({at_most('cpu_s')})")
    g.add_argument("--memory", metavar="SIZE", type=_typed(parse_size, "memory", "memory"),
                   help=f"memory limit of the whole run, e.g. 256M, 2G ({at_most('memory')})")
    g.add_argument("--output-limit", metavar="SIZE",
                   type=_typed(parse_size, "output limit", "output"),
                   help=f"cap on stdout+stderr together, e.g. 64K, 1M ({at_most('output')})")
    g.add_argument("--disk", metavar="SIZE", type=_typed(parse_size, "disk", "disk"),
                   help="room for the files the program writes (its dir, /tmp, /dev/shm together), "
                        f"e.g. 16M ({at_most('disk')})")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--stdin", metavar="TEXT",
                     help=r"text fed to the program's stdin; escapes like \n and \t are understood")
    src.add_argument("--stdin-file", metavar="PATH",
                     help="feed this file to stdin (without --stdin or --stdin-file, a program "
                          "that reads stdin asks: a notebook's input box, or the terminal; "
                          "answer ^D to end the input)")
    src.add_argument("--cases", metavar="SOURCE",
                     help="run the program once per test case of this directory (NAME.in with "
                          "NAME.out or NAME.ans; the session workspace's first, e.g. written "
                          "with %%%%file cases/1.in) and give a verdict per case")
    g.add_argument("--compare", metavar="MODE", type=_mode,
                   help=f"how --cases compares outputs: {', '.join(MODES)} (default: default, "
                        "which ignores trailing whitespace and blank lines at the end)")
    g.add_argument("--checker", metavar="FILE",
                   help="judge each case with this C, C++ or Python program instead of --compare "
                        "(language from the extension; a session workspace file or a path): "
                        "built once, run in the sandbox with the run's limits and the paths of "
                        "the case's input, expected output and actual output as arguments; "
                        "exit 0 accepts, 1 rejects, anything else is checker_error; its stdout "
                        "is the comment shown")
    g.add_argument("--show-output", action="store_true", default=None,
                   help="with --cases, show each case's output (in order, under a header line "
                        "per case); without it only the table is shown")
    g.add_argument("--repeat", metavar="N", type=_repeat_count,
                   help="build once, run the program N times (each run with these limits and "
                        "stdin) and report min / median / max of wall time, CPU time and peak "
                        f"memory; only the first run's output is shown (N at most {MAX_REPEAT})")
    g.add_argument("--cflags", metavar="FLAGS", action="append", default=[],
                   help="extra compiler flags, e.g. --cflags '-O0 -g' (repeatable)")
    g.add_argument("--ldflags", metavar="FLAGS", action="append", default=[],
                   help="extra link flags, e.g. --ldflags -lm (repeatable)")
    g.add_argument("--args", metavar="ARGS", action="append", default=[],
                   help="command-line arguments for the program (shell-quoted)")
    g.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None,
                   help="use the build cache (default: yes)")
    g.add_argument("--sources", metavar="NAMES", action="append", default=[],
                   help="more C/C++ sources of the session workspace to compile and link with "
                        "the cell, comma-separated (e.g. --sources util.c,lib/io.c; repeatable)")
    add_server_options(parser)
    return src  # front doors may add more stdin sources to the same exclusive group


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Where programs run: a DCodeX server instead of this machine."""
    g = parser.add_argument_group("remote server")
    g.add_argument("--server", metavar="ADDR",
                   help="run on this DCodeX server (host:port) instead of this machine "
                        "(default: $DCODEX_SERVER if set)")
    g.add_argument("--token-file", metavar="PATH",
                   help="file holding the server's bearer token (default: $DCODEX_TOKEN)")
    g.add_argument("--tls-ca", metavar="PEM",
                   help="talk TLS to the server, trusting this CA certificate (default: $DCODEX_TLS_CA)")


def backend_options(ns: argparse.Namespace) -> dict:
    """The `get_backend()` keywords these options give (server, token, tls_ca); OptionError for
    a token or CA file that cannot be read."""
    out = {}
    if getattr(ns, "server", None):
        out["server"] = ns.server
    for opt, key, mode in (("token_file", "token", "r"), ("tls_ca", "tls_ca", "rb")):
        path = getattr(ns, opt, None)
        if path:
            try:
                with open(path, mode) as f:
                    value = f.read()
            except OSError as e:
                raise OptionError(f"--{opt.replace('_', '-')}: {e.strerror}: {path}") from None
            out[key] = value.strip() if mode == "r" else value
    return out


def header_parser(prog: str = "%%dcodex", *, magic: bool = False) -> argparse.ArgumentParser:
    """The parser for a `%%dcodex [LANG] [options]` line; `magic` adds the IPython-only options."""
    parser = _Parser(prog=prog, add_help=True, allow_abbrev=False,
                     description="Compile and run this cell as a C, C++ or Python program in the DCodeX sandbox.")
    parser.add_argument("language", nargs="?", metavar="LANG",
                        help="c, cpp (c++), or python (py)")
    stdin_group = add_run_options(parser)
    if magic:
        stdin_group.add_argument("--stdin-var", metavar="NAME",
                                 help="feed the str or bytes in this variable to stdin")
        m = parser.add_argument_group("IPython")
        m.add_argument("--out", metavar="VAR", help="store the Result in this variable")
        m.add_argument("--no-raise-error", action="store_true",
                       help="do not raise an exception when the program fails")
        m.add_argument("--quiet", action="store_true", help="no summary line after the run")
    return parser


def file_parser(prog: str = "%%file") -> argparse.ArgumentParser:
    """The parser of a `%%file [-a] NAME` line (`%%dcodex file` in IPython): the cell's body
    becomes the session workspace's file NAME, which every later run gets a copy of."""
    parser = _Parser(prog=prog, add_help=True, allow_abbrev=False,
                     description="Write this cell's text to NAME in the session workspace; every "
                                 "later run (compile and run steps) gets a copy of the workspace's "
                                 "files in its own directory. `%dcodex files` lists them.")
    parser.add_argument("-a", "--append", action="store_true",
                        help="append to NAME instead of replacing it")
    parser.add_argument("name", metavar="NAME",
                        help="a relative path inside the workspace, e.g. util.h or cases/1.in")
    return parser


def parse_file_command(line: str, prog: str = "%%file") -> argparse.Namespace:
    """(name, append) of a `%%file` line's options (everything after `%%file`)."""
    return file_parser(prog).parse_args(split_words(line))


def split_words(line: str) -> list[str]:
    """Shell-like split of a header line, with `--cflags -O3` joined into `--cflags=-O3`."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise OptionError(f"cannot parse options {line!r}: {e}") from None
    return join_flag_values(words)


def join_flag_values(words: list[str]) -> list[str]:
    joined, i = [], 0
    while i < len(words):
        word = words[i]
        if word in FLAG_VALUED and i + 1 < len(words):
            joined.append(f"{word}={words[i + 1]}")
            i += 2
        else:
            joined.append(word)
            i += 1
    return joined


def parse_words(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    ns = parser.parse_args(words)
    if getattr(ns, "language", None):
        try:
            ns.language = Language.parse(ns.language)
        except ValueError as e:
            raise OptionError(f"{parser.prog}: {e}") from None
    return ns


def parse_header(line: str, *, magic: bool = False, prog: str = "%%dcodex") -> argparse.Namespace:
    """Parse the options part of a `%%dcodex` line (everything after `%%dcodex`)."""
    return parse_words(header_parser(prog, magic=magic), split_words(line))


_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE = {"n": b"\n", "t": b"\t", "r": b"\r", "0": b"\0", "\\": b"\\", "'": b"'", '"': b'"',
           "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v", "e": b"\x1b"}


def unescape(text: str) -> bytes:
    r"""'1 2\n3\n' → b'1 2\n3\n'. Non-ASCII text stays UTF-8; unknown escapes stay as typed."""
    out, pos = bytearray(), 0
    for m in _ESCAPE.finditer(text):
        out += text[pos:m.start()].encode()
        esc = m.group(1)
        if esc[0] == "x" and len(esc) == 3:
            out.append(int(esc[1:], 16))
        elif esc in _SIMPLE:
            out += _SIMPLE[esc]
        elif esc.isdigit() and set(esc) <= set("01234567"):
            out.append(int(esc, 8) & 0xFF)
        else:
            out += m.group(0).encode()
        pos = m.end()
    out += text[pos:].encode()
    return bytes(out)


def limits_from(ns: argparse.Namespace, base: Limits) -> Limits:
    changes = {name: getattr(ns, opt) for opt, name in (
        ("timeout", "wall_s"), ("cpu_time", "cpu_s"), ("memory", "memory"), ("output_limit", "output"),
        ("disk", "disk"),
    ) if getattr(ns, opt, None) is not None}
    return replace(base, **changes)


def stdin_from(ns: argparse.Namespace) -> bytes:
    if ns.stdin is not None:
        return unescape(ns.stdin)
    if ns.stdin_file:
        try:
            with open(ns.stdin_file, "rb") as f:
                return f.read()
        except OSError as e:
            raise OptionError(f"--stdin-file: {e.strerror}: {ns.stdin_file}") from None
    return b""


def stdin_given(ns: argparse.Namespace | None) -> bool:
    """Whether the options say what the program reads (--stdin, --stdin-file, the magics'
    --stdin-var, --cases): then it is never asked for input interactively."""
    return ns is not None and (getattr(ns, "stdin", None) is not None or any(
        getattr(ns, name, None) for name in ("stdin_file", "stdin_var", "cases")))


def _split_all(values: list[str]) -> tuple[str, ...]:
    return tuple(word for value in values for word in shlex.split(value))


def sources_from(ns: argparse.Namespace) -> tuple[str, ...]:
    return tuple(name.strip() for value in getattr(ns, "sources", None) or ()
                 for name in value.split(",") if name.strip())


def cases_from(source: str, files=()) -> list[Case]:
    """--cases SOURCE: the session workspace's directory of that name if it holds files, else
    the judge-layout directory at that path. ValueError (from verdicts) for bad cases."""
    found = cases_in_files(files, source)
    return found if found is not None else load_cases(os.path.expanduser(source))


def checker_from(source: str, files=()) -> Checker:
    """--checker FILE: the session workspace's file of that name, else the file at that path,
    as a Checker of the language its extension names. ValueError with a message for a person."""
    ext = os.path.splitext(source)[1].lower()
    try:
        language = Language.of_file(source)
    except ValueError:
        raise ValueError(f"--checker: cannot tell the language of {source!r} from its extension "
                         f"{ext!r} (use .c, .cpp/.cc/.cxx or .py)") from None
    data = dict(files).get(source)
    if data is None:
        path = os.path.expanduser(source)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_CHECKER_BYTES + 1)
        except OSError as e:
            raise ValueError(f"--checker: {e.strerror}: {path}") from None
    try:
        code = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--checker: {source} is not UTF-8 text") from None
    return Checker(language, code, name=os.path.basename(source))


def request_from(ns: argparse.Namespace, *, code: str, language: Language, base: Limits,
                 stdin: bytes | None = None, color: bool = False,
                 cases: "list[Case] | None" = None, checker=None, files=()) -> Request:
    """The Request these options describe. `stdin` overrides --stdin/--stdin-file, `cases`
    --cases and `checker` --checker (the magics, from a variable); --cases names a judge-layout
    directory and --checker a program file, the session workspace's first. `files`: the session
    workspace's (name, contents), which --sources names from."""
    try:
        if cases is None:
            source = getattr(ns, "cases", None)
            cases = cases_from(source, files) if source else ()
        if checker is None and getattr(ns, "checker", None):
            checker = checker_from(ns.checker, files)
        return Request(
            language=language, code=code,
            stdin=stdin_from(ns) if stdin is None else stdin,
            limits=limits_from(ns, base),
            cflags=_split_all(ns.cflags), ldflags=_split_all(ns.ldflags), args=_split_all(ns.args),
            cache=True if ns.cache is None else ns.cache, color=color,
            cases=tuple(cases), compare=getattr(ns, "compare", None) or "default",
            checker=checker, show_output=bool(getattr(ns, "show_output", None)),
            files=tuple(files), sources=sources_from(ns), repeat=getattr(ns, "repeat", None) or 1,
        )
    except ValueError as e:
        raise OptionError(str(e)) from None

