"""Interactive stdin, end to end: a program that blocks reading stdin asks its front door, which
answers through a StdinFeed (interactive.py). The engine (both engine modes), `dcodex run` at a
terminal, the Jupyter kernels (jupyter_client answering input_request), the magics in a real
ipykernel, and the remote backend through a real server."""

from __future__ import annotations

import json
import os
import pty
import select
import sys
import threading
import time

import pytest

from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.cancel import CancelToken
from dcodex_kernel.events import InputRequest, Output, Result, Status, collect
from dcodex_kernel.interactive import StdinFeed
from dcodex_kernel.request import Limits, Request

from .kernel_support import execute, ipykernel_dirs, start_kernel, stop_kernel
from .support import orphaned_sandbox_processes, run_as_ordinary_user, sandbox_processes, wait_until

TWO_PROMPTS_C = r'''#include <stdio.h>
int main(void) {
    int a, b;
    printf("adding\n");
    printf("a? ");
    if (scanf("%d", &a) != 1) return 2;
    printf("b? ");
    if (scanf("%d", &b) != 1) return 3;
    printf("sum=%d\n", a + b);
    return 0;
}
'''

SUM_UNTIL_EOF_CPP = r'''#include <iostream>
int main() {
    long total = 0, x, n = 0;
    while (std::cin >> x) { total += x; n++; }
    std::cout << n << " numbers, total " << total << std::endl;
}
'''

PY_INPUT = '''import sys
name = input("name? ")
line = sys.stdin.readline()
print(f"hi {name}, then {line.strip()!r}")
'''

READS_NOTHING = 'import time\ntime.sleep(0.6)\nprint("slept", end="")\n'


def converse(events, feed, answers, delay=0.0):
    """Drain a run, answering each InputRequest with the next of `answers` (after `delay` s).
    → (prompts, stdout, Result)."""
    prompts, out, result = [], [], None
    answers = iter(answers)
    for event in events:
        if isinstance(event, InputRequest):
            prompts.append(event.prompt)
            time.sleep(delay)
            feed.answer(next(answers))
        elif isinstance(event, Output):
            if event.stream == "stdout":
                out.append(event.text)
        else:
            result = event
    return prompts, "".join(out), result


def run_local(code, language, answers, *, delay=0.0, limits=Limits(), timeout_s=60.0,
              cancel=None):
    with StdinFeed(timeout_s=timeout_s) as feed:
        return converse(LocalBackend().execute(Request(language, code, limits=limits), cancel,
                                               feed), feed, answers, delay)


@pytest.fixture
def since() -> float:
    return time.time()


def nothing_left(since: float) -> bool:
    """No process of runs started since `since` is left (other engines on this machine may be
    running theirs meanwhile)."""
    return wait_until(lambda: not sandbox_processes(since) and not orphaned_sandbox_processes(), 5)


# ---- the engine ----------------------------------------------------------------------------

def test_two_prompts_in_one_c_program_and_the_wait_is_not_on_the_wall_clock():
    prompts, out, result = run_local(TWO_PROMPTS_C, "c", ["3", "4"], delay=0.8,
                                     limits=Limits(wall_s=1.0))
    assert result.status is Status.OK, result
    assert prompts == ["a? ", "b? "]  # each prompt once, held back from the output for the box
    assert out == "adding\nsum=7\n"
    assert result.wall_s < 1.0  # 1.6 s waiting for answers is not the program's time


def test_cin_in_a_loop_until_end_of_input():
    prompts, out, result = run_local(SUM_UNTIL_EOF_CPP, "cpp", ["1 2", "3", "", "^D"])
    assert result.status is Status.OK, result
    assert out == "3 numbers, total 6\n"
    assert prompts == ["", "", "", ""]  # one per blocking read; an empty answer is an empty line


def test_python_input_and_readline():
    prompts, out, result = run_local(PY_INPUT, "python", ["Ada", "more^D"])
    assert result.status is Status.OK, result
    assert prompts == ["name? ", ""]
    assert out == "hi Ada, then 'more'\n"


POLL_C = r'''#include <poll.h>
#include <stdio.h>
int main(void) {
    struct pollfd p = {0, POLLIN, 0};
    printf("q? ");
    fflush(stdout);
    if (poll(&p, 1, -1) != 1) return 2;
    char line[64];
    if (fgets(line, sizeof line, stdin)) printf("got %s", line);
    return 0;
}
'''

SELECT_PY = ("import select, sys\nprint('ask', end='', flush=True)\n"
             "select.select([sys.stdin], [], [])\nprint(sys.stdin.readline().strip())\n")


@pytest.mark.parametrize("language,code,prompt,out", [
    ("c", POLL_C, "q? ", "got yes\n"), ("python", SELECT_PY, "ask", "yes\n")], ids=["poll", "select"])
def test_waiting_in_poll_or_select_asks_too(language, code, prompt, out):
    prompts, stdout, result = run_local(code, language, ["yes"], limits=Limits(wall_s=5))
    assert result.status is Status.OK, result
    assert prompts == [prompt] and stdout == out


def test_a_program_that_does_not_read_is_never_prompted_and_keeps_its_partial_line():
    prompts, out, result = run_local(READS_NOTHING, "python", [])
    assert result.status is Status.OK and prompts == [] and out == "slept"


def test_without_a_feed_stdin_is_end_of_file_at_once():
    started = time.monotonic()
    events = list(LocalBackend().execute(Request("c", TWO_PROMPTS_C, limits=Limits(wall_s=5))))
    assert not any(isinstance(e, InputRequest) for e in events)
    assert events[-1].status is Status.RUNTIME_ERROR and events[-1].exit_code == 2
    assert time.monotonic() - started < 5


def test_stdin_given_wins_over_the_feed():
    with StdinFeed() as feed:
        events = list(LocalBackend().execute(Request("c", TWO_PROMPTS_C, stdin="5 6\n"), None, feed))
    assert not any(isinstance(e, InputRequest) for e in events)
    assert "sum=11" in "".join(e.text for e in events if isinstance(e, Output))


def test_input_timeout_has_its_own_message_and_leaves_nothing(since):
    with StdinFeed(timeout_s=0.5) as feed:
        started = time.monotonic()
        events = list(LocalBackend().execute(Request("python", PY_INPUT, limits=Limits(wall_s=5)),
                                             None, feed))
    result = events[-1]
    assert isinstance(events[-2], InputRequest)
    assert result.status is Status.WALL_TIMEOUT and "input timeout" in result.message
    assert "No input for 0.5 s" in result.message
    assert time.monotonic() - started < 4
    assert nothing_left(since)


def test_cancel_while_waiting_for_input(since):
    with StdinFeed() as feed, CancelToken() as cancel:
        events = LocalBackend().execute(Request("c", TWO_PROMPTS_C), cancel, feed)
        for event in events:
            if isinstance(event, InputRequest):
                threading.Timer(0.3, cancel.cancel).start()
            elif isinstance(event, Result):
                result = event
    assert result.status is Status.CANCELLED
    assert nothing_left(since)


ORDINARY_RUNNER = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from dcodex_kernel.backends.local import LocalBackend
from dcodex_kernel.events import InputRequest, Output, Result
from dcodex_kernel.interactive import StdinFeed
from dcodex_kernel.request import Limits, Request
answers = iter(["3", "4"])
out = []
with StdinFeed() as feed:
    for event in LocalBackend().execute(Request(sys.argv[2], sys.stdin.read(), limits=Limits(wall_s=5)), None, feed):
        if isinstance(event, InputRequest):
            out.append(["prompt", event.prompt])
            feed.answer(next(answers))
        elif isinstance(event, Output):
            out.append([event.stream, event.text])
        elif isinstance(event, Result):  # (a Phase says only how far the run is)
            out.append(["result", event.status.value, event.isolation])
print(json.dumps(out))
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="the suite runs as an ordinary user already")
@pytest.mark.parametrize("language", ["c", "python"])
def test_an_ordinary_user_engine_sees_the_program_wait(language, tmp_path):
    code = TWO_PROMPTS_C if language == "c" else \
        'import select, sys\nprint("a? ", end="", flush=True)\n' \
        'select.select([sys.stdin], [], [])\na = int(sys.stdin.readline())\n' \
        'b = int(input("b? "))\nprint(f"sum={a + b}")\n'
    events = json.loads(run_as_ordinary_user(ORDINARY_RUNNER, language, input=code, timeout=120))
    assert ["prompt", "a? "] in events and ["prompt", "b? "] in events
    assert events[-1][1] == "ok" and "per-run-uid" not in events[-1][2]
    assert ["stdout", "sum=7\n"] in events


# ---- dcodex run at a terminal --------------------------------------------------------------

def test_dcodex_run_forwards_a_terminal(tmp_path):
    source = tmp_path / "sum.c"
    source.write_text(TWO_PROMPTS_C)
    pid, fd = pty.fork()
    if pid == 0:  # the child: `dcodex run` with the pty as its terminal
        os.execv(sys.executable, [sys.executable, "-m", "dcodex_kernel", "run", str(source),
                                  "--timeout", "1"])
    seen = b""

    def read_until(marker, timeout=60):
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
        return marker in seen

    try:
        assert read_until(b"a? ")
        time.sleep(1.2)  # longer than --timeout: waiting for the user is not the program's time
        os.write(fd, b"3\n")
        assert read_until(b"b? ")
        os.write(fd, b"4\n")
        assert read_until(b"[dcodex] ok"), seen
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert b"sum=7" in seen and os.waitstatus_to_exitcode(status) == 0


# ---- the Jupyter kernels -------------------------------------------------------------------

class Answerer:
    """Answers a kernel's input_requests from a thread while the test collects the cell's
    IOPub messages: each with the next answer (after `delay` s), or calls `on_prompt`."""

    def __init__(self, kc, answers=(), delay=0.0, on_prompt=None):
        self.kc, self.answers, self.delay, self.on_prompt = kc, list(answers), delay, on_prompt
        self.prompts = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self.stop.is_set():
            try:
                msg = self.kc.get_stdin_msg(timeout=0.1)
            except Exception:  # queue.Empty
                continue
            if msg["msg_type"] != "input_request":
                continue
            self.prompts.append(msg["content"]["prompt"])
            if self.on_prompt is not None:
                self.on_prompt(msg)
                continue
            time.sleep(self.delay)
            self.kc.input(self.answers.pop(0))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def ask_cell(kc, code, answers=(), delay=0.0, allow_stdin=True, on_prompt=None, timeout=60):
    with Answerer(kc, answers, delay, on_prompt) as answerer:
        run = execute(kc, code, timeout=timeout, allow_stdin=allow_stdin)
    return answerer.prompts, run


def test_kernel_asks_twice_and_does_not_charge_the_wait(kernels):
    _, kc = kernels("dcodex-c")
    prompts, run = ask_cell(kc, "%%dcodex --timeout 1\n" + TWO_PROMPTS_C, ["3", "4"], delay=1.1)
    assert run.status == "ok", run.outputs
    assert prompts == ["a? ", "b? "]
    assert run.text("stdout") == "adding\nsum=7\n"
    assert run.result["wall_s"] < 1.0


def test_kernel_cin_loop_until_eof(kernels):
    _, kc = kernels("dcodex-cpp")
    prompts, run = ask_cell(kc, SUM_UNTIL_EOF_CPP, ["4 5", "6", "^D"])
    assert run.status == "ok", run.outputs
    assert len(prompts) == 3 and run.text("stdout") == "3 numbers, total 15\n"


def test_kernel_python_input(kernels):
    _, kc = kernels("dcodex-python")
    prompts, run = ask_cell(kc, PY_INPUT, ["Ada", "x"])
    assert run.status == "ok", run.outputs
    assert prompts == ["name? ", ""] and run.text("stdout") == "hi Ada, then 'x'\n"


def test_kernel_without_stdin_allowed_gives_eof_at_once(kernels):
    _, kc = kernels("dcodex-c")
    started = time.monotonic()
    prompts, run = ask_cell(kc, "%%dcodex --timeout 20\n" + TWO_PROMPTS_C, allow_stdin=False)
    assert prompts == [] and run.status == "error"
    assert run.result["exit_code"] == 2  # scanf saw end of file
    assert time.monotonic() - started < 10


def test_kernel_stdin_option_is_not_interactive(kernels):
    _, kc = kernels("dcodex-c")
    prompts, run = ask_cell(kc, '%%dcodex --stdin "1 2"\n' + TWO_PROMPTS_C)
    assert prompts == [] and run.status == "ok" and "sum=3" in run.text()


def test_kernel_interrupt_while_waiting(kernels, since):
    km, kc = kernels("dcodex-python")
    prompts, run = ask_cell(kc, PY_INPUT, on_prompt=lambda msg: km.interrupt_kernel())
    assert prompts == ["name? "]
    errors = [c for _, kind, c in run.outputs if kind == "error"]
    assert [e["ename"] for e in errors] == ["Interrupted"]
    assert nothing_left(since)
    assert execute(kc, 'print("after")').text() == "after\n"  # the kernel carries on


# ---- the magics in a real ipykernel ----------------------------------------------------------

@pytest.fixture(scope="module")
def ipykernel(tmp_path_factory):
    """An ipykernel of this interpreter with `%load_ext dcodex_kernel`."""
    km, kc = start_kernel("magics-stdin",
                          kernel_dirs=ipykernel_dirs(tmp_path_factory.mktemp("kernels"), "magics-stdin"))
    try:
        assert execute(kc, "%load_ext dcodex_kernel").status == "ok"
        yield km, kc
    finally:
        stop_kernel(km, kc)


def test_magic_asks_through_the_frontend(ipykernel):
    _, kc = ipykernel
    prompts, run = ask_cell(kc, "%%dcodex c --timeout 1 --quiet\n" + TWO_PROMPTS_C, ["3", "4"],
                            delay=1.1)
    assert run.status == "ok", run.outputs
    assert prompts == ["a? ", "b? "] and run.text("stdout") == "adding\nsum=7\n"


def test_magic_python_input_until_eof(ipykernel):
    _, kc = ipykernel
    prompts, run = ask_cell(kc, "%%dcodex cpp --quiet\n" + SUM_UNTIL_EOF_CPP, ["1 1", "^D"])
    assert run.status == "ok", run.outputs
    assert len(prompts) == 2 and run.text("stdout") == "2 numbers, total 2\n"


def test_magic_without_stdin_allowed_gives_eof_at_once(ipykernel):
    _, kc = ipykernel
    started = time.monotonic()
    prompts, run = ask_cell(kc, "%%dcodex python --timeout 20 --no-raise-error --out r\n" + PY_INPUT,
                            allow_stdin=False)
    assert prompts == [] and run.status == "ok"
    assert "EOFError" in run.text("stderr")
    assert time.monotonic() - started < 10


def test_magic_interrupt_while_waiting(ipykernel, since):
    km, kc = ipykernel
    prompts, run = ask_cell(kc, "%%dcodex python\n" + PY_INPUT,
                            on_prompt=lambda msg: km.interrupt_kernel())
    assert prompts == ["name? "]
    assert run.status == "error" and run.reply["content"]["ename"] == "DCodeXInterrupt"
    assert nothing_left(since)
    assert execute(kc, "print('after')").text() == "after\n"


# ---- through a server ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    from .test_server import Served

    served = Served("--timeout", "1")
    yield served
    assert served.stop() == 0


def test_remote_backend_two_prompts_and_the_wait_off_the_wall_clock(server):
    from dcodex_kernel.backends.remote import RemoteBackend

    backend = RemoteBackend(server.address)
    try:
        with StdinFeed() as feed:
            prompts, out, result = converse(backend.execute(
                Request("c", TWO_PROMPTS_C, limits=Limits(wall_s=1)), None, feed),
                feed, ["3", "4"], delay=1.1)
    finally:
        backend.close()
    assert result.status is Status.OK, result
    assert prompts == ["a? ", "b? "] and out == "adding\nsum=7\n"


def test_the_servers_result_cache_with_an_answerer(server):
    """A run from a client that can answer is replayed to such a client if it never asked (its
    output depended on no answer); one that asked never is. A run without an answerer (the
    program read EOF) is never replayed to one that has one: that program would ask."""
    from dcodex_kernel.backends.remote import RemoteBackend

    backend = RemoteBackend(server.address)
    quiet = 'print("no input needed")\n'
    asks = 'print("got", input("n? "))\n'
    try:
        def run(code, answers=()):
            with StdinFeed() as feed:
                return converse(backend.execute(Request("python", code), None, feed), feed,
                                list(answers))

        assert not run(quiet)[2].replayed and run(quiet)[2].replayed
        assert run(asks, ["1"])[:2] == (["n? "], "got 1\n")
        prompts, out, result = run(asks, ["2"])
        assert (prompts, out, result.replayed) == (["n? "], "got 2\n", False)
        eof = 'import sys\nprint("read", repr(sys.stdin.read()))\n'
        assert collect(backend.execute(Request("python", eof))).stdout == "read ''\n"
        prompts, out, result = run(eof, ["^D"])
        assert prompts and not result.replayed
    finally:
        backend.close()


def test_remote_cancel_while_waiting(server, since):
    from dcodex_kernel.backends.remote import RemoteBackend

    backend = RemoteBackend(server.address)
    try:
        with StdinFeed() as feed, CancelToken() as cancel:
            for event in backend.execute(Request("python", PY_INPUT), cancel, feed):
                if isinstance(event, InputRequest):
                    threading.Timer(0.2, cancel.cancel).start()
                elif isinstance(event, Result):
                    result = event
    finally:
        backend.close()
    assert result.status is Status.CANCELLED
    assert nothing_left(since)


def test_kernel_cell_on_a_server_asks_too(kernels, server):
    _, kc = kernels("dcodex-python")
    prompts, run = ask_cell(kc, f"%%dcodex --server {server.address}\n" + PY_INPUT, ["Bo", "^D"])
    assert run.status == "ok", run.outputs
    assert prompts == ["name? ", ""] and run.text("stdout") == "hi Bo, then ''\n"


def test_server_input_timeout_is_its_own(since):
    from dcodex_kernel.backends.remote import RemoteBackend

    from .test_server import Served

    served = Served("--input-timeout", "0.5")
    backend = RemoteBackend(served.address)
    try:
        started = time.monotonic()
        with StdinFeed() as feed:
            events = list(backend.execute(Request("python", PY_INPUT), None, feed))
    finally:
        backend.close()
        assert served.stop() == 0
    assert isinstance(events[-2], InputRequest)
    assert events[-1].status is Status.WALL_TIMEOUT and "No input for 0.5 s" in events[-1].message
    assert time.monotonic() - started < 10
    assert nothing_left(since)
