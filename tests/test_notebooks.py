"""Checks of the tutorial notebooks and their nbval set-up (`pytest --nbval notebooks/` runs them).

nbval compares only cells that were run (an unrun cell with no outputs passes unchecked), so the
stored notebooks must be whole runs: every code cell executed, in order, in one session. A cell
that fails must say it fails on purpose (tag `raises-exception`), and one so tagged must fail.
The sanitizer must blank what differs between runs and engine modes, and nothing else; a cell
whose outputs nbval ignores must still end with its stored error (notebooks/conftest.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
KERNELS = {"python3", "dcodex-c", "dcodex-cpp", "dcodex-python"}


def test_there_are_tutorials():
    assert len(ALL) >= 5


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_is_a_whole_stored_run(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name in KERNELS
    assert nb.cells and nb.cells[0].cell_type == "markdown", "start with a title and a why"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        "store the outputs of one top-to-bottom run (notebooks/run_notebooks.py)"
    for i, cell in enumerate(code, 1):
        tags = cell.metadata.get("tags", [])
        failed = any(o.output_type == "error" for o in cell.outputs)
        assert failed == ("raises-exception" in tags), \
            f"cell [{i}]: an error output and the raises-exception tag go together"
        assert "NBVAL_" not in cell.source or nb.metadata.kernelspec.language == "python", \
            f"cell [{i}]: # NBVAL_ comments work only in Python cells; use tags"


def test_readme_lists_every_notebook():
    readme = (NOTEBOOKS / "README.md").read_text()
    for path in ALL:
        assert f"`{path.name}`" in readme


def _sanitize(text: str) -> str:
    spec = importlib.util.spec_from_file_location("dcodex_run_notebooks", NOTEBOOKS / "run_notebooks.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    return runner._sanitized(text, runner.sanitize_patterns())


@pytest.mark.parametrize("confined, host", [
    ('File "/box/main.py", line 1', 'File "/tmp/dcodex-run-21366-k_gb3oz6/main.py", line 1'),
    ("CPU time limit of 1 s exceeded (1.01 s used)", "CPU time limit of 1 s exceeded (1.20 s used)"),
    ("CPU time limit of 1 s exceeded (1.01 s used)", "CPU time limit of 1 s exceeded (2.03 s used by 3 processes)"),
    ("\x1b[2m19 ms wall, 7 ms cpu, 1.0 MiB peak, cached build\x1b[0m", "\x1b[2m3 ms wall, 2 ms cpu, 3.4 MiB peak\x1b[0m"),
    ("[dcodex] ok (44 ms wall, 24 ms cpu, 3.7 MiB peak, replayed from the server's result cache)",
     "[dcodex] ok (5 ms wall, 2 ms cpu, 1.2 MiB peak, cached build)"),
    ("7 ms wall, 3 ms cpu, 0.9 MiB peak, replayed from the server's result cache", "7 ms wall, 3 ms cpu, 0.9 MiB peak"),
    # a --cases table: its time and memory columns' widths move the spaces around them
    ("case  verdict   time   memory  detail\n1     accepted  7 ms  1.3 MiB  1 + 4 = 5\n",
     "case  verdict    time   memory  detail\n1     accepted  12 ms  10.3 MiB  1 + 4 = 5\n"),
    ('<td style="text-align:right">7 ms</td><td style="text-align:right">1.3 MiB</td>',
     '<td style="text-align:right">12 ms</td><td style="text-align:right">0.8 MiB</td>'),
])
def test_sanitizer_blanks_what_differs_between_runs_and_engine_modes(confined, host):
    assert _sanitize(confined) == _sanitize(host)


def test_sanitizer_keeps_the_rest():
    for text in ("/srv/box/data", "mailbox/x", "CPU time limit of 1 s exceeded", "Memory limit of 64 MiB reached"):
        assert _sanitize(text) == text


def test_a_cell_whose_output_is_ignored_must_still_raise_its_stored_error(tmp_path):
    """notebooks/conftest.py checks cells tagged raises-exception and nbval-ignore-output: nbval
    alone would pass them whether they fail or not."""
    for name in ("conftest.py", "run_notebooks.py", "nbval_sanitize.cfg"):
        shutil.copy(NOTEBOOKS / name, tmp_path / name)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    both = {"tags": ["raises-exception", "nbval-ignore-output"]}

    def cell(n, source, ename, evalue):
        error = nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[])
        return nbformat.v4.new_code_cell(source, execution_count=n, metadata=both, outputs=[error])

    nb.cells = [
        cell(1, "import sys; print('noise', file=sys.stderr); raise ValueError('took 12 ms')",
             "ValueError", "took 3 ms"),
        cell(2, "print('no error')", "ValueError", "boom"),
        cell(3, "raise KeyError('other')", "ValueError", "boom"),
    ]
    nbformat.write(nb, tmp_path / "check.ipynb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "-p", "no:cacheprovider", "-q", "check.ipynb"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert "2 failed, 1 passed" in out, out
    assert "check.ipynb::Cell 1 " in out and "check.ipynb::Cell 2 " in out, out
    assert out.count("did not end with its stored error") >= 2, out
