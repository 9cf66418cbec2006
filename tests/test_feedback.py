"""The transient "compiling main.cpp (g++ …) 1.2 s" line of a slow compile (feedback.py): shown in
the cell while a real, slow compile runs (a cold `<bits/stdc++.h>` without precompiled headers),
through the DCodeX kernel, the magics in a real ipykernel and `dcodex run` on a terminal; absent
for a cache hit; absent from what nbclient saves and from what nbval compares; and the engine's
Phase events reach a remote client through a real server."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import uuid

import nbformat
import pytest

from dcodex_kernel.backends.remote import RemoteBackend
from dcodex_kernel.events import Output, Phase, Result
from dcodex_kernel.request import Language, Request

from .kernel_support import ipykernel_dirs, kernel_env, kernels_dir, start_kernel, stop_kernel
from .test_server import Served

SLOW = """#include <bits/stdc++.h>
// {tag}
int main() {{ std::vector<int> v{{3, 1, 2}}; std::sort(v.begin(), v.end()); std::cout << v[0] << v[2] << "\\n"; }}
"""


def slow_program() -> str:
    """A program whose compile takes seconds (bits/stdc++.h, no PCH) and is in no cache."""
    return SLOW.format(tag=uuid.uuid4().hex)


def cold_env(tmp_path) -> dict:
    """A kernel environment with an empty build cache and no precompiled headers."""
    return kernel_env({"XDG_CACHE_HOME": str(tmp_path / f"cache-{uuid.uuid4().hex[:8]}"),
                       "DCODEX_PCH": "0"})


def messages(kc, code: str, timeout: float = 120):
    """Every IOPub message (type, content) of one execute_request, until the kernel is idle."""
    msg_id = kc.execute(code)
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "status":
            if msg["content"]["execution_state"] == "idle":
                return seen
            continue
        if kind != "execute_input":
            seen.append((kind, msg["content"]))


def progress_messages(seen):
    return [(kind, c) for kind, c in seen
            if kind in ("display_data", "update_display_data", "clear_output")]


def check_shown_then_cleared(seen, *, clear=True):
    """The line appeared (an empty display, updates naming the compile), then went away before
    the program's output; nothing of it is left for nbval (its first message is empty)."""
    shown = progress_messages(seen)
    assert shown, f"no compile line: {seen}"
    first_kind, first = shown[0]
    assert first_kind == "display_data" and first["data"] == {}
    display_id = first["transient"]["display_id"]
    texts = [c["data"].get("text/plain", "") for kind, c in shown if kind == "update_display_data"]
    assert any(t.startswith("compiling main.cpp (g++ ") and t.endswith(" s") for t in texts), texts
    ids = {c["transient"]["display_id"] for kind, c in shown if kind != "clear_output"}
    assert ids == {display_id}
    last_update = [c for kind, c in shown if kind == "update_display_data"][-1]
    assert last_update["data"] == {}
    if clear:
        assert shown[-1] == ("clear_output", {"wait": False})
    # The line is over before the program says anything.
    end = max(i for i, m in enumerate(seen) if m[0] in ("update_display_data", "clear_output"))
    first_out = next(i for i, (kind, c) in enumerate(seen)
                     if kind == "stream" and "13" in c["text"])
    assert end < first_out
    assert "".join(c["text"] for kind, c in seen[first_out:] if kind == "stream") == "13\n"


@pytest.fixture(scope="module")
def cpp_kernel(tmp_path_factory):
    km, kc = start_kernel("dcodex-cpp", cold_env(tmp_path_factory.mktemp("feedback")))
    yield km, kc
    stop_kernel(km, kc)


def test_kernel_shows_a_slow_compile_and_nothing_for_a_cache_hit(cpp_kernel):
    _, kc = cpp_kernel
    code = slow_program()
    check_shown_then_cleared(messages(kc, code))
    again = messages(kc, code)  # the build cache has it now
    assert progress_messages(again) == []
    assert [k for k, _ in again] == ["stream"]


def test_kernel_quick_compile_shows_nothing(cpp_kernel):
    _, kc = cpp_kernel
    seen = messages(kc, f"// {uuid.uuid4().hex}\nint main() {{ return 0; }}")
    assert progress_messages(seen) == []


def test_kernel_compile_error_after_a_slow_compile_leaves_only_the_error(cpp_kernel):
    _, kc = cpp_kernel
    code = slow_program().replace("v[2]", "v.nope")
    seen = messages(kc, code)
    shown = progress_messages(seen)
    assert shown and shown[-1][0] == "clear_output"
    after = seen[seen.index(shown[-1]) + 1:]
    assert [k for k, _ in after] == ["error"] and after[0][1]["ename"] == "CompileError"


@pytest.fixture(scope="module")
def magics_kernel(tmp_path_factory):
    km, kc = start_kernel("magics-feedback", cold_env(tmp_path_factory.mktemp("magics")),
                          kernel_dirs=ipykernel_dirs(tmp_path_factory.mktemp("kernels"), "magics-feedback"))
    assert messages(kc, "%load_ext dcodex_kernel") == []
    yield km, kc
    stop_kernel(km, kc)


def test_magics_show_a_slow_compile_and_nothing_for_a_cache_hit(magics_kernel):
    _, kc = magics_kernel
    cell = "%%dcodex cpp --quiet\n" + slow_program()
    check_shown_then_cleared(messages(kc, cell))
    again = messages(kc, cell)
    assert progress_messages(again) == [] and [k for k, _ in again] == ["stream"]


def test_magics_run_file_ends_its_line_as_an_empty_display(magics_kernel, tmp_path):
    """`%dcodex run` may follow other output of its cell, which must stay: no clear_output, the
    line's display ends empty (nbval compares an empty display as nothing)."""
    _, kc = magics_kernel
    path = tmp_path / "slow.cpp"
    path.write_text(slow_program())
    seen = messages(kc, f"print('before')\n%dcodex run {path} --quiet")
    check_shown_then_cleared(seen, clear=False)
    assert not [k for k, _ in seen if k == "clear_output"]
    assert seen[0] == ("stream", {"name": "stdout", "text": "before\n"})


def _notebook(kernel_name: str, language: str, cells: list[str]):
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": kernel_name, "display_name": kernel_name, "language": language}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    return nb


# nbclient in a process of its own: its event loop and zmq context outlive a run, and the
# engine tests' fd checks would count what they open later.
RUN_NOTEBOOK = """
import sys, nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
path, kernel_dir = sys.argv[1], sys.argv[2]
nb = nbformat.read(path, as_version=4)
km = KernelManager(kernel_name=nb.metadata.kernelspec.name,
                   kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_dir]))
NotebookClient(nb, km=km, timeout=120).execute()
nbformat.write(nb, path)
"""


def execute_notebook(nb, path, kernel_dir: str, env: dict):
    """Run `nb` with nbclient (as `jupyter execute` does), save it to `path`, return what it saved."""
    nbformat.write(nb, path)
    subprocess.run([sys.executable, "-c", RUN_NOTEBOOK, str(path), kernel_dir], env=env,
                   check=True, timeout=300, capture_output=True)
    return nbformat.read(path, as_version=4)


def test_saved_notebook_has_no_compile_line_and_nbval_passes(tmp_path):
    """nbclient applies display updates and clear_output to the notebook it saves; nbval keeps
    every display's first message and ignores updates and clears. Neither keeps the line."""
    nb = _notebook("dcodex-cpp", "c++", [slow_program(), "int main() { return 0; }"])
    path = tmp_path / "slow.ipynb"
    nb = execute_notebook(nb, path, kernels_dir(), cold_env(tmp_path))
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["stream"] and outputs[0].text == "13\n"
    # nbval runs it again, compiling slowly again (a new empty cache), and compares.
    env = {**cold_env(tmp_path), "JUPYTER_PATH": os.path.dirname(kernels_dir())}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider",
                           str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_magics_saved_notebook_has_no_compile_line(tmp_path):
    specs = ipykernel_dirs(tmp_path / "kernels", "magics-nb")[0]
    nb = _notebook("magics-nb", "python", ["%load_ext dcodex_kernel",
                                           "%%dcodex cpp --quiet\n" + slow_program()])
    nb = execute_notebook(nb, tmp_path / "magics.ipynb", specs, cold_env(tmp_path))
    outputs = nb.cells[1].outputs
    assert [o.output_type for o in outputs] == ["stream"] and outputs[0].text == "13\n"


def test_cli_shows_the_line_on_a_terminal_only(tmp_path):
    path = tmp_path / "slow.cpp"
    path.write_text(slow_program())
    env = {**cold_env(tmp_path)}
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "dcodex_kernel", "run", str(path)],
                                stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        said = b""
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end is closed
                break
            if not chunk:
                break
            said += chunk
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
    text = said.decode()
    assert out == b"13\n"
    assert "compiling main.cpp (g++ " in text and "\r\x1b[K" in text
    assert text.index("\r\x1b[K") < text.index("[dcodex] ok")
    # Not a terminal: no line at all (a log keeps no transient text).
    path.write_text(slow_program())
    piped = subprocess.run([sys.executable, "-m", "dcodex_kernel", "run", str(path)],
                           capture_output=True, text=True, env=cold_env(tmp_path), timeout=120)
    assert piped.stdout == "13\n" and "compiling" not in piped.stderr


def test_phases_reach_a_remote_client(tmp_path):
    served = Served(env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "DCODEX_PCH": "0"})
    remote = RemoteBackend(served.address)
    try:
        code = slow_program()
        events = list(remote.execute(Request(Language.CPP, code)))
        phases = [e for e in events if isinstance(e, Phase)]
        assert phases[0].name == "compile" and phases[0].detail.startswith("main.cpp (g++ ")
        assert phases[1:] == [Phase("run")]
        first_out = next(i for i, e in enumerate(events) if isinstance(e, Output))
        assert events.index(phases[1]) < first_out and isinstance(events[-1], Result)
        assert events[-1].ok
        # A cached build (and the server's replay of a cached result) announces nothing.
        again = list(remote.execute(Request(Language.CPP, code)))
        assert not [e for e in again if isinstance(e, Phase)] and again[-1].ok
    finally:
        remote.close()  # its gRPC channel's threads and fds
        assert served.stop() == 0
