"""The notebooks in notebooks/ run top to bottom in fast mode (JAXEIT_FAST=1: coarse meshes, few iterations)."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _execute(path, monkeypatch):
    """Run a notebook in a fresh kernel that imports this checkout's jaxeit; returns the executed notebook."""
    monkeypatch.setenv("JAXEIT_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel is a child process: put this checkout first on its path, not an installed copy
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{path.name} has committed outputs: strip them (jupyter nbconvert --clear-output)"
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    return nb


def _printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.output_type == "stream")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    from nbclient.exceptions import DeadKernelError

    try:
        nb = _execute(path, monkeypatch)
    except DeadKernelError:
        # a kernel killed from outside (seen once on the shared 2-core machine, not reproducible alone)
        # gets one more try; an error inside a cell is a CellExecutionError and fails at once
        nb = _execute(path, monkeypatch)
    if path.stem.startswith("04") and "data not found" not in _printed(nb):
        assert "score" in _printed(nb)  # with the data, the KTC target was scored


def test_real_data_notebook_without_data(monkeypatch, tmp_path):
    """Without the data folder the real-data notebook still runs and says where to point JAXEIT_DATA."""
    monkeypatch.setenv("JAXEIT_DATA", str(tmp_path))
    nb = _execute(ROOT / "notebooks" / "04_real_data.ipynb", monkeypatch)
    out = _printed(nb)
    assert "data not found: set JAXEIT_DATA" in out and str(tmp_path) in out


def test_there_are_notebooks():
    names = {p.stem for p in NOTEBOOKS}
    assert {"01_forward_and_classical", "02_diff_inr", "03_dgm_comparison", "04_real_data"} <= names, \
        os.listdir(ROOT / "notebooks")


def test_rendered_notebooks_are_complete_and_linked():
    """`make docs` output: one Markdown page per notebook, linked from the README, its figures present, small."""
    import re

    docs = ROOT / "docs" / "notebooks"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    total = 0
    for nb in NOTEBOOKS:
        page = docs / f"{nb.stem}.md"
        assert page.is_file(), f"{page.name} missing: run `make docs`"
        assert f"docs/notebooks/{nb.stem}.md" in readme, f"README does not link {page.name}"
        text = page.read_text(encoding="utf-8")
        images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
        assert images, f"{page.name} shows no figure"
        for name in images:
            assert (docs / name).is_file(), f"{page.name} links {name}, which is missing"
            total += (docs / name).stat().st_size
        total += page.stat().st_size
    assert total < 5e6, f"rendered notebooks take {total / 1e6:.1f} MB; keep them under 5 MB"
