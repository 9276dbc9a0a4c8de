"""Shared fixtures: float64 on, small meshes built once per session, data location."""

import os
import tempfile
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)
# the command line turns on the persistent compilation cache; tests stay hermetic without it
# (tests/test_cli.py and tests/test_forward_compilation_cache.py turn it on in a folder of their own)
os.environ.setdefault("JAXEIT_COMPILE_CACHE", "0")
# and KTC calibrations remembered by the command line go to a folder of the test run, not the user's
os.environ.setdefault("JAXEIT_CALIBRATION_CACHE", tempfile.mkdtemp(prefix="jaxeit-calibrations-"))
# and so do KTC priors drawn for meshes other than the shipped one's (beside the unused compilation cache)
os.environ.setdefault("JAXEIT_CACHE_DIR", os.path.join(tempfile.mkdtemp(prefix="jaxeit-cache-"), "xla"))

import jaxeit  # noqa: E402
import jaxeit.io  # noqa: E402


def data_dir() -> Path:
    """The shared real-data folder: $JAXEIT_DATA, else ../shared/data beside the repository."""
    return jaxeit.io.data_dir()


@pytest.fixture(scope="session")
def getkey():
    """A function returning fresh PRNG keys, deterministic per test session."""
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 10_000))
    return lambda: next(keys)


@pytest.fixture(scope="session")
def small_disk():
    """Unit disk, 16 electrodes of width 0.2, coarse (a few hundred nodes)."""
    return jaxeit.mesh.disk(h=0.15)


@pytest.fixture(scope="session")
def tiny_disk():
    """A very coarse unit disk (~100 nodes) for brute-force derivative checks."""
    return jaxeit.mesh.disk(h=0.3, n_electrodes=8, electrode_width=0.3, edge_refinement=1.0)
