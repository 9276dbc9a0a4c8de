"""jaxeit.progress: stage lines and bars on stderr, the quiet switch, no tqdm noise in notebooks, warm timing."""

import io
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeit.progress import Progress, first_and_warm, quiet_from_env

ROOT = Path(__file__).resolve().parents[1]


def test_stage_lines_and_bar():
    out = io.StringIO()
    p = Progress(quiet=False, file=out)
    p.stage("meshing")
    for _ in p.bar(range(3), desc="methods", unit="method"):
        pass
    text = out.getvalue()
    assert "] meshing\n" in text and text.startswith("[")
    assert "methods" in text and "3/3" in text  # the bar ran to the end on this stream


def test_quiet(monkeypatch):
    out = io.StringIO()
    p = Progress(quiet=True, file=out)
    p.stage("meshing")
    assert list(p.bar(range(3))) == [0, 1, 2]  # still iterates
    assert out.getvalue() == ""
    monkeypatch.setenv("JAXEIT_QUIET", "1")
    assert quiet_from_env() and Progress().quiet
    monkeypatch.setenv("JAXEIT_QUIET", "0")
    assert not quiet_from_env() and not Progress().quiet


def test_default_stream_is_stderr(capsys):
    Progress(quiet=False).stage("calibrating")
    captured = capsys.readouterr()
    assert captured.out == "" and "calibrating" in captured.err


def test_first_and_warm():
    n = 64
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)))

    @jax.jit
    def f(x):
        return jnp.linalg.cholesky(x @ x.T + n * jnp.eye(n)).sum()

    out, first, warm = first_and_warm(f, a)
    np.testing.assert_allclose(out, f(a))
    assert first > warm > 0  # the first call compiles


def test_bar_in_a_notebook_kernel_is_quiet_about_ipywidgets(tmp_path):
    """In a Jupyter kernel, tqdm.auto would warn "IProgress not found" without ipywidgets; Progress does not."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import warnings\nwarnings.simplefilter('always')\n"
        "from jaxeit.progress import Progress\n"
        "p = Progress(quiet=False)\np.stage('iterating')\nfor _ in p.bar(range(5), desc='steps'):\n    pass")]
    env_path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = env_path
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "IProgress" not in text and "ipywidgets" not in text
    assert "iterating" in text
    widgets = [o for o in outputs if o.output_type == "display_data"]
    assert widgets or "5/5" in text  # a widget (with ipywidgets) or the text bar
