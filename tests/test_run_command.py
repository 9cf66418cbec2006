"""The README's main command, `make run`, as a newcomer runs it: from the checkout, with no
display, as root and as an ordinary user. It must serve JupyterLab on loopback with the three
DCodeX kernels and the notebooks, print the URL to open, and stop cleanly on SIGTERM.

The ordinary-user half (run when the suite runs as root) uses its own user, `dcodex-test-user`,
and its own copy of the checkout in that user's home, set up by `make setup` as that user (it
cannot use root's venv: root's Python lives under a 0700 /root). The copy's venv is kept between
runs, so only the first run on a machine pays for its `pip install`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

import psutil
import pytest

from .support import ordinary_user

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER = "dcodex-test-user"
KERNELS = {"dcodex-c", "dcodex-cpp", "dcodex-python"}
NOTEBOOK = "04-c-kernel.ipynb"
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]+)")
START_BOUND = 90  # seconds from `make run` to JupyterLab's URL (set-up is already done)


@dataclass
class Server:
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    seen: dict[int, float] = field(default_factory=dict)  # pid -> create_time, of every descendant
    port: int = 0
    token: str = ""
    found: threading.Event = field(default_factory=threading.Event)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def api(self, path: str, method: str = "GET", body: dict | None = None):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
        with opener.open(req, timeout=30) as resp:
            data = resp.read()
            return resp.status, (json.loads(data) if data else None)

    def wait_listening(self, bound: float = 15) -> None:
        """With --port=0 the URL can be printed a moment before the server listens."""
        deadline = time.monotonic() + bound
        while not _listening(self.port):
            assert time.monotonic() < deadline, f"nothing listening on {self.port}:\n{self.log}"
            time.sleep(0.1)

    def execute(self, kernel_id: str, code: str, bound: float = 60) -> tuple[dict, str]:
        """Run one cell through the server's kernel websocket, as JupyterLab does: → (the
        execute_reply's content, the stream output)."""
        return asyncio.run(asyncio.wait_for(self._execute(kernel_id, code), bound))

    async def _execute(self, kernel_id: str, code: str) -> tuple[dict, str]:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        session, msg_id = uuid.uuid4().hex, uuid.uuid4().hex
        ws = await websocket_connect(HTTPRequest(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?session_id={session}",
            headers={"Authorization": f"token {self.token}"}))
        try:
            await ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                           "session": session, "version": "5.3",
                           "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
            }))
            reply, idle, text = None, False, []
            while reply is None or not idle:
                raw = await ws.read_message()
                assert raw is not None, "the kernel websocket closed"
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream":
                    text.append(msg["content"]["text"])
                elif kind == "execute_reply":
                    reply = msg["content"]
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
            return reply, "".join(text)
        finally:
            ws.close()


def _read(server: Server) -> None:
    for line in server.proc.stdout:
        server.lines.append(line)
        m = URL.search(line)
        if m and not server.found.is_set():
            server.port, server.token = int(m.group(1)), m.group(2)
            server.found.set()


def _watch(server: Server, stop: threading.Event) -> None:
    """Note every process below `make run`, so that after the stop none may be left."""
    top = psutil.Process(server.proc.pid)
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            for p in top.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    server.seen.setdefault(p.pid, p.create_time())
        stop.wait(0.2)


def _still_running(seen: dict[int, float]) -> list[psutil.Process]:
    left = []
    for pid, created in seen.items():
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
    return left


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def make_run(checkout: str, env: dict, user: pwd.struct_passwd | None = None):
    """`make run` in `checkout` (as `user`), yielding the Server once JupyterLab printed its URL;
    afterwards SIGTERM to its process group, and check that nothing is left running or listening."""
    as_user = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    proc = subprocess.Popen(["make", "run", "JUPYTER_ARGS=--port=0"], cwd=checkout, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **as_user)
    server, stop = Server(proc), threading.Event()
    reader = threading.Thread(target=_read, args=(server,), daemon=True)
    watcher = threading.Thread(target=_watch, args=(server, stop), daemon=True)
    reader.start()
    watcher.start()
    try:
        deadline = time.monotonic() + START_BOUND
        while not server.found.wait(0.2):
            assert proc.poll() is None, f"make run ended ({proc.returncode}):\n{server.log}"
            assert time.monotonic() < deadline, f"no JupyterLab URL in {START_BOUND} s:\n{server.log}"
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            pytest.fail(f"make run did not stop within 30 s of SIGTERM:\n{server.log}")
        finally:
            stop.set()
            watcher.join(timeout=5)
            reader.join(timeout=5)
    deadline = time.monotonic() + 15
    while (left := _still_running(server.seen)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert not left, f"left running after the stop: {[(p.pid, p.name()) for p in left]}"
    assert not _listening(server.port), f"port {server.port} still listening after the stop"


def check_jupyterlab(server: Server, checkout: str, *, root: bool) -> None:
    """What a person gets from `make run`: the note and the URL, JupyterLab's kernelspecs with
    the three DCodeX kernels (installed by this run, into this checkout's venv), a notebook, and a
    kernel that starts."""
    server.wait_listening()
    log = server.log
    assert "Running as root is not recommended" not in log
    assert ("note: running as root" in log) == root, log
    status, specs = server.api("/api/kernelspecs")
    assert status == 200 and KERNELS <= set(specs["kernelspecs"]), specs
    venv_bin = os.path.join(os.path.realpath(checkout), ".venv", "bin")
    for name in KERNELS:
        spec = specs["kernelspecs"][name]["spec"]
        assert os.path.dirname(spec["argv"][0]) == venv_bin, spec["argv"]
        assert spec["display_name"].endswith("(DCodeX)") and spec["interrupt_mode"] == "message"

    status, nb = server.api(f"/api/contents/{NOTEBOOK}?content=1")
    assert status == 200 and nb["type"] == "notebook" and nb["content"]["cells"]
    assert nb["content"]["metadata"]["kernelspec"]["name"] in KERNELS

    # A kernel this server starts (as this server's user) runs a cell in the sandbox.
    status, kernel = server.api("/api/kernels", "POST", {"name": "dcodex-python"})
    assert status == 201, kernel
    try:
        reply, text = server.execute(kernel["id"], "import sys\nprint(6 * 7, sys.version_info[0])")
        assert reply["status"] == "ok" and text == "42 3\n", (reply, text, server.log)
    finally:
        assert server.api(f"/api/kernels/{kernel['id']}", "DELETE")[0] == 204


def headless_env(base: dict) -> dict:
    """No display (a server, CI): `make run` must not need a browser."""
    return {k: v for k, v in base.items()
            if k not in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER") and not k.startswith("JUPYTER_")}


def test_make_run_serves_jupyterlab_with_the_dcodex_kernels():
    with make_run(ROOT, headless_env(os.environ)) as server:
        check_jupyterlab(server, ROOT, root=os.geteuid() == 0)


# ---- the same as an ordinary user (when the suite runs as root) -----------------------------

def _ordinary_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("the suite runs as an ordinary user: the test above is this check")
    return ordinary_user(USER)


_NOT_COPIED = (".git", ".venv", ".venv-ipython8", "__pycache__", ".pytest_cache", ".hypothesis",
               "build", "test-artifacts")


def _checkout_files() -> list[str]:
    """The checkout's files as a clone has them, plus work not yet committed (not ignored)."""
    try:
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True)
        files = out.stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but these
        files = []
        for top, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in _NOT_COPIED and not d.endswith(".egg-info")]
            files += [os.path.relpath(os.path.join(top, n), ROOT) for n in names]
    return [f for f in files if f and os.path.lexists(os.path.join(ROOT, f))]


def _copy_checkout(user: pwd.struct_passwd) -> str:
    """A copy of the checkout in the user's home, owned by the user; its .venv is kept (one copy
    per checkout path, so two checkouts on a machine do not share one)."""
    tag = hashlib.sha1(os.path.realpath(ROOT).encode()).hexdigest()[:8]
    dest = os.path.join(user.pw_dir, f"dcodex-checkout-{tag}")
    os.makedirs(dest, exist_ok=True)
    for entry in os.scandir(dest):
        if entry.name in (".venv",):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    for rel in _checkout_files():
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), target, follow_symlinks=False)
    for top, dirs, files in os.walk(dest):
        if top == dest and ".venv" in dirs:
            dirs.remove(".venv")  # already the user's (made by the user)
        for name in [*dirs, *files]:
            os.chown(os.path.join(top, name), user.pw_uid, user.pw_gid, follow_symlinks=False)
    os.chown(dest, user.pw_uid, user.pw_gid)
    return dest


def _user_env(user: pwd.struct_passwd) -> dict:
    """A login-like environment for the user: no trace of root's home or root's venv."""
    env = {"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name,
           "PATH": "/usr/local/bin:/usr/bin:/bin", "SHELL": "/bin/sh"}
    for key, value in os.environ.items():
        if (key.startswith(("PIP_", "LC_")) or key in ("LANG", "TZ", "CI", "SSL_CERT_FILE",
                                                       "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
                or key.lower() in ("http_proxy", "https_proxy", "no_proxy")):
            env[key] = value
    return env


def test_make_run_as_an_ordinary_user():
    user = _ordinary_user()
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if python is None:
        pytest.skip("no python3 on the ordinary PATH for the ordinary user's venv")
    with open(os.path.join(user.pw_dir, ".dcodex-test.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one test run at a time uses the user's copy
        checkout = _copy_checkout(user)
        env = _user_env(user)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        # `make run` sets up too; done first on its own so that the run below has its usual
        # bound (the first time on a machine, or after pyproject.toml changed, a `pip install`).
        setup = subprocess.run(["make", "setup"], cwd=checkout, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=1200, **as_user)
        assert setup.returncode == 0, f"make setup as {USER} failed:\n{setup.stdout}\n{setup.stderr}"
        with make_run(checkout, env, user) as server:
            check_jupyterlab(server, checkout, root=False)
            proc = psutil.Process(server.proc.pid)
            servers = [p for p in proc.children(recursive=True) if "jupyter" in " ".join(p.cmdline())]
            assert servers and all(p.uids().real == user.pw_uid for p in servers)
