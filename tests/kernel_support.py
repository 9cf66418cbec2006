"""Real DCodeX kernels for tests, started through jupyter_client and kept away from the user's
Jupyter directories: the kernelspecs are installed into a temporary prefix, connection files,
IPython and Jupyter dirs and the build cache live under it too."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from dcodex_kernel.kernelspec import install
from dcodex_kernel.request import Limits

_root: str | None = None


def root() -> str:
    """A temporary prefix holding the three kernelspecs (installed once per test process)."""
    global _root
    if _root is None:
        _root = tempfile.mkdtemp(prefix="dcodex-kernel-tests-")
        atexit.register(shutil.rmtree, _root, True)
        install(prefix=_root)
    return _root


def shared_pch_store():
    """The precompiled-header store of the test kernels (their XDG cache), shared with the
    engine tests' backend, which fills it once up front."""
    from pathlib import Path

    from dcodex_kernel.pch import PchStore

    return PchStore(Path(root()) / "cache" / "dcodex" / "pch")


def ipykernel_dirs(parent, name: str) -> list[str]:
    """`kernel_dirs` holding one kernelspec `name`: an ipykernel of this interpreter (so it
    imports this checkout), for the magics in a real kernel."""
    import json
    import sys

    spec = os.path.join(str(parent), name)
    os.makedirs(spec)
    with open(os.path.join(spec, "kernel.json"), "w") as f:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                   "display_name": name, "language": "python", "interrupt_mode": "signal"}, f)
    return [str(parent)]


def kernels_dir() -> str:
    return os.path.join(root(), "share", "jupyter", "kernels")


def spec_manager(kernel_dirs: list[str] | None = None) -> KernelSpecManager:
    return KernelSpecManager(kernel_dirs=kernel_dirs or [kernels_dir()])


def kernel_env(extra: dict | None = None) -> dict:
    base = root()
    env = {k: v for k, v in os.environ.items() if k not in Limits.ENV}  # the user's own limits
    env.update(
        IPYTHONDIR=os.path.join(base, "ipython"),
        JUPYTER_RUNTIME_DIR=os.path.join(base, "runtime"),
        JUPYTER_DATA_DIR=os.path.join(base, "data"),
        JUPYTER_CONFIG_DIR=os.path.join(base, "config"),
        XDG_CACHE_HOME=os.path.join(base, "cache"),  # a build cache of our own
    )
    env.update(extra or {})
    return env


def start_kernel(name: str, env: dict | None = None, *, channels: bool = True,
                 kernel_dirs: list[str] | None = None):
    """→ (KernelManager, BlockingKernelClient) for a ready kernel (or, without `channels`, a
    just-started kernel and a client that has not connected yet). `kernel_dirs`: look for the
    kernelspec there instead of among the DCodeX ones."""
    km = KernelManager(kernel_name=name, kernel_spec_manager=spec_manager(kernel_dirs),
                       connection_file=os.path.join(root(), f"kernel-{uuid.uuid4().hex}.json"))
    km.start_kernel(env=kernel_env(env))
    kc = km.client()
    if not channels:
        return km, kc
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
    except BaseException:
        stop_kernel(km, kc)
        raise
    return km, kc


def stop_kernel(km, kc) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=False)


@dataclass
class Run:
    """What one execute_request produced, with client-side arrival times (monotonic s)."""

    reply: dict
    outputs: list = field(default_factory=list)  # (arrival, msg_type, content)
    started: float = 0.0
    idle_at: float = 0.0

    @property
    def status(self) -> str:
        return self.reply["content"]["status"]

    @property
    def result(self) -> dict:
        return self.reply["metadata"].get("dcodex", {})

    def text(self, stream: str | None = None) -> str:
        return "".join(c["text"] for _, kind, c in self.outputs
                       if kind == "stream" and (stream is None or c["name"] == stream))

    @property
    def errors(self) -> list[dict]:
        return [c for _, kind, c in self.outputs if kind == "error"]

    @property
    def kinds(self) -> list[str]:
        return [kind for _, kind, _ in self.outputs]


def execute(kc, code: str, timeout: float = 30, on_output=None, **kw) -> Run:
    """Run a cell; collect its outputs (until the kernel is idle again) and its reply."""
    started = time.monotonic()
    msg_id = kc.execute(code, **kw)
    return collect(kc, msg_id, started, timeout, on_output)


def collect(kc, msg_id: str, started: float, timeout: float = 30, on_output=None) -> Run:
    deadline = started + timeout
    outputs = []
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            idle_at = time.monotonic()
            break
        if kind in ("stream", "error", "display_data", "execute_result"):
            outputs.append((time.monotonic(), kind, msg["content"]))
            if on_output:
                on_output(kind, msg["content"])
    while True:
        reply = kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return Run(reply, outputs, started, idle_at)
