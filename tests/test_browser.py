"""JupyterLab in a real browser: a DCodeX C++ notebook run in headless Chromium.

The test starts JupyterLab on 127.0.0.1 (random port, token auth, every JUPYTER_* directory in a
temp dir so the user's own config is never read or touched) with the DCodeX kernelspecs installed
into a temp prefix, opens a notebook whose kernel is `dcodex-cpp` in Debian's `chromium` driven by
Playwright, clicks Run ▸ Run All Cells, and watches the cell's output arrive in the page while the
program is still running; then it stops a never-ending program with the toolbar's interrupt
button. Screenshots land in `test-artifacts/`. Afterwards no process the tests started (server,
kernels, sandboxed programs, browser) is left, and their temp dir is gone.

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
from contextlib import contextmanager
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


def _write_notebook(lab: dict, name: str, code: str) -> str:
    """A notebook on the `dcodex-cpp` kernel in the server's root dir; returns its name."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": lab["display_name"],
                                 "language": "c++"}
    intro = ("# DCodeX in the browser\n"
             "Each cell of this notebook is a whole C++ program; its output streams in as it runs.")
    nb.cells = [nbformat.v4.new_markdown_cell(intro), nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, lab["root"] / name)
    return name


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


@pytest.fixture(scope="module")
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
        spec = dirs["prefix"] / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json"
        display_name = json.loads(spec.read_text())["display_name"]

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
               "root": dirs["root"], "display_name": display_name, "pid": proc.pid,
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


@contextmanager
def _browser(lab: dict, failure_name: str):
    """A page in headless Chromium that may reach 127.0.0.1 only; on failure, a screenshot and the
    page's HTML land in test-artifacts/. Afterwards the browser and Playwright's driver are gone."""
    ARTIFACTS.mkdir(exist_ok=True)
    server = psutil.Process(lab["pid"])
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
            yield page
        except Exception:
            if page is not None:
                page.screenshot(path=str(ARTIFACTS / f"{failure_name}-failure.png"), full_page=True)
                (ARTIFACTS / f"{failure_name}-failure.html").write_text(page.content())
            raise
        finally:
            browser.close()
    assert not external, f"the page tried to reach outside 127.0.0.1: {external}"
    # The kernels belong to the server (the `lab` fixture checks them); nothing else may remain.
    mine = _descendants() - before - {server} - set(server.children(recursive=True))
    _gone, alive = psutil.wait_procs(list(mine), timeout=10)
    assert not alive, f"browser processes left: {[(p.pid, p.name()) for p in alive]}"


def _open_and_run_all(page, lab: dict, notebook: str, display_name: str | None = None):
    """Open the notebook, wait until its DCodeX kernel (`display_name`: the C++ one unless
    given) is idle, then Run ▸ Run All Cells, the way a person would. Returns the status-bar
    locator for "<kernel> | Idle"."""
    # A workspace of its own, reset: only this notebook is open (JupyterLab would otherwise
    # restore the tabs of an earlier test, whose kernel has the same name in the status bar).
    workspace = Path(notebook).stem
    page.goto(f"{lab['url']}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={lab['token']}",
              timeout=60_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    idle = page.locator(".jp-StatusBar-TextItem",
                        has_text=f"{display_name or lab['display_name']} | Idle").first
    idle.wait_for(timeout=60_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    run_all = page.locator("li.lm-Menu-item[data-command='runmenu:run-all']")
    assert run_all.locator(".lm-Menu-itemLabel").inner_text() == "Run All Cells"
    run_all.click()
    return idle


def test_run_cpp_cell_in_jupyterlab(lab):
    shot = ARTIFACTS / "jupyterlab-dcodex-cpp.png"
    shot.unlink(missing_ok=True)
    notebook = _write_notebook(lab, "NB.ipynb", CPP_CELL)
    with _browser(lab, "jupyterlab-dcodex-cpp") as page:
        idle = _open_and_run_all(page, lab, notebook)
        outputs = page.locator(".jp-OutputArea-output")
        outputs.filter(has_text=FIRST).first.wait_for(timeout=60_000)
        t_first = time.monotonic()
        # Streamed: the first line is on the page while the program still sleeps.
        seen_early = outputs.filter(has_text=SECOND).count()
        busy = page.locator(".jp-StatusBar-TextItem",
                            has_text=f"{lab['display_name']} | Busy").count()
        outputs.filter(has_text=SECOND).first.wait_for(timeout=30_000)
        t_second = time.monotonic()
        idle.wait_for(timeout=30_000)
        prompt = page.locator(".jp-Cell.jp-CodeCell .jp-InputPrompt").first.inner_text()
        kernel_name = page.locator(".jp-KernelName, .jp-Toolbar-kernelName").first.inner_text()
        page.screenshot(path=str(shot), full_page=True)
        text = page.locator(".jp-CodeCell .jp-OutputArea").first.inner_text()

    assert shot.exists() and shot.stat().st_size > 10_000
    assert seen_early == 0, "the whole output arrived at once, not streamed"
    assert busy == 1, "the kernel was not busy when the first line appeared"
    assert t_second - t_first > 0.8, f"second line only {t_second - t_first:.2f} s after the first"
    assert FIRST in text and SECOND in text
    assert "[1]" in prompt
    assert kernel_name == lab["display_name"]
    assert "error" not in text.lower()


TICKING_CELL = """\
#include <chrono>
#include <iostream>
#include <thread>

int main() {
    for (int i = 0; ; ++i) {
        std::cout << "tick " << i << std::endl;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
}
"""


def test_interrupt_button_stops_a_cpp_program(lab):
    """The toolbar's ■ button stops a running program at once; the kernel stays ready."""
    notebook = _write_notebook(lab, "interrupt.ipynb", TICKING_CELL)
    with _browser(lab, "jupyterlab-interrupt") as page:
        idle = _open_and_run_all(page, lab, notebook)
        output = page.locator(".jp-CodeCell .jp-OutputArea").first
        page.locator(".jp-OutputArea-output", has_text="tick 3").first.wait_for(timeout=60_000)
        page.locator("[data-command='notebook:interrupt-kernel']").first.click()
        clicked = time.monotonic()
        page.locator(".jp-OutputArea-output", has_text="Interrupted").first.wait_for(timeout=10_000)
        stopped_after = time.monotonic() - clicked
        idle.wait_for(timeout=10_000)
        ticks = output.inner_text().count("tick ")
        time.sleep(1.0)  # a program still running would print five more ticks meanwhile
        ticks_later = output.inner_text().count("tick ")
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-interrupt.png"), full_page=True)

    assert stopped_after < 5, f"the cell ended {stopped_after:.1f} s after the click"
    assert ticks_later == ticks, "the program kept printing after the interrupt"


def test_the_test_cases_tutorial_shows_its_table(lab):
    """notebooks/08-test-cases.ipynb (C kernel), its stored outputs removed, run in the page: the
    cases are written by the notebook's own cells, and the wrong solution's table of verdicts
    appears as an HTML table, with its summary and the one TestsFailed error (Run All stops
    there, as it should)."""
    nb = nbformat.read(ROOT / "notebooks" / "08-test-cases.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, lab["root"] / "08-test-cases.ipynb")
    spec = Path(lab["root"]).parent / "prefix" / "share" / "jupyter" / "kernels" / "dcodex-c" / "kernel.json"
    c_kernel = json.loads(spec.read_text())["display_name"]
    with _browser(lab, "jupyterlab-test-cases") as page:
        idle = _open_and_run_all(page, lab, "08-test-cases.ipynb", c_kernel)
        tables = page.locator("table.dcodex-cases")
        # Five runs with cases; the wrong solution's cell is tagged raises-exception, so Run All
        # goes on past its TestsFailed.
        tables.nth(4).wait_for(state="attached", timeout=120_000)
        idle.wait_for(timeout=30_000)
        count = tables.count()
        table = tables.first
        rows = [[cell.text_content().strip() for cell in row.locator("td").all()]
                for row in table.locator("tbody tr").all()]
        headings = [h.text_content().strip() for h in table.locator("th").all()]
        first = page.locator(".jp-OutputArea", has=page.locator("table.dcodex-cases")).first.text_content()
        last = page.locator(".jp-OutputArea", has=page.locator("table.dcodex-cases")).last.text_content()
        colour = table.locator("tbody tr td:nth-child(2)").first.evaluate("e => getComputedStyle(e).color")
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-test-cases.png"), full_page=True)

    assert count == 5
    assert headings == ["case", "verdict", "time", "memory", "detail"]
    assert [row[:2] for row in rows] == [["1", "wrong_answer"], ["2", "accepted"], ["10", "accepted"]]
    assert rows[0][4] == "line 1: expected '2.333333', got '2.000000'"
    assert all(row[2].endswith(" ms") for row in rows)
    assert "2/3 accepted" in first and "TestsFailed" in first and "1 of 3 cases failed" in first
    assert colour == "rgb(207, 34, 46)"  # wrong_answer in red
    # The last: --show-output's case headers above the checker's table and its comments.
    assert last.index("=== case 1 ===") < last.index("=== case 3 ===") < last.index("500000 + 500000 = 1000000")
    assert "3/3 accepted" in last and "TestsFailed" not in last


ASKING_CELL = """\
#include <iostream>
#include <string>

int main() {
    std::string name;
    std::cout << "Starting." << std::endl;
    std::cout << "What is your name? ";
    std::cin >> name;
    std::cout << "Hello, " << name << "!" << std::endl;
}
"""


def test_a_program_asks_in_an_input_box(lab):
    """std::cin in a cell: an input box with the program's prompt appears below its output; the
    answer typed there reaches the program (interactive stdin, issue 11)."""
    notebook = _write_notebook(lab, "ask.ipynb", ASKING_CELL)
    with _browser(lab, "jupyterlab-input") as page:
        idle = _open_and_run_all(page, lab, notebook)
        box = page.locator(".jp-Stdin-input").first
        box.wait_for(timeout=60_000)
        prompt = page.locator(".jp-Stdin-prompt").first.inner_text()
        before = page.locator(".jp-CodeCell .jp-OutputArea").first.inner_text()
        box.fill("Ada")
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-input.png"), full_page=True)
        box.press("Enter")
        page.locator(".jp-OutputArea-output", has_text="Hello, Ada!").first.wait_for(timeout=30_000)
        idle.wait_for(timeout=30_000)
        text = page.locator(".jp-CodeCell .jp-OutputArea").first.inner_text()

    assert prompt.strip() == "What is your name?"
    assert "Starting." in before  # the output printed so far came before the box
    assert "Hello, Ada!" in text and "error" not in text.lower()
