"""The local backend: build (cached) and run a Request in this machine's sandbox."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import re
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Iterator

from ..build_cache import BuildCache, cache_key
from ..cancel import CancelToken
from ..interactive import StdinFeed
from ..events import ACCEPTED, CHECKER_ERROR, WRONG_ANSWER, CaseResult, Event, Output, Phase, Result, RunFigures, Status
from ..languages import CHECK_DIR, LINEBUF_FILE, PROGRAM, compiler_identity, linebuf_source, recipe
from ..pch import (BUILD_LIMITS, HEADERS as PCH_HEADERS, PCH_PLACE, PchStore,
                   only_own_diagnostics, ordinary_flags, wanted_header)
from ..request import Checker, Language, Request
from ..sandbox import isolation, pool
from ..sandbox.outcome import classify
from ..sandbox.process import run_process
from ..verdicts import checker_answer, comment, compare, parse_mode
from ..workspace import digest as workspace_digest

log = logging.getLogger(__name__)

MAX_SOURCE_BYTES = 1 << 20
CONFINED_WORKDIR = "/box"  # the program's work dir inside a confined filesystem
_ERROR_LINE = re.compile(r"^.*\berror\b.*$", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[mK]")


def sandbox_env(workdir: str | None) -> dict[str, str]:
    """The whole environment a program sees: nothing of the engine's leaks in. `workdir` is the
    host-side work dir where the filesystem is not confined (None: the run's own /box and /tmp)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir or CONFINED_WORKDIR,
        "TMPDIR": workdir or "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


def strict_from_env(environ=None) -> bool:
    value = (os.environ if environ is None else environ).get("DCODEX_STRICT", "")
    return value.strip().lower() in ("1", "yes", "true", "on")


class LocalBackend:
    # Test cases run this many at a time (None: one per core this process may use).
    case_parallelism: int | None = None

    def __init__(self, cache: BuildCache | None = None, caps: isolation.Capabilities | None = None,
                 strict: bool | None = None, pch: PchStore | None = None):
        self._cache = cache
        self._pch = pch
        self._caps = caps  # None: what this machine allows (detected once)
        # Strict: refuse to run when a confinement layer is missing ($DCODEX_STRICT by default).
        self.strict = strict_from_env() if strict is None else strict

    @property
    def caps(self) -> isolation.Capabilities:
        return self._caps or isolation.detect()

    @property
    def cache(self) -> BuildCache:
        if self._cache is None:
            self._cache = BuildCache()
        return self._cache

    @property
    def pch(self) -> PchStore:
        if self._pch is None:  # beside the build cache (a test's own cache gets its own)
            self._pch = PchStore(self.cache.root.parent / "pch")
        return self._pch

    def precompile_headers(self, cflags: tuple[str, ...] = ()) -> list[str]:
        """Precompile every header of pch.HEADERS for C++ with these flags now (it otherwise
        happens in the background the first time a program needs one); → the headers ready."""
        rec, caps = recipe(Language.CPP), self.caps
        if not (self.pch.enabled and caps.filesystem):
            return []
        key = self.pch.entry_key(compiler_identity(rec.compiler()[0]), [*rec.default_flags, *cflags])
        request = Request(Language.CPP, "", cflags=tuple(cflags))
        build = functools.partial(self._precompile, rec, request, caps)
        return [h for h in PCH_HEADERS if self.pch.build_now(key, h, build)]

    def describe(self) -> dict:
        caps = self.caps
        info = {
            "backend": "local",
            "isolation": list(caps.layers()),
            "degraded": list(caps.missing()),
            "accounting": caps.accounting(),
            "strict": self.strict,
            "visible_to_programs": [*caps.binds, *caps.python_binds] if caps.filesystem
                                   else ["everything your user can read"],
            "build_cache": str(self.cache.root),
            "precompiled_headers": (f"{', '.join(PCH_HEADERS)} (in {self.pch.root})"
                                    if self.pch.enabled and caps.filesystem else
                                    "off (needs a confined filesystem)" if self.pch.enabled else
                                    "off (DCODEX_PCH=0)"),
            "prestarted_sandboxes": (pool.the_pool().describe() if caps.prestart else
                                     "off (needs a confined filesystem)"),
        }
        for lang in ("c", "cpp"):
            try:
                info[f"{lang}_compiler"] = " ".join(recipe(lang).compiler())
            except FileNotFoundError as e:
                info[f"{lang}_compiler"] = f"missing ({e})"
        try:
            info["python"] = caps.python()
        except FileNotFoundError as e:
            info["python"] = f"missing ({e})"
        return info

    def execute(self, request: Request, cancel: CancelToken | None = None,
                feed: StdinFeed | None = None) -> Iterator[Event]:
        problem = _validate(request)
        if problem:
            yield Result(Status.REJECTED, problem)
            return
        if self.strict:
            problems = self.caps.strict_problems()
            if problems:
                yield Result(Status.REJECTED, "strict mode: this machine lacks the sandbox layer(s) "
                             f"{', '.join(problems)}; see `dcodex doctor`")
                return
        if request.cases:  # built once, then a sandbox per case (see `Result.cases`)
            yield from self._built_once(self._build_and_run_cases, request, cancel, "cases run")
            return
        if request.repeat > 1:  # built once, then a sandbox per run (see `Result.runs`)
            yield from self._built_once(self._build_and_repeat, request, cancel, "repeated run")
            return
        try:
            caps = self.caps
            workspace = isolation.Workspace(caps)
            workspace.__enter__()
        except Exception as e:  # launcher cannot be built, no free uid, ...
            log.exception("sandbox set-up failed")
            yield Result(Status.INTERNAL_ERROR, f"sandbox unavailable: {e}")
            return
        try:
            result = yield from self._build_and_run(request, caps, workspace, cancel, feed)
        except Exception as e:  # (GeneratorExit, a client gone, is not one: it passes through)
            log.exception("run failed")
            result = Result(Status.INTERNAL_ERROR, f"{type(e).__name__}: {e}")
        finally:
            workspace.__exit__(None, None, None)
        yield replace(result, isolation=caps.layers())

    def _build_and_run(self, request, caps, ws, cancel, feed):
        rec = recipe(request.language)
        env = sandbox_env(ws.workdir)
        with _memfile(rec.source_file, request.code.encode("utf-8", "surrogatepass")) as source, \
                _memfiles(request.files) as files:
            argv, inputs, program, cached, failed = yield from self._prepare(
                rec, request, caps, ws, env, source, files, cancel)
            if failed:
                return failed
            try:
                exit = yield from run_process(argv, workspace=ws, caps=caps, env=env,
                                              limits=request.limits, stdin=request.stdin,
                                              cancel=cancel, phase="run", inputs=inputs,
                                              python=not rec.compiles, feed=feed)
            finally:
                if program is not None:
                    os.close(program)
        status, message, code, sig = classify(exit, request.limits)
        return Result(status, message, exit_code=code, signal=sig, cpu_s=exit.cpu_s,
                      wall_s=exit.wall_s, peak_memory=exit.peak_memory, truncated=exit.truncated,
                      cached=cached)

    def _built_once(self, body, request: Request, cancel: CancelToken | None, what: str) -> Iterator[Event]:
        """A run that builds once and then runs several sandboxes (`body`: cases, a repeated
        run): its events, then one Result, whatever fails on the way."""
        try:
            caps = self.caps
        except Exception as e:
            log.exception("sandbox detection failed")
            yield Result(Status.INTERNAL_ERROR, f"sandbox unavailable: {e}")
            return
        try:
            result = yield from body(request, caps, cancel)
        except Exception as e:  # (GeneratorExit, a client gone, is not one: it passes through)
            log.exception("%s failed", what)
            result = Result(Status.INTERNAL_ERROR, f"{type(e).__name__}: {e}")
        yield replace(result, isolation=caps.layers())

    def _build_and_run_cases(self, request, caps, cancel):
        """Build once (compile output streams as usual), then run every case in its own
        sandbox, several at a time; one Result carrying a CaseResult per case."""
        rec = recipe(request.language)
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(
                _memfile(rec.source_file, request.code.encode("utf-8", "surrogatepass")))
            files = stack.enter_context(_memfiles(request.files))
            built = yield from self._build_in_own_workspace(rec, request, caps, source, files, cancel)
            argv, inputs, program, cached, failed = built
            if program is not None:
                stack.callback(os.close, program)
            if failed:
                return failed
            judge = None
            if isinstance(request.checker, Checker):
                judge, failed = yield from self._build_checker(request, caps, stack, files, cancel)
                if failed:
                    return failed
            elif request.checker is not None:
                judge = _FunctionJudge(request.checker)
            started = time.monotonic()
            results = yield from self._run_cases(request, caps, argv, inputs, not rec.compiles,
                                                 cancel, judge)
            wall_s = time.monotonic() - started
        return _cases_result(results, wall_s, cached)

    def _build_in_own_workspace(self, rec, request, caps, source, files, cancel):
        """`_prepare` in a workspace of its own, left before the cases (its uid is then free for one)."""
        try:
            ws = isolation.Workspace(caps).__enter__()
        except Exception as e:  # launcher cannot be built, no free uid, ...
            log.exception("sandbox set-up failed")
            return None, None, None, False, Result(Status.INTERNAL_ERROR, f"sandbox unavailable: {e}")
        try:
            return (yield from self._prepare(rec, request, caps, ws, sandbox_env(ws.workdir),
                                             source, files, cancel))
        finally:
            ws.__exit__(None, None, None)

    def _build_checker(self, request, caps, stack, files, cancel):
        """(a _ProgramJudge, None), or (None, the Result of a failed build): the checker built
        like a program (the build cache, the sandbox, the request's compile limits); its fds are
        closed by `stack`. It sees the workspace `files` as the program does (a reference table,
        a header), when it is built and each time it runs."""
        checker = request.checker
        rec = recipe(checker.language)
        build = Request(checker.language, checker.code, compile_limits=request.compile_limits,
                        ldflags=("-lm",) if rec.compiles else (), cache=request.cache,
                        color=request.color, files=request.files)
        source = stack.enter_context(_memfile(rec.source_file, checker.code.encode("utf-8", "surrogatepass")))
        argv, inputs, program, _, failed = yield from self._build_in_own_workspace(
            rec, build, caps, source, files, cancel)
        if program is not None:
            stack.callback(os.close, program)
        if failed:
            if failed.status is Status.COMPILE_ERROR:
                failed = replace(failed, message=f"checker {checker.name}: {failed.message}")
            return None, failed
        if not rec.compiles:  # an exception in a Python checker is its failure, not a rejection
            argv = [argv[0], "-I", "-u", "-B", "-c", _PYTHON_CHECKER, rec.source_file]
        return _ProgramJudge(caps, argv, inputs, not rec.compiles, request.limits), None

    def _build_and_repeat(self, request, caps, cancel):
        """Build once (as for cases), then run the program `request.repeat` times, one after
        the other, each in its own sandbox; one Result carrying each run's figures (see
        `Result.runs`). Only the first run's output streams."""
        rec = recipe(request.language)
        with _memfile(rec.source_file, request.code.encode("utf-8", "surrogatepass")) as source, \
                _memfiles(request.files) as files:
            argv, inputs, program, cached, failed = yield from self._build_in_own_workspace(
                rec, request, caps, source, files, cancel)
            if failed:
                return failed
            runs: list[RunFigures] = []
            try:
                for number in range(1, request.repeat + 1):
                    if cancel is not None and cancel.cancelled:
                        return _repeat_result(runs, Result(Status.CANCELLED, "Interrupted"), cached)
                    with isolation.Workspace(caps) as ws:
                        events = run_process(argv, workspace=ws, caps=caps,
                                             env=sandbox_env(ws.workdir), limits=request.limits,
                                             stdin=request.stdin, cancel=cancel, phase="run",
                                             inputs=inputs, python=not rec.compiles)
                        if number == 1:
                            exit = yield from events
                        else:  # counted, not shown
                            _, exit = _drain(events, ())
                    status, message, code, sig = classify(exit, request.limits)
                    runs.append(RunFigures(exit.wall_s, exit.cpu_s, exit.peak_memory))
                    if status is not Status.OK:
                        if status is not Status.CANCELLED:
                            message = f"run {number} of {request.repeat}: {message}"
                        return _repeat_result(runs, Result(status, message, exit_code=code,
                                                           signal=sig, truncated=exit.truncated),
                                              cached)
                return _repeat_result(runs, Result(Status.OK, exit_code=code), cached)
            finally:
                if program is not None:
                    os.close(program)

    def _run_cases(self, request, caps, argv, inputs, python, cancel, judge=None):
        """Every case's CaseResult, in order (the generator's return value). Cases run in worker
        threads, at most `case_parallelism` at once; the caller's cancel (or anything ending this
        early) stops them all, and this returns only when every run has ended. With
        `request.show_output` it yields each case's output, in the cases' order, under a header
        line (the first case's live, later ones as soon as the earlier ones are shown)."""
        mode = parse_mode(request.compare)
        workers = min(len(request.cases), self.case_parallelism or len(os.sched_getaffinity(0)))
        stop = CancelToken()  # what the runs watch: set on the caller's cancel or on the way out
        shown = [queue.SimpleQueue() for _ in request.cases] if request.show_output else None

        def one(index, case) -> CaseResult:
            if stop.cancelled:
                return CaseResult(case.name, Status.CANCELLED.value, "Interrupted")
            try:
                with isolation.Workspace(caps) as ws:
                    stdout, exit = _drain(run_process(
                        argv, workspace=ws, caps=caps, env=sandbox_env(ws.workdir),
                        limits=request.limits, stdin=case.input, cancel=stop, phase="run",
                        inputs=inputs, python=python), sink=shown[index].put if shown else None)
                status, message, code, sig = classify(exit, request.limits)
                if status is not Status.OK:
                    verdict = status.value
                elif judge is not None:
                    verdict, message = judge(case, stdout, stop)
                else:
                    accepted, detail = compare(case.expected, stdout, mode)
                    verdict, message = (ACCEPTED, "") if accepted else (WRONG_ANSWER, detail)
            except Exception as e:
                log.exception("case %s failed", case.name)
                return CaseResult(case.name, Status.INTERNAL_ERROR.value, f"{type(e).__name__}: {e}")
            return CaseResult(case.name, verdict, message, wall_s=exit.wall_s, cpu_s=exit.cpu_s,
                              peak_memory=exit.peak_memory, exit_code=code, signal=sig)

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dcodex-case")
        try:
            futures = [pool.submit(one, i, case) for i, case in enumerate(request.cases)]
            pending = set(futures)
            showing = _Shower(request.cases, futures, shown) if shown else None
            while pending:
                # The runs watch `stop`; the caller's token is looked at here, often enough for
                # an interrupt to stop them all within a fraction of a second.
                if cancel is not None and cancel.cancelled:
                    stop.cancel()
                _, pending = wait(pending, timeout=0.02, return_when=FIRST_COMPLETED)
                if showing:
                    yield from showing.ready()
            if showing:
                yield from showing.ready()
            return [f.result() for f in futures]
        finally:
            stop.cancel()  # a no-op after a normal end: every run is over
            pool.shutdown(wait=True, cancel_futures=True)
            stop.close()

    def _prepare(self, rec, request, caps, ws, env, source, files, cancel):
        """What the run step needs, building the program first where the language compiles:
        (argv, inputs, the program's fd or None, whether the build was cached, the Result of a
        failed build or None). `files`: the workspace's (name, fd, mode), given to both steps."""
        sources = ((rec.source_file, source, 0o644), *files)
        if not rec.compiles:
            return rec.run_argv(request.args, python=caps.python()), sources, None, False, None
        program, failed, cached = yield from self._build(rec, request, caps, ws, env, sources, cancel)
        if failed:
            return None, None, None, cached, failed
        if not cached:  # the compile announced itself: say it is over
            yield Phase("run")
        return rec.run_argv(request.args), ((PROGRAM, program, 0o755), *files), program, cached, None

    def _build(self, rec, request, caps, ws, env, sources, cancel):
        """The compiled program, from the cache or the compiler (in the sandbox). Returns
        (an open fd of the program, the Result if the build failed, whether it was cached)."""
        argv = rec.compile_argv(request.cflags, request.ldflags, request.color, request.sources)
        linebuf = linebuf_source()
        # Every workspace file is in the key: any of them may be #included (a data file too).
        key = cache_key(
            rec.language.value, compiler_identity(argv[0]),
            "\0".join(a for a in argv if not a.startswith("-fdiagnostics-color")),
            request.code, linebuf, workspace_digest(request.files),
        )
        hit = self.cache.fetch(key) if request.cache else None
        if hit is not None:
            program, replay = hit
            if replay:  # the warnings of the build that made this program
                yield Output("stderr", replay if request.color else _ANSI.sub("", replay), "compile")
            return program, None, True
        yield Phase("compile", compile_summary(rec, request))
        built = self._build_with_pch(rec, request, caps, ws, env, sources, cancel, argv)
        if built is not None:
            exit, said, program = built
            if said:
                yield Output("stderr", said, "compile")
        else:
            diagnostics = []
            program = os.memfd_create(PROGRAM, os.MFD_CLOEXEC)
            try:
                with _memfile(LINEBUF_FILE, linebuf) as runtime:
                    exit = yield from _tee(
                        run_process(argv, workspace=ws, caps=caps, env=env,
                                    limits=request.compile_limits, cancel=cancel, phase="compile",
                                    inputs=(*sources, (LINEBUF_FILE, runtime, 0o644)),
                                    output=(PROGRAM, program)),
                        diagnostics)
            except BaseException:
                os.close(program)
                raise
            said = "".join(diagnostics)
        status, message, code, sig = classify(exit, request.compile_limits)
        failed = None
        if status is Status.CANCELLED:
            failed = Result(status, message)
        elif status is not Status.OK or exit.output != "taken":
            failed = Result(Status.COMPILE_ERROR, _compile_summary(status, message, said, exit.output),
                            exit_code=code, signal=sig, truncated=exit.truncated)
        if failed:
            os.close(program)
            return None, failed, False
        if request.cache:
            self.cache.store(key, program, said)
        return program, None, False

    def _build_with_pch(self, rec, request, caps, ws, env, sources, cancel, argv):
        """(the compile's ProcessExit, what the compiler said, the program's memfd) from a
        compile that used a precompiled header, or None: the program does not start with one,
        it is not built yet (then it is built in the background for the next program), or the
        compiler said something about a header (its include chain reads differently with a
        .gch), stopped at a limit or was interrupted: then the caller compiles as without."""
        header = wanted_header(request.code) if rec.language is Language.CPP else None
        if (header is None or not self.pch.enabled or not caps.filesystem
                or any("pch" in flag for flag in request.cflags)):
            return None
        flags = [*rec.default_flags, *request.cflags]
        entry_key = self.pch.entry_key(compiler_identity(argv[0]), flags)
        entry = self.pch.open_entry(entry_key, header)
        if entry is None:
            if ordinary_flags(request.cflags):
                self.pch.build_soon(entry_key, header,
                                    functools.partial(self._precompile, rec, request, caps))
            return None
        at = argv.index(rec.source_file)  # after the program's own -I dirs: those come first
        pch_argv = [*argv[:at], "-I", PCH_PLACE, *argv[at:]]
        program = os.memfd_create(PROGRAM, os.MFD_CLOEXEC)
        try:
            with _memfile(LINEBUF_FILE, linebuf_source()) as runtime:
                said, exit = _drain(run_process(
                    pch_argv, workspace=ws, caps=caps, env=env, limits=request.compile_limits,
                    cancel=cancel, phase="compile", inputs=(*sources, (LINEBUF_FILE, runtime, 0o644)),
                    output=(PROGRAM, program), binds=((PCH_PLACE, entry),)), ("stderr",))
        except BaseException:
            os.close(program)
            raise
        finally:
            os.close(entry)
        status, _, _, _ = classify(exit, request.compile_limits)
        done = exit.output == "taken" if status is Status.OK else status is Status.RUNTIME_ERROR
        if done and only_own_diagnostics(said, (rec.source_file, LINEBUF_FILE)):
            log.debug("compiled %s with the precompiled %s", rec.source_file, header)
            return exit, said, program
        os.close(program)
        log.debug("compiling %s again without the precompiled %s (%s: %s)", rec.source_file, header,
                  status.value, said[-300:])
        return None

    def _precompile(self, rec, request, caps, wrapper: bytes, gch: int) -> bool:
        """Build a .gch (in the sandbox, like any compile) of `wrapper` into the fd `gch`."""
        name = "dcodex_pch.h"
        argv = [*rec.compiler(), *rec.default_flags, "-fdiagnostics-color=never", *request.cflags,
                "-x", "c++-header", name, "-o", "out.gch"]
        with isolation.Workspace(caps) as ws, _memfile(name, wrapper) as source:
            said, exit = _drain(run_process(
                argv, workspace=ws, caps=caps, env=sandbox_env(ws.workdir), limits=BUILD_LIMITS,
                phase="compile", inputs=((name, source, 0o644),), output=("out.gch", gch)),
                ("stderr",))
        status, message, _, _ = classify(exit, BUILD_LIMITS)
        if status is not Status.OK or exit.output != "taken":
            log.info("could not precompile (%s %s): %s", status.value, message, said[-500:])
            return False
        return True


def compile_summary(rec, request, width: int = 48) -> str:
    """'main.cpp (g++ -std=gnu++20 -O2 -Wall -g)': what a compile works on, for a progress line;
    the command is cut to about `width` characters."""
    command = os.environ.get(rec.compiler_env) or rec.default_compiler
    words = [os.path.basename(command.split()[0]), *rec.default_flags, *request.cflags]
    shown = " ".join(words)
    if len(shown) > width:
        shown = shown[:width].rsplit(" ", 1)[0] + " …"
    files = " ".join([rec.source_file, *request.sources])
    return f"{files} ({shown})"


def _drain(events, streams=("stdout",), sink=None) -> tuple[str, object]:
    """Run a run_process generator to its end: (the text of its `streams`, its ProcessExit);
    `sink` gets every event too. Closed whatever happens, which ends the run."""
    stdout = []
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as end:
                return "".join(stdout), end.value
            if event.stream in streams:
                stdout.append(event.text)
            if sink is not None:
                sink(event)
    finally:
        events.close()


CASE_HEADER = "=== case {} ===\n"  # the line above each case's output (--show-output)


class _Shower:
    """--show-output: hands on the cases' output events in the cases' order. Case i's events
    wait in its queue until every earlier case has ended and been shown."""

    def __init__(self, cases, futures, queues):
        self.cases, self.futures, self.queues = cases, futures, queues
        self.at = 0  # the case being shown
        self.started = False  # its header is out
        self.open = {"stdout": False, "stderr": False}  # the last text did not end a line

    def ready(self):
        while self.at < len(self.cases):
            if not self.started:
                for stream in ("stderr", "stdout"):  # end the previous case's lines
                    if self.open[stream]:
                        yield Output(stream, "\n")
                        self.open[stream] = False
                yield Output("stdout", CASE_HEADER.format(self.cases[self.at].name))
                self.started = True
            done = self.futures[self.at].done()  # before draining: nothing comes after done
            events = self.queues[self.at]
            while True:
                try:
                    event = events.get_nowait()
                except queue.Empty:
                    break
                if event.text:
                    self.open[event.stream] = not event.text.endswith("\n")
                    yield event
            if not done:
                return
            self.at, self.started = self.at + 1, False


# A Python checker runs under this, so that an exception in it (exit 1 under plain python) is a
# checker_error (exit 3), not a rejection: argv is [python, ..., -c, this, checker.py, paths...].
_PYTHON_CHECKER = """\
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    raise
except BaseException:
    import traceback
    traceback.print_exc()
    sys.exit(3)
"""
# The files a checker program is given, in order, in CHECK_DIR of its run dir (a name no
# workspace file may take, so the workspace's own `input` or `expected` is there unchanged).
CHECK_FILES = ("input", "expected", "actual")


class _ProgramJudge:
    """A checker program, run for one case in a sandbox of its own (the run's limits). `inputs`
    are its own file and the workspace's, copied into each run afresh like the case's files."""

    def __init__(self, caps, argv, inputs, python, limits):
        self.caps, self.argv, self.inputs, self.python, self.limits = caps, argv, inputs, python, limits

    def __call__(self, case, actual: str, stop) -> tuple[str, str]:
        data = (case.input, case.expected, actual.encode("utf-8", "surrogatepass"))
        with contextlib.ExitStack() as stack:
            fds = [stack.enter_context(_memfile(name, part)) for name, part in zip(CHECK_FILES, data)]
            ws = stack.enter_context(isolation.Workspace(self.caps))
            box = ws.workdir or CONFINED_WORKDIR
            names = [f"{CHECK_DIR}/{name}" for name in CHECK_FILES]
            argv = [*self.argv, *(os.path.join(box, name) for name in names)]
            errors = []
            events = run_process(argv, workspace=ws, caps=self.caps, env=sandbox_env(ws.workdir),
                                 limits=self.limits, cancel=stop, phase="run", python=self.python,
                                 inputs=(*self.inputs, *((n, fd, 0o644) for n, fd in zip(names, fds))))
            said, exit = _drain(events, sink=lambda e: e.stream == "stderr" and errors.append(e.text))
        status, message, code, _ = classify(exit, self.limits)
        note = comment(said)
        if status is Status.OK:
            return ACCEPTED, note
        if status is Status.RUNTIME_ERROR and code == 1:
            return WRONG_ANSWER, note or "rejected by the checker"
        if status is Status.CANCELLED:
            return status.value, message
        tail = [line for line in "".join(errors).splitlines() if line.strip()]
        why = f"checker {status.value}: {message}" + (f": {comment(tail[-1])}" if tail else "")
        return CHECKER_ERROR, comment(why)


class _FunctionJudge:
    """A Python function as the checker (the magics): (input, expected, actual) as text →
    bool or (bool, comment); it raising or answering something else is a checker_error."""

    def __init__(self, function):
        self.function = function

    def __call__(self, case, actual: str, stop) -> tuple[str, str]:
        given = case.input.decode("utf-8", "replace")
        expected = case.expected.decode("utf-8", "replace")
        try:
            answer = self.function(given, expected, actual)
        except Exception as e:
            return CHECKER_ERROR, comment(f"the checker raised {type(e).__name__}: {e}")
        try:
            accepted, note = checker_answer(answer)
        except ValueError as e:
            return CHECKER_ERROR, comment(str(e))
        if accepted:
            return ACCEPTED, note
        return WRONG_ANSWER, note or "rejected by the checker"


def _repeat_result(runs: list[RunFigures], ending: Result, cached: bool) -> Result:
    """The one Result of a repeated run: `ending`'s status (ok, or the run that stopped the
    series), the runs' figures (see `Result.runs`)."""
    if not runs:
        return replace(ending, cached=cached)
    timing = Result(Status.OK, runs=tuple(runs)).timing()
    return replace(ending, cached=cached, runs=tuple(runs), wall_s=timing["wall_s"]["median"],
                   cpu_s=timing["cpu_s"]["median"], peak_memory=timing["peak_memory"]["max"])


def _cases_result(cases: list[CaseResult], wall_s: float, cached: bool) -> Result:
    """The one Result of a run with cases (its status rules are `Result.cases`')."""
    stats = dict(wall_s=wall_s, cpu_s=sum(c.cpu_s for c in cases),
                 peak_memory=max((c.peak_memory for c in cases), default=0), cached=cached,
                 cases=tuple(cases))
    if any(c.verdict == Status.CANCELLED.value for c in cases):
        return Result(Status.CANCELLED, "Interrupted", **stats)
    broken = next((c for c in cases if c.verdict == Status.INTERNAL_ERROR.value), None)
    if broken is not None:
        return Result(Status.INTERNAL_ERROR, f"case {broken.name}: {broken.message}", **stats)
    failed = sum(not c.accepted for c in cases)
    if failed:
        return Result(Status.RUNTIME_ERROR, f"{failed} of {len(cases)} cases failed", **stats)
    return Result(Status.OK, "", **stats)


@contextlib.contextmanager
def _memfile(name: str, data: bytes):
    """An fd holding `data` (in memory: nothing of a run touches the host's disk)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        _write_all(fd, data)
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _memfiles(files):
    """The workspace's files as launcher inputs (name, fd, mode), each in memory."""
    with contextlib.ExitStack() as stack:
        yield tuple((name, stack.enter_context(_memfile(os.path.basename(name), data)), 0o644)
                    for name, data in files)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _tee(events, sink: list[str]):
    """Pass events through, keeping their text; return the generator's return value."""
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        sink.append(event.text)
        yield event


def _compile_summary(status: Status, message: str, diagnostics: str, output: str) -> str:
    if status is Status.OK:  # the compiler said yes, but left no program we may take
        return ("Compilation produced no program" if output == "absent" else
                "Compilation left something other than a program as its output (refused)")
    if status is not Status.RUNTIME_ERROR:  # the compiler hit a limit
        return f"Compilation stopped: {message}"
    plain = _ANSI.sub("", diagnostics)
    errors = _ERROR_LINE.findall(plain)
    if not errors:
        return "Compilation failed"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return errors[0].strip() + more


def _validate(request: Request) -> str | None:
    if len(request.code.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        return f"source is larger than {MAX_SOURCE_BYTES // 1024} KiB"
    if "\0" in request.code:
        return "source contains a NUL byte"
    for flag in (*request.cflags, *request.ldflags):
        if flag.startswith("-o"):  # -o and -oFILE
            return f"flag {flag!r} is not allowed (DCodeX names the output itself)"
    return None
