"""nbval set-up for the tutorial notebooks (`pytest --nbval notebooks/`).

- Kernel notebooks run on the real DCodeX kernelspecs, installed once per test session by
  `dcodex install --prefix <temp dir>` (see run_notebooks.prepare); notebooks whose kernel is
  `python3` run on ipykernel and load the magics with `%load_ext dcodex_kernel`. The environment
  that points Jupyter at them is applied only while nbval starts a notebook's kernel, so other
  tests in the same session see the process environment unchanged.
- The sanitize file nbval_sanitize.cfg beside this file is used unless --nbval-sanitize-with names
  another: it blanks what changes from run to run (timings, memory figures, run directories, the
  "cached build" flag), so every other byte of the stored outputs is compared.
- Cells that fail on purpose are tagged `raises-exception`; cells whose output depends on the
  machine (e.g. `%dcodex`, which lists the isolation layers in force) are tagged
  `nbval-ignore-output`. Tags work in every language; `# NBVAL_*` comments only in Python cells.
- `raises-exception` only *allows* a cell to fail: nbval finds a cell that no longer fails by
  comparing its outputs (the stored error is missing), which `nbval-ignore-output` turns off. So a
  cell with both tags (one whose stderr depends on the machine, e.g. a memory bomb: killed at its
  cgroup's limit as root, a failed allocation otherwise) is checked here instead: it must still
  end with the stored error, the same exception and (sanitized) message.
- To refresh the stored outputs after editing a notebook: `python notebooks/run_notebooks.py`.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SANITIZE = HERE / "nbval_sanitize.cfg"


def _load_runner():
    """notebooks/run_notebooks.py, whatever pytest's import mode (it is not a package)."""
    spec = importlib.util.spec_from_file_location("dcodex_run_notebooks", HERE / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_runner = _load_runner()
patched_environ, prepare = _runner.patched_environ, _runner.prepare

_session: dict = {}  # "tmp": the temp prefix, "changes": the environment for the kernels


def pytest_configure(config):
    if getattr(config.option, "nbval_sanitize_with", None) is None and hasattr(config.option, "nbval"):
        config.option.nbval_sanitize_with = str(SANITIZE)


def _is_notebook_cell(item) -> bool:
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:
        return False
    return isinstance(item, IPyNbCell)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    # nbval starts a notebook's kernel while setting up the notebook's first cell.
    if not _is_notebook_cell(item):
        yield
        return
    if "changes" not in _session:
        _session["tmp"] = Path(tempfile.mkdtemp(prefix="dcodex-notebooks-"))
        _session["changes"] = prepare(_session["tmp"])
    with patched_environ(_session["changes"]):
        yield


def pytest_collection_modifyitems(items):
    for item in items:
        if _is_notebook_cell(item) and item.options.get("check_exception") and not item.options.get("check"):
            item.runtest = _must_end_with_stored_error(item, item.runtest)


def _must_end_with_stored_error(item, runtest):
    """item.runtest, then: the live outputs end with the stored error (nbval compares nothing)."""

    def run():
        runtest()
        errors = [(out["ename"], item.sanitize(out["evalue"]))
                  for out in item.test_outputs or () if out.get("output_type") == "error"]
        stored = [(out["ename"], item.sanitize(out["evalue"]))
                  for out in item.cell.outputs if out.get("output_type") == "error"]
        if errors != stored:
            item.raise_cell_error(
                "Cell tagged raises-exception and nbval-ignore-output did not end with its stored error",
                f"stored: {stored}\nnow:    {errors}")

    return run


def pytest_unconfigure(config):
    tmp = _session.pop("tmp", None)
    _session.pop("changes", None)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
