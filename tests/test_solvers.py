"""Solver backends against dense Cholesky (values, jacfwd, grad), KLU's symbolic analysis, and the
value checks that survive jit (σ ≤ 0, non-finite σ, z out of range, singular systems)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeit import ForwardModel, mesh, protocol
from jaxeit.forward import solvers
from jaxeit.forward.model import Z_RANGE

BACKENDS = [b for b in solvers.BACKENDS if b != "dense"]


@pytest.fixture(scope="module")
def disk8():
    """A tiny CEM/point mesh (~100 nodes) with 8 electrodes."""
    return mesh.disk(h=0.3, n_electrodes=8, electrode_width=0.3, edge_refinement=1.0)


@pytest.mark.parametrize("model", ["cem", "point"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_dense_to_1e10(disk8, getkey, backend, model):
    """Values, jacfwd and grad of every backend agree with dense Cholesky to 1e-10 (float64)."""
    sigma = jax.random.uniform(getkey(), (disk8.n_elements,), minval=0.5, maxval=2.0)
    w = jax.random.normal(getkey(), (protocol.adjacent(8).n_measurements,))
    out = {}
    for solver in ("dense", backend):
        fm = ForwardModel(disk8, protocol.adjacent(8), electrode_model=model, solver=solver)
        v = fm.voltages(sigma)
        jf = jax.jacfwd(fm.voltages)(sigma)
        g = jax.grad(lambda s: jnp.sum(w * fm.voltages(s) ** 2))(sigma)  # noqa: B023
        out[solver] = [np.asarray(t) for t in (v, jf, g)]
    for name, ref, got in zip(("values", "jacfwd", "grad"), out["dense"], out[backend]):
        scale = np.abs(ref).max()
        assert np.abs(got - ref).max() <= 1e-10 * scale, (name, np.abs(got - ref).max() / scale)


def test_auto_is_klu_on_cpu(small_disk, disk8):
    if jax.default_backend() != "cpu":
        pytest.skip("the CPU default")
    assert ForwardModel(small_disk, protocol.adjacent(16)).solver == "klu"
    assert ForwardModel(disk8, protocol.adjacent(8), electrode_model="point").solver == "klu"
    assert solvers.resolve_backend("auto", 10**6) == "klu"


def test_klu_symbolic_once_per_pattern(small_disk):
    """The symbolic analysis is cached by pattern and shared by models on the same mesh."""
    a = ForwardModel(small_disk, protocol.adjacent(16), solver="klu")
    b = ForwardModel(small_disk, protocol.opposite(16), solver="klu")
    c = a.with_protocol(protocol.adjacent(16, skip=2))
    assert int(a.disc.klu_symbolic) == int(b.disc.klu_symbolic) == int(c.disc.klu_symbolic) != 0
    point = ForwardModel(small_disk, protocol.adjacent(16), solver="klu", electrode_model="point")
    assert int(point.disc.klu_symbolic) != int(a.disc.klu_symbolic)  # another pattern
    assert ForwardModel(small_disk, protocol.adjacent(16), solver="dense").disc.klu_symbolic is None


def test_klu_model_survives_pickling_to_another_process(small_disk, tmp_path):
    """The symbolic handle is a host address: an unpickled model (here in a new process) makes its own."""
    import pickle
    import subprocess
    import sys
    from pathlib import Path

    fm = ForwardModel(small_disk, protocol.adjacent(16), solver="klu")
    sigma = np.linspace(0.5, 2.0, small_disk.n_elements)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps((fm, sigma)))
    script = ("import pickle, sys, numpy as np; fm, s = pickle.load(open(sys.argv[1], 'rb')); "
              "np.save(sys.argv[2], np.asarray(fm.voltages(s)))")
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "v.npy")], check=True, env=env,
                   timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), fm.voltages(sigma), rtol=1e-12)


def test_importing_klujax_keeps_the_platform_setting(small_disk):
    before = jax.config.read("jax_platform_name")
    ForwardModel(small_disk, protocol.adjacent(16), solver="klu")
    assert jax.config.read("jax_platform_name") == before


# -- value checks -----------------------------------------------------------------------

def _raises(fn, phrase):
    with pytest.raises(Exception) as info:
        jax.block_until_ready(fn())
    assert phrase in str(info.value), str(info.value)[-400:]


def test_checks_survive_jit(small_disk):
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    ones = jnp.ones(small_disk.n_elements)
    f = jax.jit(lambda model, s: model.voltages(s))
    for bad in (ones.at[3].set(-1.0), ones.at[:40].set(0.0), ones.at[3].set(jnp.nan), ones.at[3].set(jnp.inf)):
        _raises(lambda: f(fm, bad), "sigma must be positive and finite")  # noqa: B023
    # the Jacobian and a batch with one bad row
    _raises(lambda: jax.jit(fm.jacobian)(ones.at[3].set(-1.0)), "sigma must be positive")
    _raises(lambda: jax.jit(fm.voltages)(jnp.stack([ones, ones.at[5].set(-2.0)])), "sigma must be positive")
    # contact impedance out of range, traced and eager
    for z in (1e-300, 0.0, -0.01, jnp.nan, 1e300):
        _raises(lambda: jax.jit(lambda zz: fm.voltages(ones, zz))(z), "contact_impedance must be finite")  # noqa: B023
    with pytest.raises(ValueError, match="contact_impedance must be finite and within"):
        fm.voltages(ones, contact_impedance=1e-300)
    with pytest.raises(ValueError, match="within"):
        ForwardModel(small_disk, protocol.adjacent(16), contact_impedance=Z_RANGE[1] * 10)
    # good values still pass under jit
    np.testing.assert_allclose(f(fm, ones), fm.voltages(ones), rtol=1e-12)


def test_grad_at_negative_sigma_raises_not_nan(small_disk):
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    bad = jnp.ones(small_disk.n_elements).at[7].set(-0.5)
    _raises(lambda: jax.grad(lambda s: jnp.sum(fm.voltages(s) ** 2))(bad), "sigma must be positive")
    _raises(lambda: jax.jit(jax.grad(lambda s: jnp.sum(fm.voltages(s) ** 2)))(bad), "sigma must be positive")


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_singular_system_is_a_clear_error(small_disk, solver):
    """σ so small next to 1/z that the matrix is numerically singular: an error, not NaN voltages."""
    fm = ForwardModel(small_disk, protocol.adjacent(16), solver=solver)
    tiny = jnp.full(small_disk.n_elements, 1e-200)
    _raises(lambda: jax.jit(fm.voltages)(tiny), "singular or indefinite")


def test_checks_off(small_disk):
    """checks=False (or with_checks(False)) removes the run-time checks: a negative σ then gives
    finite wrong voltages and σ = 0 NaN (dense) or KLU's own factorisation error, which is why the
    checks are on by default."""
    ones = jnp.ones(small_disk.n_elements)
    fm = ForwardModel(small_disk, protocol.adjacent(16), solver="dense")
    off = fm.with_checks(False)
    assert fm.checks and not off.checks and off.disc is fm.disc
    assert np.isfinite(np.asarray(jax.jit(off.voltages)(ones.at[3].set(-1.0)))).all()
    assert np.isnan(np.asarray(jax.jit(off.voltages)(0.0 * ones))).all()
    np.testing.assert_allclose(jax.jit(off.voltages)(ones), fm.voltages(ones), rtol=1e-12)
    klu = ForwardModel(small_disk, protocol.adjacent(16), solver="klu", checks=False)
    _raises(lambda: jax.jit(klu.voltages)(0.0 * ones), "singular")
