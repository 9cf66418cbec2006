"""IPython magics: `%%dcodex LANG [options]` runs a cell as a C, C++ or Python program in the
DCodeX sandbox, `%dcodex` shows the sandbox, sets session defaults and runs files.

`%load_ext dcodex_kernel` registers them. The options are the shared `%%dcodex` header grammar
(options.py), so a cell means the same thing here, in the DCodeX kernels and in `dcodex run`.
IPython expands `{var}` and `$var` in the magic's line before we see it; the cell body is never
expanded (C braces are not Python format fields).
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from dataclasses import replace

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, needs_local_scope
from traitlets import Bool, TraitError, TraitType, Unicode, default

from . import case_table
from .backends import BackendChoice, get_backend
from .events import Output, Phase, Result, Status
from .feedback import CompileProgress, terminal_progress
from .info import describe
from .live import run_live
from .options import (HelpRequested, OptionError, at_most, backend_options, file_parser,
                      header_parser, parse_words, request_from, split_words, stdin_given)
from .request import Language, Limits, Request, parse_seconds, parse_size
from .verdicts import MAX_CASES, Case, check_expected
from .workspace import Workspace, WorkspaceError, file_body, write_report

CELL_USAGE = "%%dcodex LANG [options]   (LANG: c, cpp/c++, python/py; %%dcodex? for the options)"
LINE_USAGE = (
    "%dcodex                       show the backend, the limits in force and the isolation layers\n"
    "%dcodex config [options]      show or set session defaults (--timeout, --cpu-time, --memory,\n"
    "                              --output-limit, --cflags, --ldflags, --cache/--no-cache,\n"
    "                              --server ADDR|local, --token-file, --tls-ca)\n"
    "%dcodex run FILE [LANG] [options]   run a program file (language from its extension)\n"
    "%dcodex files                 list the session workspace (written by %%dcodex file NAME)"
)
# Options that describe one run and therefore cannot be a session default.
_PER_RUN = (("LANG", "language"), ("--stdin", "stdin"), ("--stdin-file", "stdin_file"),
            ("--stdin-var", "stdin_var"), ("--args", "args"), ("--out", "out"),
            ("--no-raise-error", "no_raise_error"), ("--quiet", "quiet"), ("--cases", "cases"),
            ("--compare", "compare"), ("--checker", "checker"), ("--show-output", "show_output"),
            ("--sources", "sources"), ("--repeat", "repeat"))


class DCodeXError(Exception):
    """A program run by `%%dcodex` / `%dcodex run` did not succeed. `str()` is the one-line
    status ("wall_timeout: Wall-clock limit of 2 s exceeded", or for a run with --cases whose
    cases did not all pass "TestsFailed: 1 of 8 cases failed"); `.result` is the whole Result."""

    def __init__(self, result: Result):
        if result.cases and result.status is Status.RUNTIME_ERROR:
            super().__init__(f"TestsFailed: {case_table.failure(result.cases)}")
        else:
            super().__init__(f"{result.status.value}: {result.message}")
        self.result = result

    @property
    def status(self):
        return self.result.status

    def __reduce__(self):
        return type(self), (self.result,)

    def _render_traceback_(self):
        # IPython shows this instead of a traceback through the magic's internals: the failure
        # is the program's, and its output (compiler diagnostics included) is already above.
        return [f"{type(self).__name__}: {self}"]


class DCodeXInterrupt(KeyboardInterrupt):
    """Ctrl-C / the notebook's interrupt stopped the program; still a KeyboardInterrupt, so it
    ends the cell and any loop around the magic, as Ctrl-C should."""

    def _render_traceback_(self):
        return ["KeyboardInterrupt: the program was stopped"]


class _Parsed(TraitType):
    """A limit given as a number or as text ('2.5s', '500ms', '256M'), stored parsed."""

    parse = None

    def validate(self, obj, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.error(obj, value)
        try:
            return Limits.check(_LIMIT_OF[self.name], type(self).parse(value))
        except ValueError as e:
            raise TraitError(f"{type(obj).__name__}.{self.name}: {e}") from None

    def from_string(self, s):  # `--DCodeXMagics.memory=256M` on the command line
        return s


# The Limits field each limit trait of DCodeXMagics sets (Limits checks the value, maximum too).
_LIMIT_OF = {"timeout": "wall_s", "cpu_time": "cpu_s", "memory": "memory",
             "output_limit": "output"}


class Seconds(_Parsed):
    info_text = "seconds (a number, or text like '2.5s' or '500ms')"
    parse = staticmethod(parse_seconds)


class Size(_Parsed):
    info_text = "bytes (a number, or text like '256M' or '2G')"
    parse = staticmethod(parse_size)


_MISSING = object()  # no such user variable


@magics_class
class DCodeXMagics(Magics):
    """Run C, C++ and Python cells in the DCodeX sandbox."""

    timeout = Seconds(help="Wall-clock limit of each run (default 10 s, or $DCODEX_TIMEOUT; "
                      + at_most("wall_s") + ").").tag(config=True)
    cpu_time = Seconds(help="CPU-time limit of each run (default 10 s, or $DCODEX_CPU_TIME; "
                       + at_most("cpu_s") + ").").tag(config=True)
    memory = Size(help="Memory limit of each run (default 512 MiB, or $DCODEX_MEMORY; "
                  + at_most("memory") + ").").tag(config=True)
    output_limit = Size(help="Cap on stdout+stderr of each run (default 1 MiB, or "
                        "$DCODEX_OUTPUT_LIMIT; " + at_most("output") + ").").tag(config=True)
    cflags = Unicode("", help="Compiler flags put before each cell's --cflags.").tag(config=True)
    ldflags = Unicode("", help="Link flags put before each cell's --ldflags.").tag(config=True)
    cache = Bool(True, help="Use the build cache unless a cell says --no-cache.").tag(config=True)

    def __init__(self, shell=None, backend=None, **kwargs):
        self._env_limits = _limits_from_env()  # before super(): config may read the defaults
        self._backend = backend
        self._backends = BackendChoice()  # the backends of cells' --server options
        # This session's `%%dcodex file` files (IPython's own %%file writes to the cwd, which
        # runs do not see); made on first write, removed when the interpreter exits.
        self.workspace = Workspace()
        super().__init__(shell=shell, **kwargs)

    @default("timeout")
    def _default_timeout(self):
        return self._env_limits.wall_s

    @default("cpu_time")
    def _default_cpu_time(self):
        return self._env_limits.cpu_s

    @default("memory")
    def _default_memory(self):
        return self._env_limits.memory

    @default("output_limit")
    def _default_output_limit(self):
        return self._env_limits.output

    @property
    def backend(self):
        if self._backend is None:
            self._backend = get_backend()
        return self._backend

    @backend.setter
    def backend(self, backend):
        self._backend = backend

    def limits(self) -> Limits:
        """The run limits a cell gets when it sets none itself."""
        return replace(self._env_limits, wall_s=self.timeout, cpu_s=self.cpu_time,
                       memory=self.memory, output=self.output_limit)

    # ---- the magics ------------------------------------------------------------------------

    @cell_magic("dcodex")
    def dcodex_cell(self, line, cell):
        """%%dcodex LANG [options]

        Compile (cached) and run this cell as a C (`c`), C++ (`cpp`, `c++`) or Python (`python`,
        `py`) program in the DCodeX sandbox. Its stdout and stderr stream into the cell while it
        runs. The value of the cell is the Result (status, exit_code, stdout, stderr, cpu_s,
        wall_s, peak_memory, cached, replayed), shown as a one-line summary; with --out VAR it
        is stored in VAR instead. A failed run (compile error, non-zero exit, signal, a limit) raises
        DCodeXError, whose message is the one-line status, unless --no-raise-error is given.
        With --cases SOURCE (a judge-layout directory, or a variable holding a list of (input,
        expected) pairs or a dict name -> pair) the program is built once and run once per case;
        a table of verdicts is displayed and DCodeXError ("TestsFailed: 1 of 8 cases failed") is
        raised unless every case is accepted. --checker FILE judges the cases with a C, C++ or
        Python program; --checker NAME with a function (input, expected, actual) -> bool or
        (bool, comment) of the user namespace. Interrupting the cell kills the program. `{expr}` and `$var` in the options are expanded
        from the user namespace as in every IPython magic (not `$var` inside single quotes; `$$`
        is a literal `$`); the cell body is passed as written.

        Example::

            %%dcodex c --timeout 2 --stdin '3 4\\n'
            #include <stdio.h>
            int main(void) { int a, b; scanf("%d %d", &a, &b); printf("%d\\n", a + b); }
        """
        words = split_words_or_usage(line)
        if words[:1] == ["file"]:
            return self._write_file(words[1:], cell)
        ns = self._parse(words, "%%dcodex")
        if ns is None:
            return None
        if ns.language is None:
            raise UsageError(f"%%dcodex: missing LANG\nusage: {CELL_USAGE}")
        return self._run(ns, cell, ns.language, local_ns=None, whole_cell=True)

    @needs_local_scope
    @line_magic("dcodex")
    def dcodex_line(self, line="", local_ns=None):
        """%dcodex [config [options] | run FILE [LANG] [options]]

        %dcodex                       show the backend, the limits in force and the isolation layers
        %dcodex config [options]      show or set this session's defaults
        %dcodex run FILE [options]    run a program file like a %%dcodex cell

        `%dcodex config` takes --timeout, --cpu-time, --memory, --output-limit, --cflags,
        --ldflags and --cache/--no-cache (the same as `%config DCodeXMagics.timeout = 5`).
        `%dcodex run` takes every %%dcodex option; the language comes from FILE's extension
        (.c, .cpp/.cc/.cxx, .py) unless LANG is given.
        """
        words = split_words_or_usage(line)
        if not words:
            print(self._describe())
            return None
        command, rest = words[0], words[1:]
        if command == "run":
            return self._run_file(rest, local_ns)
        if command == "config":
            return self._config(rest)
        if command == "files" and not rest:
            try:
                print(self.workspace.describe())
            except WorkspaceError as e:
                raise UsageError(str(e)) from None
            return None
        if command in ("-h", "--help", "help"):
            print(LINE_USAGE)
            return None
        raise UsageError(f"%dcodex: unknown command {command!r}\nusage:\n{LINE_USAGE}\n"
                         f"cells: {CELL_USAGE}")

    # ---- the pieces ------------------------------------------------------------------------

    def _parse(self, words, prog):
        """Namespace of the shared grammar; None after `--help` (the help is printed)."""
        try:
            return parse_words(header_parser(prog, magic=True), words)
        except HelpRequested as e:
            print(e)
            return None
        except OptionError as e:
            raise UsageError(str(e)) from None

    def _write_file(self, words, cell):
        """`%%dcodex file [-a] NAME`: the cell's text becomes NAME in the session workspace."""
        try:
            ns = file_parser("%%dcodex file").parse_args(words)
            size = self.workspace.write(ns.name, file_body(cell).encode(), append=ns.append)
        except HelpRequested as e:
            print(e)
            return None
        except (OptionError, WorkspaceError) as e:
            raise UsageError(str(e)) from None
        print(write_report(ns.name, size, ns.append), end="")
        return None

    def _request(self, ns, code, language: Language, local_ns) -> Request:
        """The Request of a parsed cell or `%dcodex run`, with the session defaults; a
        UsageError (the clear error of a magic) for a bad one."""
        if ns.out is not None and not ns.out.isidentifier():
            raise UsageError(f"--out: {ns.out!r} is not a variable name")
        stdin = self._stdin_var(ns.stdin_var, local_ns) if ns.stdin_var else None
        cases = self._cases_var(ns.cases, local_ns) if ns.cases else None
        checker = self._checker_var(ns.checker, local_ns) if ns.checker else None
        if self.cflags:
            ns.cflags = [self.cflags, *ns.cflags]
        if self.ldflags:
            ns.ldflags = [self.ldflags, *ns.ldflags]
        if ns.cache is None:
            ns.cache = self.cache
        try:
            return request_from(ns, code=code, language=language, base=self.limits(),
                                stdin=stdin, color=self._color(), cases=cases,
                                checker=checker, files=self.workspace.files())
        except (OptionError, ValueError) as e:
            raise UsageError(str(e)) from None

    def _run(self, ns, code, language: Language, local_ns, whole_cell=False):
        request = self._request(ns, code, language, local_ns)
        backend = self._backend_for(ns)
        console = _Console(self._progress(whole_cell))
        # No input given: a program that waits for input asks through input() (in a notebook
        # ipykernel forwards it to the frontend, when the frontend allows input).
        ask = None if stdin_given(ns) else _ask
        try:
            result, interrupted = run_live(backend, request, console.write, console.flush, ask)
        finally:
            console.finish()

        if ns.out:
            self.shell.user_ns[ns.out] = result
        if result.cases:
            from IPython.display import display

            console.flush()
            display(case_table.bundle(result.cases), raw=True)
        if interrupted:
            if not ns.quiet:
                print(result.summary())
            raise DCodeXInterrupt
        if not result.ok and not ns.no_raise_error:
            raise DCodeXError(result)
        if ns.quiet:
            return None
        if ns.out:
            print(result.summary())
            return None
        return result  # displayed as its summary line (see _pretty_result)

    def _backend_for(self, ns):
        """The session's backend, or the one this cell's --server options name."""
        try:
            options = backend_options(ns)
        except OptionError as e:
            raise UsageError(str(e)) from None
        return self._backends.get(self.backend, options) if options else self.backend

    def _run_file(self, words, local_ns):
        if not words or words[0].startswith("-"):
            if "-h" in words or "--help" in words:
                return self._parse(words, "%dcodex run FILE")
            raise UsageError(f"%dcodex run: missing FILE\nusage:\n{LINE_USAGE}")
        path = os.path.expanduser(words[0])
        ns = self._parse(words[1:], "%dcodex run FILE")
        if ns is None:
            return None
        try:
            language = ns.language or Language.of_file(path)
        except ValueError as e:
            raise UsageError(f"%dcodex run: {e}: give it after FILE (c, cpp or python)") from None
        try:
            with open(path, encoding="utf-8") as f:
                code = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"%dcodex run: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
        return self._run(ns, code, language, local_ns)

    def _config(self, words):
        ns = self._parse(words, "%dcodex config")
        if ns is None:
            return None
        per_run = [opt for opt, attr in _PER_RUN if getattr(ns, attr) not in (None, False, [])]
        if per_run:
            raise UsageError(f"%dcodex config: {', '.join(per_run)} cannot be a session default "
                             "(use it on the cell); defaults: --timeout, --cpu-time, --memory, "
                             "--output-limit, --cflags, --ldflags, --cache/--no-cache")
        for opt, trait in (("timeout", "timeout"), ("cpu_time", "cpu_time"),
                           ("memory", "memory"), ("output_limit", "output_limit"),
                           ("cache", "cache")):
            if getattr(ns, opt) is not None:
                setattr(self, trait, getattr(ns, opt))
        if ns.cflags:
            self.cflags = " ".join(ns.cflags)
        if ns.ldflags:
            self.ldflags = " ".join(ns.ldflags)
        if ns.server or ns.token_file or ns.tls_ca:
            self.backend = self._backend_for(ns)
        print(self._defaults())
        return None

    def _cases_var(self, source, local_ns) -> list[Case] | None:
        """--cases SOURCE naming a variable (when no such path exists): a list of (input,
        expected) pairs, named 1, 2, …, or a dict name -> pair. None: SOURCE is a path."""
        if os.path.exists(os.path.expanduser(source)) or not source.isidentifier():
            return None
        value = self._user_var(source, local_ns)
        if value is _MISSING:
            return None  # the loader then says there is no such directory
        if isinstance(value, dict):
            items = [(str(name), pair) for name, pair in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [(str(i), pair) for i, pair in enumerate(value, 1)]
        else:
            raise UsageError(f"--cases: {source} is a {type(value).__name__}, not a list of "
                             "(input, expected) pairs or a dict name -> pair")
        if not items:
            raise UsageError(f"--cases: {source} holds no cases")
        if len(items) > MAX_CASES:
            raise UsageError(f"--cases: {source} holds {len(items)} cases, more than the maximum "
                             f"of {MAX_CASES}")
        cases = []
        for name, pair in items:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise UsageError(f"--cases: {source}: case {name} is not an (input, expected) pair")
            try:
                case = Case(name, *pair)
                check_expected(case.expected, f"{source}: case {name}'s expected output")
            except ValueError as e:
                raise UsageError(f"--cases {source}: {str(e).removeprefix('cases: ')}") from None
            cases.append(case)
        return cases

    def _checker_var(self, source, local_ns):
        """--checker NAME naming a variable (when no such file exists): a function
        (input, expected, actual) -> bool or (bool, comment), called in this process for each
        case. None: NAME is a checker file."""
        if os.path.exists(os.path.expanduser(source)) or not source.isidentifier():
            return None
        value = self._user_var(source, local_ns)
        if value is _MISSING:
            return None  # the loader then says what is wrong with it as a file
        if not callable(value):
            raise UsageError(f"--checker: {source} is a {type(value).__name__}, not a function "
                             "(input, expected, actual) -> bool or (bool, comment)")
        return value

    def _user_var(self, name, local_ns):
        """The value of the user's variable `name` (the caller's locals first), or _MISSING."""
        for scope in (local_ns, self.shell.user_ns):
            if scope is not None and name in scope:
                return scope[name]
        return _MISSING

    def _stdin_var(self, name, local_ns) -> bytes:
        value = self._user_var(name, local_ns)
        if value is _MISSING:
            raise UsageError(f"--stdin-var: no variable named {name!r}")
        if isinstance(value, str):
            try:
                return value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as e:
                raise UsageError(f"--stdin-var: {name} is not valid text: {e}") from None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise UsageError(f"--stdin-var: {name} is a {type(value).__name__}, not str or bytes")

    def _progress(self, whole_cell: bool) -> CompileProgress:
        """The transient compile line (feedback.py). In a kernel: a display with a display_id
        that starts as an empty bundle (what nbval keeps of it compares as nothing) and ends
        updated to nothing; a `%%dcodex` cell also clears its outputs then, which takes the line
        out of the saved notebook (it is the cell's only output: the compiler's text waits).
        A `%dcodex run` line may follow other output of its cell, which stays: its line ends as
        an empty display. In a terminal: a line on stderr, rewritten in place."""
        if getattr(self.shell, "kernel", None) is None:
            return terminal_progress(sys.stderr)
        from IPython.display import clear_output, display

        handle = None

        def show(text, first):
            nonlocal handle
            if first:
                handle = display({}, raw=True, display_id=True)
            handle.update({"text/plain": text}, raw=True)

        def clear():
            handle.update({}, raw=True)
            if whole_cell:
                clear_output()

        return CompileProgress(show, clear)

    def _color(self) -> bool:
        return str(getattr(self.shell, "colors", "nocolor")).lower() != "nocolor"

    def _defaults(self) -> str:
        lines = [f"DCodeX session defaults: {self.limits().describe()}",
                 f"  cflags: {self.cflags or '(none)'}; ldflags: {self.ldflags or '(none)'}; "
                 f"build cache: {'on' if self.cache else 'off'}"]
        return "\n".join(lines)

    def _describe(self) -> str:
        text = describe(self.backend, self.limits())
        if self.cflags or self.ldflags or not self.cache:
            text += "\n" + self._defaults().splitlines()[1]
        return text


# `%%dcodex?` shows the whole grammar, generated from the one parser.
DCodeXMagics.dcodex_cell.__doc__ = (inspect.cleandoc(DCodeXMagics.dcodex_cell.__doc__) + "\n\n"
                                    + header_parser("%%dcodex", magic=True).format_help())


class _Console:
    """Program output to the cell: this thread's sys.stdout / sys.stderr (so %%capture and the
    kernel's per-cell streams see it), flushed when caught up or when the stream changes, so
    stdout and stderr keep their order in a notebook. The compiler's text waits until the
    program starts (or the run ends), after the compile line is gone."""

    def __init__(self, progress: CompileProgress):
        self.last = None
        self.progress = progress
        self.compiling = False  # between Phase("compile") and the program's start
        self.compiler: list[Output] = []

    def write(self, event: Output | Phase) -> None:
        if isinstance(event, Phase):
            self.compiling = event.name == "compile"
            self.progress(event)
            if not self.compiling:
                self.finish()
        elif self.compiling:
            self.compiler.append(event)
        else:
            self._write(event)

    def finish(self) -> None:
        """The compile line away, then the compiler's text."""
        self.compiling = False
        self.progress.stop()
        held, self.compiler = self.compiler, []
        for event in held:
            self._write(event)

    def _write(self, event: Output) -> None:
        stream = sys.stdout if event.stream == "stdout" else sys.stderr
        if self.last is not None and self.last is not stream:
            self.last.flush()
        stream.write(event.text)
        self.last = stream

    def flush(self) -> None:
        if self.last is not None:
            self.last.flush()


def _ask(prompt: str) -> str | None:
    """The user's answer for a program waiting for input; None (end of input) where no one can
    answer: a frontend that allows no input (nbval), a closed or captured stdin."""
    try:
        return input(prompt)
    except (StdinNotImplementedError, EOFError, OSError):
        return None


def split_words_or_usage(line: str) -> list[str]:
    try:
        return split_words(line)
    except OptionError as e:
        raise UsageError(str(e)) from None


def _limits_from_env() -> Limits:
    try:
        return Limits.from_env()
    except ValueError as e:
        warnings.warn(f"dcodex: ignoring the DCODEX_* limits: {e}", stacklevel=2)
        return Limits()


def _pretty_result(result, p, cycle):
    p.text(result.summary())


def load_ipython_extension(ipython):
    ipython.register_magics(DCodeXMagics(ipython))
    ipython.display_formatter.formatters["text/plain"].for_type(Result, _pretty_result)


def unload_ipython_extension(ipython):
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        manager.magics[kind].pop("dcodex", None)
    manager.registry.pop(DCodeXMagics.__name__, None)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, DCodeXMagics)]
    ipython.display_formatter.formatters["text/plain"].pop(Result, None)
