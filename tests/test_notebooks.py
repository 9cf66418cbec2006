"""Static checks of the tutorial notebooks; `pytest --nbval notebooks/` runs them.

nbval compares only cells that were run (an unrun cell with no outputs passes unchecked), so the
stored notebooks must be whole runs: every code cell executed, in order, in one session. A cell
that fails must say it fails on purpose (tag `raises-exception`), and one so tagged must fail.
"""

from __future__ import annotations

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
