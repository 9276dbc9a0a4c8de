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
    env = dict(os.environ, MPLBACKEND="Agg", JAXEIT_QUIET="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"README block failed after {seconds:.0f} s:\n{proc.stderr[-3000:]}"
    for name in re.findall(r"""["']([\w./-]+\.png)["']""", code):
        png = tmp_path / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name} was not written"
