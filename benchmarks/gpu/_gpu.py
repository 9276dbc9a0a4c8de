"""Shared pieces of the GPU / scale benchmarks: report header, result paths, cached meshes, timing.

Every script here runs on a CPU with ``--quick`` (small sizes) and is meant to be
run at full size on an accelerator. Reports go to
``benchmarks/results/gpu_<name>_<platform>.md`` (platform = ``cpu`` or ``gpu``) so CPU and
GPU tables sit side by side.

Meshes are built with gmsh and cached as ``.npz`` (:meth:`jaxeit.mesh.Mesh.save`)
in ``$JAXEIT_MESH_CACHE`` (default ``out/mesh_cache``), so an accelerator host
without gmsh can use meshes made elsewhere.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import RESULTS, machine_header, markdown_table  # noqa: E402,F401

import jaxeit  # noqa: E402,F401  (float64 for the FEM)
from jaxeit import mesh as jmesh  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402


def platform() -> str:
    """``"gpu"`` on an accelerator, else ``"cpu"`` (the result-file suffix)."""
    return "cpu" if jax.default_backend() == "cpu" else "gpu"


def device_line() -> str:
    d = jax.devices()[0]
    return f"Device: {d.platform} ({d.device_kind}), {len(jax.devices())} visible."


def mesh_cache() -> Path:
    return Path(os.environ.get("JAXEIT_MESH_CACHE", "out/mesh_cache"))


def disk_mesh(h: float, radius: float = 1.0, electrode_width: float = 0.2) -> jmesh.Mesh:
    """A CEM disk mesh (16 electrodes) of element size ``h``, from the cache when there."""
    return jmesh.cached(f"disk_r{radius:g}_w{electrode_width:g}_h{h:g}",
                        lambda: jmesh.disk(radius=radius, electrode_width=electrode_width, h=h), mesh_cache())


def timed(fn, *args, repeats: int = 5):
    """Median wall time (s) of ``fn(*args)`` after one compiling call (results blocked on)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def write_report(name: str, title: str, body: str, out: Path | None = None) -> Path:
    """Write ``gpu_<name>_<platform>.md`` (machine header + ``body``) atomically; returns the path."""
    path = out or RESULTS / f"gpu_{name}_{platform()}.md"
    text = machine_header(title) + device_line() + "\n\n" + body.rstrip() + "\n"
    atomic_write_text(path, text)
    print(text)
    print(f"written {path}")
    return path
