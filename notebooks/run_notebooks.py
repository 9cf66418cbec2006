"""Run the tutorial notebooks top to bottom and store their real outputs (what nbval compares).

    .venv/bin/python notebooks/run_notebooks.py                 # every notebook here
    .venv/bin/python notebooks/run_notebooks.py notebooks/03-cpp-kernel.ipynb

Each notebook runs with nbclient on the kernel its metadata names, in the same environment
`pytest --nbval notebooks/` uses (see `prepare`). A cell that fails without the
`raises-exception` tag stops the run and nothing is written. Run it after editing a notebook, then
check `pytest --nbval notebooks/` passes and look at the diff before committing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
SANITIZE = HERE / "nbval_sanitize.cfg"


def prepare(tmp: Path) -> dict[str, str | None]:
    """Set up the notebooks' environment under `tmp`; return the variables to set (None: unset).

    - the DCodeX kernelspecs, installed by `dcodex install --prefix` into `tmp`, which comes first
      on JUPYTER_PATH: the kernels are this checkout's, whatever else is installed;
    - IPython and Jupyter runtime state in `tmp` (no user profile or startup files);
    - none of the DCODEX_* limit variables, so the outputs show the documented defaults.
    """
    from dcodex_kernel.request import Limits

    subprocess.run([sys.executable, "-m", "dcodex_kernel", "install", "--prefix", str(tmp)],
                   check=True, capture_output=True, text=True, timeout=120)
    jupyter_path = [str(tmp / "share" / "jupyter")]
    if os.environ.get("JUPYTER_PATH"):
        jupyter_path.append(os.environ["JUPYTER_PATH"])
    changes: dict[str, str | None] = {
        "JUPYTER_PATH": os.pathsep.join(jupyter_path),
        "IPYTHONDIR": str(tmp / "ipython"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
    }
    changes.update({var: None for var in Limits.ENV})
    return changes


@contextmanager
def patched_environ(changes: dict[str, str | None]):
    """os.environ with `changes` applied (kernels started meanwhile inherit it), then restored."""
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def notebook_environment():
    tmp = Path(tempfile.mkdtemp(prefix="dcodex-notebooks-"))
    try:
        with patched_environ(prepare(tmp)):
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_notebook(path: Path, timeout: int = 120) -> None:
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    before = [cell.get("outputs") for cell in nb.cells]
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name=nb.metadata["kernelspec"]["name"],
        resources={"metadata": {"path": str(path.parent)}},  # cwd = the notebook's folder, as nbval
        allow_errors=False,  # only cells tagged raises-exception may fail
        record_timing=False)
    client.execute()
    patterns = sanitize_patterns()
    for cell, old in zip(nb.cells, before):
        if cell.cell_type == "code" and "nbval-skip" in cell.metadata.get("tags", []):
            # A cell nbval skips (an interactive one, which waits for a person): nbclient ran it
            # without input; keep the stored outputs of a run where someone answered.
            cell.outputs = old if old is not None else cell.outputs
        elif cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
            # Keep the stored outputs where only timings and the like differ: a diff then shows
            # real changes only.
            if old is not None and _sanitized(old, patterns) == _sanitized(cell.outputs, patterns):
                cell.outputs = old
    nbformat.write(nb, path)


def sanitize_patterns() -> list[tuple[str, str]]:
    """The (regex, replacement) pairs of nbval_sanitize.cfg, read as nbval reads them."""
    return re.findall(r"^regex: (.*)$\n^replace: (.*)$", SANITIZE.read_text(), flags=re.MULTILINE)


def _sanitized(value, patterns):
    if isinstance(value, str):
        for regex, replacement in patterns:
            value = re.sub(regex, replacement, value)
        return value
    if isinstance(value, dict):
        return {k: _sanitized(v, patterns) for k, v in value.items() if k != "execution_count"}
    if isinstance(value, list):
        return [_sanitized(v, patterns) for v in value]
    return value


def merge_streams(outputs: list) -> list:
    """Join consecutive stream outputs of the same name, as JupyterLab shows and saves them.

    A kernel may send a program's output in many small pieces (every write of an unbuffered
    program is one); the stored notebook keeps one output per run of text instead. nbval joins
    streams the same way before comparing, so this changes nothing it checks."""
    merged: list = []
    for out in outputs:
        if (out.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == out.name):
            merged[-1].text += out.text
        else:
            merged.append(out)
    return merged


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or sorted(HERE.glob("*.ipynb"))
    with notebook_environment():
        for path in paths:
            print(f"running {path} ...", flush=True)
            run_notebook(path.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
