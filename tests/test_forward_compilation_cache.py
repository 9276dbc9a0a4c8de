"""The persistent compilation cache: a second process loads the forward solve instead of compiling it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxeit.compilation_cache as cc

_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp
from jax._src import monitoring
import jaxeit.compilation_cache as cc
from jaxeit import ForwardModel, mesh, protocol
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
folder = cc.enable(sys.argv[1], min_compile_time_s=0.0)
m = mesh.disk(h=0.3, n_electrodes=8, electrode_width=0.3, edge_refinement=1.0)
fm = ForwardModel(m, protocol.adjacent(8), solver="klu")  # a custom call and the checks
fm.voltages(jnp.ones(m.n_elements)).block_until_ready()
print(json.dumps({"dir": str(cc.enabled_dir()), "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""


def _run(folder: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(folder)], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_hits_the_cache(tmp_path):
    folder = tmp_path / "xla"
    first = _run(folder)
    assert first["dir"] == str(folder.resolve()) and first["misses"] > 0 and first["hits"] == 0
    assert any(folder.iterdir())
    second = _run(folder)
    assert second["hits"] >= first["misses"] and second["misses"] == 0, (first, second)


def test_default_dir_and_bad_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXEIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cc.default_dir() == tmp_path / "cache" / "jaxeit" / "xla"
    monkeypatch.setenv("JAXEIT_CACHE_DIR", str(tmp_path / "mine"))
    assert cc.default_dir() == tmp_path / "mine"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        cc.enable(a_file)
    with pytest.raises(ValueError, match="min_compile_time_s"):
        cc.enable(tmp_path / "ok", min_compile_time_s=-1)
