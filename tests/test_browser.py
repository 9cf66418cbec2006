"""JupyterLab in a real browser: a DCodeX C++ notebook run in headless Chromium.

The test starts JupyterLab on 127.0.0.1 (random port, token auth, every JUPYTER_* directory in a
temp dir so the user's own config is never read or touched) with the DCodeX kernelspecs installed
into a temp prefix, opens a notebook whose kernel is `dcodex-cpp` in Debian's `chromium` driven by
Playwright, clicks Run ▸ Run All Cells, and watches the cell's output arrive in the page while the
program is still running. A screenshot lands in `test-artifacts/`. Afterwards no process it
started (server, kernel, sandboxed program, browser) is left, and its temp dir is gone.

Needs: Debian's `chromium` and the `playwright` and `jupyterlab` Python packages (the project's
set-up installs them). Playwright's own browser download is never used.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
KERNEL = "dcodex-cpp"

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage",
]

# The program prints a line, then sleeps while the kernel is still busy, then prints another:
# seeing the first line in the page before the second proves the output streams live.
FIRST = "Hello from C++ in JupyterLab"
SECOND = "and goodbye, 1.5 s later"
CPP_CELL = f"""\
#include <chrono>
#include <iostream>
#include <thread>

int main() {{
    std::cout << "{FIRST}" << std::endl;
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    std::cout << "{SECOND}" << std::endl;
}}
"""


def _chromium() -> str:
    path = shutil.which("chromium")
    if not path:
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
    return path


def _descendants() -> set[psutil.Process]:
    return set(psutil.Process().children(recursive=True))


def _write_notebook(path: Path, kernel: str, prefix: Path) -> str:
    spec = json.loads((prefix / "share" / "jupyter" / "kernels" / kernel / "kernel.json").read_text())
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": spec["display_name"],
                                 "language": spec["language"]}
    intro = ("# DCodeX in the browser\n"
             "Each cell of this notebook is a whole C++ program; its output streams in as it runs.")
    nb.cells = [nbformat.v4.new_markdown_cell(intro),
                nbformat.v4.new_code_cell(CPP_CELL)]
    nbformat.write(nb, path)
    return spec["display_name"]


def _install_kernels(prefix: Path, env: dict) -> None:
    """`dcodex install --prefix`, as a user would run it (the kernels start with this Python)."""
    subprocess.run([sys.executable, "-m", "dcodex_kernel", "install", "--prefix", str(prefix)],
                   env=env, check=True, capture_output=True, timeout=60)


def _wait_for_server(runtime: Path, proc: subprocess.Popen, log: Path, deadline: float) -> dict:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        for info_file in glob.glob(str(runtime / "jpserver-*.json")):
            try:
                info = json.loads(Path(info_file).read_text())
            except (OSError, ValueError):
                continue  # being written
            try:
                url = f"http://127.0.0.1:{info['port']}/api/status?token={info['token']}"
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return info
            except OSError:
                pass
        time.sleep(0.2)
    pytest.fail(f"jupyter lab did not come up:\n{log.read_text()[-4000:]}")


@pytest.fixture
def lab():
    """A JupyterLab server on 127.0.0.1 with the DCodeX kernelspecs installed into a temp prefix."""
    before = _descendants()
    tmp = Path(tempfile.mkdtemp(prefix="dcodex-browser-"))
    dirs = {name: tmp / name for name in ("root", "config", "data", "runtime", "prefix", "ipython",
                                          "browser-home")}
    for d in dirs.values():
        d.mkdir()
    env = dict(os.environ,
               JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
               JUPYTER_PATH=str(dirs["prefix"] / "share" / "jupyter"),
               IPYTHONDIR=str(dirs["ipython"]))
    env.pop("JUPYTER_CONFIG_PATH", None)
    log = tmp / "jupyter.log"
    proc = info = None
    try:
        # No news or update checks: they would reach outside 127.0.0.1.
        settings = dirs["config"] / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        _install_kernels(dirs["prefix"], env)
        display_name = _write_notebook(dirs["root"] / "NB.ipynb", KERNEL, dirs["prefix"])

        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
                 "--port=0", "--port-retries=0", f"--ServerApp.root_dir={dirs['root']}",
                 "--IdentityProvider.token=" + os.urandom(16).hex(),
                 "--LabApp.news_url=None",
                 "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                 "--LabApp.extension_manager=readonly"]
                + (["--allow-root"] if os.geteuid() == 0 else []),
                cwd=dirs["root"], env=env, stdout=log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        info = _wait_for_server(dirs["runtime"], proc, log, time.monotonic() + 90)
        yield {"url": f"http://127.0.0.1:{info['port']}", "token": info["token"],
               "notebook": "NB.ipynb", "display_name": display_name, "pid": proc.pid,
               "browser_home": dirs["browser-home"]}
    finally:
        started = _descendants() - before
        if info is not None and proc.poll() is None:
            try:  # the polite way: the server shuts its kernels down itself
                req = urllib.request.Request(
                    f"http://127.0.0.1:{info['port']}/api/shutdown", method="POST",
                    headers={"Authorization": f"token {info['token']}"})
                urllib.request.urlopen(req, timeout=10).close()
            except OSError:
                pass
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _gone, alive = psutil.wait_procs(list(started), timeout=10)
        server_log = log.read_text(errors="replace") if log.exists() else ""
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "jupyterlab-server.log").write_text(server_log)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}\n{server_log[-3000:]}"
        assert not tmp.exists()


def test_run_cpp_cell_in_jupyterlab(lab):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "jupyterlab-dcodex-cpp.png"
    shot.unlink(missing_ok=True)
    before = _descendants()
    external: list[str] = []

    def only_loopback(route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")):
            route.continue_()
        else:
            external.append(url)
            route.abort()

    with sync_playwright() as pw:
        home = lab["browser_home"]  # Chromium's crash-report and cache dirs: not the user's
        browser = pw.chromium.launch(
            executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS,
            env=dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                     XDG_CACHE_HOME=str(home / ".cache")))
        page = None
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.route("**/*", only_loopback)
            page.goto(f"{lab['url']}/lab/tree/{lab['notebook']}?token={lab['token']}",
                      timeout=60_000)
            # The notebook is open and its DCodeX kernel is up and idle (the status bar says so).
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            kernel_status = page.locator(".jp-StatusBar-TextItem",
                                         has_text=f"{lab['display_name']} | Idle")
            kernel_status.first.wait_for(timeout=60_000)

            # Run ▸ Run All Cells, the way a person would do it.
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            run_all = page.locator("li.lm-Menu-item[data-command='runmenu:run-all']")
            assert run_all.locator(".lm-Menu-itemLabel").inner_text() == "Run All Cells"
            run_all.click()

            outputs = page.locator(".jp-OutputArea-output")
            first = outputs.filter(has_text=FIRST)
            first.first.wait_for(timeout=60_000)
            t_first = time.monotonic()
            # Streamed: the first line is on the page while the program still sleeps.
            seen_early = page.locator(".jp-OutputArea-output", has_text=SECOND).count()
            busy = page.locator(".jp-StatusBar-TextItem",
                                has_text=f"{lab['display_name']} | Busy").count()
            outputs.filter(has_text=SECOND).first.wait_for(timeout=30_000)
            t_second = time.monotonic()
            kernel_status.first.wait_for(timeout=30_000)
            prompt = page.locator(".jp-Cell.jp-CodeCell .jp-InputPrompt").first.inner_text()
            kernel_name = page.locator(".jp-KernelName, .jp-Toolbar-kernelName").first.inner_text()
            page.screenshot(path=str(shot), full_page=True)
            text = page.locator(".jp-CodeCell .jp-OutputArea").first.inner_text()
        except Exception:
            if page is not None:  # what the page showed, for whoever reads the failure
                page.screenshot(path=str(ARTIFACTS / "jupyterlab-failure.png"), full_page=True)
                (ARTIFACTS / "jupyterlab-failure.html").write_text(page.content())
            raise
        finally:
            browser.close()

    assert shot.exists() and shot.stat().st_size > 10_000
    assert seen_early == 0, "the whole output arrived at once, not streamed"
    assert busy == 1, "the kernel was not busy when the first line appeared"
    assert t_second - t_first > 0.8, f"second line only {t_second - t_first:.2f} s after the first"
    assert FIRST in text and SECOND in text
    assert "[1]" in prompt
    assert kernel_name == lab["display_name"]
    assert "error" not in text.lower()
    assert not external, f"the page tried to reach outside 127.0.0.1: {external}"
    # The browser and Playwright's driver are gone (the server and its kernel go with `lab`).
    server = psutil.Process(lab["pid"])
    mine = _descendants() - before - {server} - set(server.children(recursive=True))
    _gone, alive = psutil.wait_procs(list(mine), timeout=10)
    assert not alive, f"browser processes left: {[(p.pid, p.name()) for p in alive]}"
