"""The local backend: build (cached) and run a Request in this machine's sandbox."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from typing import Iterator

from ..build_cache import BuildCache, cache_key
from ..cancel import CancelToken
from ..events import Event, Output, Result, Status
from ..languages import LINEBUF_FILE, PROGRAM, compiler_identity, linebuf_source, python_interpreter, recipe
from ..request import Request
from ..sandbox import isolation
from ..sandbox.outcome import classify
from ..sandbox.process import run_process

log = logging.getLogger(__name__)

MAX_SOURCE_BYTES = 1 << 20
_ERROR_LINE = re.compile(r"^.*\berror\b.*$", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[mK]")


def sandbox_env(workdir: str) -> dict[str, str]:
    """The whole environment a program sees: nothing of the engine's leaks in."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


class LocalBackend:
    def __init__(self, cache: BuildCache | None = None, caps: isolation.Capabilities | None = None):
        self._cache = cache
        self._caps = caps  # None: what this machine allows (detected once)

    @property
    def caps(self) -> isolation.Capabilities:
        return self._caps or isolation.detect()

    @property
    def cache(self) -> BuildCache:
        if self._cache is None:
            self._cache = BuildCache()
        return self._cache

    def describe(self) -> dict:
        caps = self.caps
        info = {
            "backend": "local",
            "isolation": list(caps.layers()),
            "degraded": list(caps.missing()),
            "build_cache": str(self.cache.root),
        }
        for lang in ("c", "cpp"):
            try:
                info[f"{lang}_compiler"] = " ".join(recipe(lang).compiler())
            except FileNotFoundError as e:
                info[f"{lang}_compiler"] = f"missing ({e})"
        try:
            info["python"] = python_interpreter(isolation.UID_BASE if caps.root else None)
        except FileNotFoundError as e:
            info["python"] = f"missing ({e})"
        return info

    def execute(self, request: Request, cancel: CancelToken | None = None) -> Iterator[Event]:
        problem = _validate(request)
        if problem:
            yield Result(Status.REJECTED, problem)
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
            result = yield from self._build_and_run(request, caps, workspace, cancel)
        except Exception as e:  # (GeneratorExit, a client gone, is not one: it passes through)
            log.exception("run failed")
            result = Result(Status.INTERNAL_ERROR, f"{type(e).__name__}: {e}")
        finally:
            workspace.__exit__(None, None, None)
        yield replace(result, isolation=caps.layers())

    def _build_and_run(self, request, caps, ws, cancel):
        rec = recipe(request.language)
        with open(os.path.join(ws.path, rec.source_file), "w", encoding="utf-8") as f:
            f.write(request.code)
        env = sandbox_env(ws.path)
        cached = False
        if rec.compiles:
            failed, cached = yield from self._build(rec, request, caps, ws, env, cancel)
            if failed:
                return failed
        argv = rec.run_argv(request.args, sandbox_uid=ws.uid)
        exit = yield from run_process(argv, workspace=ws, caps=caps, env=env, limits=request.limits,
                                      stdin=request.stdin, cancel=cancel, phase="run")
        status, message, code, sig = classify(exit, request.limits)
        return Result(status, message, exit_code=code, signal=sig, cpu_s=exit.cpu_s,
                      wall_s=exit.wall_s, peak_memory=exit.peak_memory, truncated=exit.truncated,
                      cached=cached)

    def _build(self, rec, request, caps, ws, env, cancel):
        """Put the compiled program in the run dir, from the cache or the compiler (in the
        sandbox). Returns (Result if the build failed else None, whether it came from the cache)."""
        argv = rec.compile_argv(request.cflags, request.ldflags, request.color)
        linebuf = linebuf_source()
        key = cache_key(
            rec.language.value, compiler_identity(argv[0]),
            "\0".join(a for a in argv if not a.startswith("-fdiagnostics-color")),
            request.code, linebuf,
        )
        program = os.path.join(ws.path, PROGRAM)
        replay = self.cache.fetch(key, program) if request.cache else None
        if replay is not None:
            if replay:  # the warnings of the build that made this program
                yield Output("stderr", replay if request.color else _ANSI.sub("", replay), "compile")
            return None, True
        with open(os.path.join(ws.path, LINEBUF_FILE), "wb") as f:
            f.write(linebuf)
        diagnostics = []
        exit = yield from _tee(
            run_process(argv, workspace=ws, caps=caps, env=env, limits=request.compile_limits,
                        cancel=cancel, phase="compile"),
            diagnostics)
        status, message, code, sig = classify(exit, request.compile_limits)
        if status is Status.CANCELLED:
            return Result(status, message), False
        if status is not Status.OK or not os.path.exists(program):
            summary = _compile_summary(status, message, "".join(diagnostics))
            return Result(Status.COMPILE_ERROR, summary, exit_code=code, signal=sig,
                          truncated=exit.truncated), False
        if request.cache:
            self.cache.store(key, program, "".join(diagnostics))
        return None, False


def _tee(events, sink: list[str]):
    """Pass events through, keeping their text; return the generator's return value."""
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        sink.append(event.text)
        yield event


def _compile_summary(status: Status, message: str, diagnostics: str) -> str:
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
