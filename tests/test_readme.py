"""Every ```python block of README.md runs verbatim, each in a fresh interpreter, as a reader would paste it."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_readme_has_a_quick_start():
    text = README.read_text(encoding="utf-8")
    assert BLOCKS, "README.md has no ```python block"
    assert "## Quick start" in text and "plot.compare" in BLOCKS[0]


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code, tmp_path):
    """Run a block in a subprocess (cwd: an empty folder); figures it writes must be PNG files."""
    # a compilation cache of its own: the suite's parallel workers never read an entry another is writing
    env = dict(os.environ, MPLBACKEND="Agg", JAXEIT_QUIET="1", JAXEIT_CACHE_DIR=str(tmp_path / "xla"),
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"README block failed after {seconds:.0f} s:\n{proc.stderr[-3000:]}"
    for name in re.findall(r"""["']([\w./-]+\.png)["']""", code):
        png = tmp_path / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name} was not written"


def _command_lines() -> list[str]:
    """The `jaxeit ...` lines of the README's "Command line" section (comments dropped)."""
    section = README.read_text(encoding="utf-8").split("## Command line", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```bash\n(.*?)^```", section, flags=re.S | re.M).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("jaxeit ")]


def test_readme_command_lines_exist():
    lines = _command_lines()
    assert any(" demo" in line for line in lines) and sum("reconstruct" in line for line in lines) >= 3


@pytest.mark.parametrize("line", _command_lines())
def test_readme_command_line_runs(line, tmp_path):
    """Each command line runs verbatim in an empty folder, real data found through $JAXEIT_DATA; the
    user's own `data.npz` is simulated first (a 16-electrode unit disk with an inclusion)."""
    import shlex

    import jax.numpy as jnp
    import numpy as np

    from jaxeit import ForwardModel, io, mesh, protocol

    data = io.data_dir()
    for folder in ("kit4", "ktc2023"):
        if f" {folder}/" in line and not (data / folder).is_dir():
            pytest.skip(f"real data not found at {data / folder} (set JAXEIT_DATA)")
    if "data.npz" in line:
        m = mesh.disk(h=0.1)
        sigma = 1.0 + 0.5 * (np.linalg.norm(m.centroids() - [0.3, 0.2], axis=1) < 0.35)
        v = ForwardModel(m, protocol.adjacent(16), contact_impedance=0.01).voltages(jnp.asarray(sigma))
        np.savez(tmp_path / "data.npz", v=np.asarray(v))
    # a compilation cache of its own (as above)
    env = dict(os.environ, MPLBACKEND="Agg", JAXEIT_DATA=str(data), JAXEIT_CACHE_DIR=str(tmp_path / "xla"),
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    # faulthandler: a crash in native code (seen twice, rarely, at the first compilation of `demo --quick`
    # under a loaded CPU) leaves the Python stack of every thread in the message below
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "jaxeit.cli", *shlex.split(line)[1:]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"`{line}` failed:\n{proc.stderr[-3000:]}"
    words = shlex.split(line)
    if words[1] == "reconstruct":
        written = sorted(p.name for p in (tmp_path / "out").iterdir())
        stem = Path(words[2]).stem
        assert any(n.startswith(stem) and n.endswith(".npz") for n in written), written
        assert any(n.startswith(stem) and n.endswith(".png") for n in written), written
        assert "%" in proc.stderr or "[" in proc.stderr, "no progress on stderr"
    elif words[1] == "demo":
        assert (tmp_path / "out" / "demo.png").is_file() and "compile s" in proc.stdout
    else:
        assert "usage" in proc.stdout
