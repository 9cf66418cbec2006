"""The DCodeX Jupyter kernel: every cell is a whole C, C++ or Python program, built (cached) and
run in the sandbox, its output streamed into the cell while it runs.

One class serves the three kernelspecs; `--DCodeXKernel.language=c|cpp|python` in kernel.json
picks the language of cells without a `%%dcodex LANG` header.

Threads (ipykernel 7): a cell runs on the main thread, which blocks in the engine's selector loop
(no polling, so an idle run costs no CPU). Interrupts arrive as `interrupt_request` on the control
thread (kernel.json sets `interrupt_mode: message`) or as SIGINT (a frontend using signal mode);
both just cancel the run's CancelToken, whose eventfd wakes the engine, which kills the run and
reports Status.CANCELLED. The cell then ends with one `Interrupted` error and the kernel carries on.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass

import zmq
from ipykernel.kernelbase import Kernel
from ipykernel._version import kernel_protocol_version
from traitlets import Unicode

from . import __version__, case_table
from .backends import BackendChoice, get_backend
from .cancel import CancelToken
from .editing import HEADER, complete, is_complete
from .events import InputRequest, Phase, Result, Status
from .feedback import CompileProgress
from .interactive import StdinFeed
from .info import describe
from .options import (HelpRequested, OptionError, backend_options,
                      header_parser, parse_file_command, parse_header, request_from,
                      stdin_given)
from .request import Language, Limits, Request
from .workspace import Workspace, WorkspaceError, file_body, write_report

log = logging.getLogger(__name__)

LANGUAGE_INFO = {
    Language.C: {
        "name": "c", "mimetype": "text/x-csrc", "file_extension": ".c",
        "codemirror_mode": "text/x-csrc", "pygments_lexer": "c",
    },
    Language.CPP: {
        "name": "c++", "mimetype": "text/x-c++src", "file_extension": ".cpp",
        "codemirror_mode": "text/x-c++src", "pygments_lexer": "cpp",
    },
    Language.PYTHON: {
        # The ipython modes know `%%dcodex` lines; the rest is plain Python 3.
        "name": "python", "mimetype": "text/x-python", "file_extension": ".py",
        "codemirror_mode": {"name": "ipython", "version": 3}, "pygments_lexer": "ipython3",
        "nbconvert_exporter": "python",
    },
}

DISPLAY = {Language.C: "C", Language.CPP: "C++", Language.PYTHON: "Python"}

HELP_LINKS = {
    Language.C: [{"text": "C reference", "url": "https://en.cppreference.com/w/c"}],
    Language.CPP: [{"text": "C++ reference", "url": "https://en.cppreference.com/w/cpp"}],
    Language.PYTHON: [{"text": "Python reference", "url": "https://docs.python.org/3/"}],
}

# The `error` name of each failure: what nbval and the traceback headline show.
ENAMES = {
    Status.COMPILE_ERROR: "CompileError",
    Status.RUNTIME_ERROR: "RuntimeError",
    Status.SIGNALED: "SignalError",
    Status.TIME_LIMIT: "TimeLimitExceeded",
    Status.WALL_TIMEOUT: "WallTimeout",
    Status.MEMORY_LIMIT: "MemoryLimitExceeded",
    Status.OUTPUT_LIMIT: "OutputLimitExceeded",
    Status.CANCELLED: "Interrupted",
    Status.REJECTED: "Rejected",
    Status.INTERNAL_ERROR: "InternalError",
}

RED, DIM, RESET = "\x1b[1;31m", "\x1b[2m", "\x1b[0m"


# ---------------------------------------------------------------------------------------------
# cells

@dataclass(frozen=True)
class Cell:
    language: Language
    code: str  # the program; a header line is blanked so compiler line numbers match the cell
    options: object = None  # the header's argparse Namespace, if there was a header
    info: bool = False  # a `%dcodex [options]` cell: show backend, limits, isolation; run nothing
    file: object = None  # a `%%file [-a] NAME` cell: (name, append) of the workspace file it writes
    files: bool = False  # a `%dcodex files` cell: list the session workspace


_INFO = re.compile(r"^[ \t]*%dcodex(?:[ \t](.*))?$")
_RUN = re.compile(r"^[ \t]*%%dcodex(?:[ \t](.*))?$")
# `%%file NAME` (short for `%%dcodex file NAME`, the magics' spelling) and `%dcodex files`.
_FILE = re.compile(r"^[ \t]*%%(?:file|dcodex[ \t]+file)(?:[ \t](.*))?$")
_FILES = re.compile(r"^[ \t]*%dcodex[ \t]+files[ \t]*$")


def parse_cell(text: str, default: Language) -> Cell:
    """Split a cell into header and program. Raises OptionError for a bad header."""
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or not (HEADER.match(lines[first]) or _FILE.match(lines[first])):
        return Cell(default, text)
    line = lines[first].rstrip("\r")
    rest = "\n".join(lines[first + 1:])
    written = _FILE.match(line)
    if written:
        prog = "%%file" if line.lstrip().startswith("%%file") else "%%dcodex file"
        return Cell(default, file_body(rest), file=parse_file_command(written.group(1) or "", prog))
    if _FILES.match(line):
        if rest.strip():
            raise OptionError("%dcodex files only lists the session workspace; nothing may follow it")
        return Cell(default, "", files=True)
    info, run = _INFO.match(line), _RUN.match(line)
    if info:
        if rest.strip():
            raise OptionError("%dcodex (one %) only shows the backend, limits and isolation; "
                              "start a program cell with %%dcodex [LANG] [options]")
        ns = parse_header(info.group(1) or "", prog="%dcodex")
        return Cell(ns.language or default, "", ns, info=True)
    if not run:
        raise OptionError(f"cannot read the cell header {line.strip()!r}; "
                          "use %%dcodex [LANG] [options]")
    ns = parse_header(run.group(1) or "")
    return Cell(ns.language or default, "\n" * (first + 1) + rest, ns)


def cell_request(cell: Cell, base: Limits, files=()) -> Request:
    """The Request a parsed cell describes (for a `%dcodex` cell, the limits it would get);
    `files`: the session workspace's. Raises OptionError for options that make no valid request
    (e.g. a limit above its maximum)."""
    if cell.options is None:  # the common case: skip argparse entirely
        return Request(cell.language, cell.code, limits=base, color=True, files=files)
    return request_from(cell.options, code=cell.code, language=cell.language, base=base,
                        color=True, files=files)


# ---------------------------------------------------------------------------------------------
# versions shown in kernel_info (computed once, on first use)

@functools.lru_cache(maxsize=None)
def language_version(language: Language) -> str:
    from .languages import recipe
    from .sandbox import isolation

    rec = recipe(language)
    if rec.compiles:  # the standard the recipe compiles to: -std=c17 -> "17", -std=gnu++20 -> "20"
        std = next((f for f in rec.default_flags if f.startswith("-std=")), "")
        return re.sub(r"\D", "", std) or ""
    try:
        exe = isolation.detect().python()
        if exe == os.path.abspath(sys.executable):
            return ".".join(map(str, sys.version_info[:3]))
        out = subprocess.run([exe, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "3"


def toolchain(language: Language) -> str:
    """`gcc (Debian 12.2.0-14+deb12u1) 12.2.0` or `Python 3.11.2`: for the banner."""
    from .languages import compiler_banner, recipe

    rec = recipe(language)
    if not rec.compiles:
        return f"Python {language_version(language)}"
    try:
        return compiler_banner(rec.compiler()[0])  # the same (memoized) call the build cache keys on
    except (OSError, subprocess.SubprocessError) as e:
        return f"no compiler ({e})"


# ---------------------------------------------------------------------------------------------
# the kernel

class DCodeXKernel(Kernel):
    implementation = "dcodex"
    implementation_version = __version__
    # ipykernel sleeps this long before each execute_reply so that OutStream text reaches
    # clients first; our output is sent straight to IOPub, before the reply and the idle status.
    _execute_sleep = 0.0

    language = Unicode("c", help="language of cells without a %%dcodex header: c, cpp, python"
                       ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lang = Language.parse(self.language)
        try:
            self.limits, self.limits_error = Limits.from_env(), None
        except ValueError as e:  # keep the kernel up; every cell then says what is wrong
            self.limits, self.limits_error = Limits(), f"bad kernel environment: {e}"
        self._backend = None
        self._backends = BackendChoice()  # the backends of cells' --server options
        self.workspace = Workspace()  # this session's %%file files (made on first write)
        self._cancel: CancelToken | None = None
        self._cancel_lock = threading.Lock()
        self._last_result: dict | None = None
        self._idle = threading.Event()  # clear while an execute_request is being handled
        self._idle.set()

    # -- what the kernel is ---------------------------------------------------------------------

    @property
    def language_info(self) -> dict:
        return {**LANGUAGE_INFO[self.lang], "version": language_version(self.lang)}

    @property
    def banner(self) -> str:
        return (f"DCodeX {__version__}: each cell is a {DISPLAY[self.lang]} program, run in a "
                f"sandbox ({toolchain(self.lang)}).\n"
                "Start a cell with `%%dcodex [LANG] [options]` to change its language or limits; "
                "`%dcodex` shows the limits and isolation in force." + self._confinement_warning())

    def _confinement_warning(self) -> str:
        caps = getattr(self.backend, "caps", None)
        missing = caps.strict_problems() if caps is not None else []
        if not missing:
            return ""
        return (f"\nWARNING: programs are not fully confined on this machine (missing: "
                f"{', '.join(missing)}); they can reach more of it than a cell should.")

    @property
    def help_links(self) -> list:
        return HELP_LINKS[self.lang]

    @property
    def kernel_info(self) -> dict:
        # Built here rather than by ipykernel, which would import debugpy only to advertise a
        # debugger: cells are separate programs, there is nothing for one to attach to. Nor do
        # we offer subshells: one cell runs at a time.
        return {
            "protocol_version": kernel_protocol_version,
            "implementation": self.implementation,
            "implementation_version": self.implementation_version,
            "language_info": self.language_info,
            "banner": self.banner,
            "help_links": self.help_links,
            "supported_features": [],
        }

    @property
    def backend(self):
        if self._backend is None:
            self._backend = get_backend()
        return self._backend

    # -- execute --------------------------------------------------------------------------------

    async def execute_request(self, stream, ident, parent):
        self._idle.clear()
        try:
            await super().execute_request(stream, ident, parent)
        finally:
            self._idle.set()

    async def do_execute(self, code, silent, store_history=True, user_expressions=None,
                         allow_stdin=False, *, cell_meta=None, cell_id=None):
        self._allow_stdin = allow_stdin  # a program waiting for input asks the frontend
        self._last_result = None
        try:
            if self.limits_error:
                raise OptionError(self.limits_error)
            cell = parse_cell(code, self.lang)
            if cell.file is not None:
                size = self.workspace.write(cell.file.name, cell.code.encode(), append=cell.file.append)
                self._stream("stdout", write_report(cell.file.name, size, cell.file.append), silent)
                return self._ok()
            if cell.files:
                self._stream("stdout", self.workspace.describe() + "\n", silent)
                return self._ok()
            backend = self._backend_for(cell)
            if cell.info:
                text = describe(backend, cell_request(cell, self.limits).limits)
                self._stream("stdout", f"{text}\n  {'kernel':<13} {DISPLAY[self.lang]} "
                                       f"(DCodeX {self.lang.value} kernel)\n", silent)
                return self._ok()
            if not cell.code.strip():
                return self._ok()
            request = cell_request(cell, self.limits, self.workspace.files())
        except HelpRequested as e:
            self._stream("stdout", str(e), silent)
            return self._ok()
        except (OptionError, WorkspaceError) as e:
            message = str(e)
            lines = message.splitlines() or ["bad cell header"]
            return self._error("OptionError", lines[0],
                               [f"{RED}OptionError{RESET}: {lines[0]}", *lines[1:]], silent)

        # No --stdin: a program that waits for input asks the notebook (never a frontend that
        # allows no input, like nbval: that program reads end of file at once).
        interactive = allow_stdin and not silent and not stdin_given(cell.options)
        with (StdinFeed() if interactive else contextlib.nullcontext()) as feed:
            result, diagnostics = self._run(request, silent, backend, feed)
        self._last_result = {k: v for k, v in result.to_dict().items()
                             if k not in ("stdout", "stderr")}
        if result.cases:
            self._display(case_table.bundle(result.cases), silent)
            if result.status is Status.RUNTIME_ERROR:  # verdicts: one error saying how many failed
                message = case_table.failure(result.cases)
                return self._error("TestsFailed", message,
                                   [f"{RED}TestsFailed{RESET}: {message}"], silent)
        if result.ok:
            if result.runs:  # --repeat: the series' figures, as one line of text
                self._display({"text/plain": result.summary()}, silent)
            return self._ok()
        ename = ENAMES.get(result.status, "Error")
        if result.status is Status.CANCELLED:
            headline = f"{RED}{ename}{RESET}: the program was stopped; the kernel is ready for the next cell"
        else:
            headline = f"{RED}{ename}{RESET}: {result.message}"
        if result.status is Status.COMPILE_ERROR:
            traceback = diagnostics.rstrip("\n").split("\n") + [headline] if diagnostics else [headline]
        else:
            traceback = [headline, f"{DIM}{_stats(result)}{RESET}"]
        return self._error(ename, result.message, traceback, silent)

    def _backend_for(self, cell: Cell):
        """The kernel's backend, or the one a `--server` header names (kept for later cells)."""
        options = backend_options(cell.options) if cell.options is not None else {}
        return self._backends.get(self.backend, options) if options else self.backend

    def _run(self, request: Request, silent: bool, backend=None, feed=None) -> tuple[Result, str]:
        """Stream the run's output to the cell; return its Result and any held-back compiler text.

        Compiler output is held until we know whether the build worked: on success it is shown
        (warnings, on stderr) before the program's first output; on failure it becomes the
        CompileError's traceback, so the cell has exactly one error output."""
        compiler: list[str] = []
        result = None
        token = CancelToken()
        with self._cancel_lock:
            self._cancel = token
        events = (backend or self.backend).execute(request, token, feed)
        over = threading.Event()  # the run has ended: stop waiting for an input_reply
        waiters: list[threading.Thread] = []
        progress = self._progress(silent)
        try:
            for event in events:
                if isinstance(event, Result):
                    result = event
                elif isinstance(event, InputRequest):
                    if compiler:  # the build's warnings before the program's prompt
                        self._stream("stderr", "".join(compiler), silent)
                        compiler.clear()
                    waiters.append(self._ask(event.prompt, feed, over))
                elif isinstance(event, Phase):
                    progress(event)
                elif event.phase == "compile":
                    compiler.append(event.text)
                else:
                    if compiler:
                        self._stream("stderr", "".join(compiler), silent)
                        compiler.clear()
                    self._stream(event.stream, event.text, silent)
        except Exception as e:  # the engine promises a Result; never leave the cell hanging
            log.exception("engine failed")
            result = Result(Status.INTERNAL_ERROR, f"{type(e).__name__}: {e}")
        finally:
            over.set()
            progress.stop()  # before any output of the cell: the line must not outlive the compile
            events.close()  # kills the run if we are leaving early
            for waiter in waiters:  # the stdin socket is this thread's again before the next cell
                waiter.join()
            with self._cancel_lock:
                self._cancel = None
            token.close()
        if result is None:
            result = Result(Status.INTERNAL_ERROR, "the engine ended without a result")
        text = "".join(compiler)
        if text and result.status is not Status.COMPILE_ERROR:
            self._stream("stderr", text, silent)
            text = ""
        return result, text

    def _ask(self, prompt: str, feed, over: threading.Event) -> threading.Thread:
        """Send an input_request (after the output sent so far) and hand the input_reply to the
        feed from a thread, so the engine keeps watching the run (interrupt, input timeout)
        while the user types. ipykernel's own raw_input would block this thread."""
        io_thread = getattr(self.iopub_socket, "io_thread", None)
        if io_thread is not None:  # the stream messages go first
            sent = threading.Event()
            io_thread.schedule(sent.set)
            sent.wait(1)
        while True:  # drop replies to a prompt of an earlier run
            try:
                self.stdin_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                break
        self.session.send(self.stdin_socket, "input_request", {"prompt": prompt, "password": False},
                          self.get_parent("shell"),
                          ident=self._get_shell_context_var(self._shell_parent_ident))

        def wait_for_reply():
            while not over.is_set():
                if not self.stdin_socket.poll(100):
                    continue
                try:
                    _, reply = self.session.recv(self.stdin_socket)
                except Exception:  # a malformed message: keep waiting for a good one
                    log.warning("bad input_reply", exc_info=True)
                    continue
                if reply is not None:
                    value = reply.get("content", {}).get("value")
                    feed.answer(value if isinstance(value, str) else None)
                    return

        waiter = threading.Thread(target=wait_for_reply, name="dcodex-input", daemon=True)
        waiter.start()
        return waiter

    def _progress(self, silent: bool) -> CompileProgress:
        """The cell's transient compile line (feedback.py): a display_data with a display_id,
        updated while the compiler works. It starts with an empty bundle, which nbval (it keeps
        a display's first message and ignores updates) compares as nothing, and ends with an
        update to nothing plus a clear_output, which Jupyter clients (nbclient, JupyterLab) apply
        to the saved notebook: the line is the cell's only output then, since the kernel holds
        the compiler's text until the program starts."""
        parent, display_id = self.get_parent("shell"), uuid.uuid4().hex

        def send(msg_type, data=None):
            content = ({"wait": False} if data is None else
                       {"data": data, "metadata": {}, "transient": {"display_id": display_id}})
            self.session.send(self.iopub_socket, msg_type, content, parent=parent,
                              ident=self._topic(msg_type))

        def show(text, first):
            if first:
                send("display_data", {})
            send("update_display_data", {"text/plain": text})

        def clear():
            send("update_display_data", {})
            send("clear_output")

        if silent:
            show = clear = lambda *_: None  # noqa: E731 (a silent cell sends nothing)
        return CompileProgress(show, clear)

    def _stream(self, name: str, text: str, silent: bool) -> None:
        if text and not silent:
            self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})

    def _display(self, data: dict, silent: bool) -> None:
        if not silent:
            self.send_response(self.iopub_socket, "display_data",
                               {"data": data, "metadata": {}, "transient": {}})

    def _ok(self) -> dict:
        return {"status": "ok", "execution_count": self.execution_count,
                "payload": [], "user_expressions": {}}

    def _error(self, ename: str, evalue: str, traceback: list[str], silent: bool) -> dict:
        content = {"ename": ename, "evalue": evalue, "traceback": traceback}
        if not silent:
            self.send_response(self.iopub_socket, "error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}

    def finish_metadata(self, parent, metadata, reply_content):
        if self._last_result is not None:
            metadata["dcodex"] = self._last_result
        return metadata

    # -- interrupt and shutdown -----------------------------------------------------------------

    def cancel_run(self) -> None:
        """Stop the running cell, if any. Safe from the control thread."""
        with self._cancel_lock:
            if self._cancel is not None:
                self._cancel.cancel()

    async def interrupt_request(self, stream, ident, parent):
        # Replaces ipykernel's SIGINT to our own process group, which would not reach the
        # program (it runs in its own session) and would not stop the engine's loop.
        self.cancel_run()
        self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    def _on_sigint(self, signum, frame):
        # Runs on the main thread, which is the only one that clears `_cancel`: no lock needed
        # (and taking one here could deadlock against the interrupted main thread).
        token = self._cancel
        if token is not None:
            token.cancel()

    def pre_handler_hook(self):
        self.saved_sigint_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def post_handler_hook(self):
        signal.signal(signal.SIGINT, self.saved_sigint_handler)

    async def do_shutdown(self, restart):
        # Stop the running cell and let it send its reply before ipykernel closes the sockets
        # (else the main thread's execute_reply hits a closed socket). Cancelling takes ms.
        self.cancel_run()
        self._idle.wait(timeout=5)
        self.workspace.close()
        return {"status": "ok", "restart": restart}

    # -- editing help ---------------------------------------------------------------------------

    async def do_complete(self, code, cursor_pos):
        return complete(code, cursor_pos, self.lang, _header_options())

    async def do_is_complete(self, code):
        language = self.lang
        first = code.split("\n", 1)[0]
        if _FILE.match(first):  # a file's text, not code
            return {"status": "complete"}
        m = _RUN.match(first)
        if m:
            try:
                language = parse_header(m.group(1) or "").language or language
            except OptionError:
                return {"status": "invalid"}
        return is_complete(code, language)

    async def do_inspect(self, code, cursor_pos, detail_level=0, omit_sections=()):
        """Shift-Tab on a `%%dcodex` header line shows the header's options."""
        line_end = code.find("\n")
        on_first_line = cursor_pos <= (len(code) if line_end < 0 else line_end)
        if on_first_line and HEADER.match(code):
            text = header_parser().format_help()
            return {"status": "ok", "found": True, "data": {"text/plain": text}, "metadata": {}}
        return {"status": "ok", "found": False, "data": {}, "metadata": {}}


@functools.lru_cache(maxsize=1)
def _header_options() -> list[str]:
    return sorted(o for o in header_parser()._option_string_actions if o.startswith("--"))


def _stats(result: Result) -> str:
    exit_code = f", exit code {result.exit_code}" if result.exit_code is not None else ""
    return result.stats() + exit_code


def main() -> None:
    from ipykernel.kernelapp import IPKernelApp

    class DCodeXKernelApp(IPKernelApp):
        def init_io(self):
            # Keep the real sys.stdout/stderr. Cells are programs whose output the kernel
            # publishes itself; the kernel's own prints and warnings belong in the server's
            # log, not in someone's cell. It also saves ipykernel's OutStream flushes, each a
            # round trip to the IOPub thread, four per cell. (init_kernel wants a displayhook.)
            from traitlets.utils.importstring import import_item

            self.displayhook = import_item(str(self.displayhook_class))(self.session,
                                                                         self.iopub_socket)

        def start(self):
            super().start()  # returns when shutdown_request has stopped the main loop
            # ipykernel 7.4 race: after the shutdown_reply the control thread still publishes
            # (status, flushes) through the IOPub thread, which the exit hooks stop first; the
            # control thread then blocks and close() waits for it (seen: 10 s, and forever).
            # The control loop has been told to stop: let it finish while IOPub still runs.
            thread = self.control_thread
            shutting_down = getattr(self.kernel, "_shutdown_message", None) is not None
            if shutting_down and thread is not None and thread.is_alive():
                thread.join(timeout=2)

    DCodeXKernelApp.launch_instance(kernel_class=DCodeXKernel)


if __name__ == "__main__":
    # `python -m dcodex_kernel.kernel` runs this file as __main__; start the package's own copy
    # of the class so there is one DCodeXKernel (the ipykernel_launcher idiom).
    from dcodex_kernel.kernel import main as _main

    _main()
