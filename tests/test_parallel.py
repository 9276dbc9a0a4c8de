"""Data parallelism (jaxeit.parallel): generation and training on 1 and 2 devices give the same results.

The number of host devices is fixed when JAX starts, so each device count runs in its own
subprocess (this file run as a script) with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# the 32-sample data set of the worker: 16 px, coarse pyEIT mesh, 4-sample chunks (2 chunks per call on 2 devices)
SIM = dict(mesh="pyeit", h0=0.3, image_size=16, image_supersample=2, mesh_samples=16, chunk_size=4, shard_size=8,
           n_train=16, n_val=8, n_test=5, seed=3)


def _worker(out: Path) -> None:
    """Generate a data set and train a tiny float64 flow on all visible devices; save the results to ``out``."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxeit.data import SimulationConfig, Simulator, load_split, read_metadata, simulate
    from jaxeit.dgm.cnf import CNFConfig, train_cnf
    from jaxeit.dgm.training import FitConfig, fit

    n_dev = int(os.environ["EXPECT_DEVICES"])
    assert len(jax.devices()) == n_dev, jax.devices()
    config = SimulationConfig(**SIM)
    root = simulate(config, out.parent / f"data{n_dev}", progress=False, log=None)
    assert read_metadata(root)["throughput"]["devices"] == [str(d) for d in jax.devices()]
    arrays = {f"{split}_{k}": v for split in ("train", "val", "test")
              for k, v in load_split(root, split).items()}
    # the chunk outputs really are split over the devices, one chunk each
    sim = Simulator.build(config)
    res = sim.chunks(np.arange(config.chunk_size * n_dev))
    assert len(res["sigma"].sharding.device_set) == n_dev
    assert sorted(s.data.shape[0] for s in res["sigma"].addressable_shards) == [config.chunk_size] * n_dev

    # 4 steps of a flow in float64 (so that the reduction order of the gradient is the only difference)
    rng = np.random.default_rng(0)
    data = {"image": 1 + 0.3 * rng.standard_normal((8, 8, 8)), "gn_image": 1 + 0.3 * rng.standard_normal((8, 8, 8))}
    cnf = CNFConfig(image_size=8, levels=1, blocks=1, hidden=(8,), cond_channels=(4,), cond_width=4, dtype="float64",
                    fit=FitConfig(epochs=2, batch_size=4, lr=1e-3, weight_decay=1e-5, grad_clip=1.0, log_every=1))
    model = train_cnf(cnf, data, progress=False, log=None)
    leaves = jax.tree_util.tree_leaves(model.params)
    assert all(len(x.sharding.device_set) == n_dev for x in leaves)      # replicated on every device
    arrays.update({f"param_{i}": np.asarray(x) for i, x in enumerate(leaves)})
    arrays["losses"] = np.array([h["loss"] for h in model.history])
    if n_dev > 1:
        try:
            fit(lambda p, r, b, k, e: (0.0, {}), {}, data=data, config=FitConfig(batch_size=3), progress=False)
        except ValueError as exc:
            assert "multiple of 2" in str(exc), exc
        else:
            raise AssertionError("a batch of 3 on 2 devices must be refused")
    np.savez(out, **arrays)


def _start(n_dev: int, tmp_path: Path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", EXPECT_DEVICES=str(n_dev),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={n_dev}",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / f"out{n_dev}.npz"
    proc = subprocess.Popen([sys.executable, __file__, str(out)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, out


def _result(proc, out: Path) -> dict:
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-5000:]
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("pyeit")
    tmp = tmp_path_factory.mktemp("parallel")
    started = [_start(n, tmp) for n in (1, 2)]      # side by side: each is mostly single-threaded compilation
    return tuple(_result(*s) for s in started)


def test_generation_on_two_devices_equals_one_device_bit_for_bit(runs):
    one, two = runs
    fields = [k for k in one if k.split("_", 1)[0] in ("train", "val", "test")]
    assert len(fields) == 30
    for name in ("sigma", "voltages", "image", "gn_sigma", "gn_image"):
        assert f"test_{name}" in fields
    for k in fields:
        assert one[k].dtype == two[k].dtype and one[k].shape == two[k].shape, k
        assert np.array_equal(one[k], two[k]), k
    assert np.array_equal(one["test_index"], np.arange(24, 29))


def test_training_on_two_devices_matches_one_device(runs):
    one, two = runs
    names = [k for k in one if k.startswith("param_")]
    assert names and len(one["losses"]) == 4
    # the 2-device gradient is a sum of two half-batch sums (an all-reduce), so only float rounding may
    # differ: in float64 that stays many orders below this tolerance after 4 Adam steps
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-9)
    for k in names:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-5, atol=1e-9)
    assert not np.allclose(one["param_0"], 0)


def test_mesh_and_placement_helpers(monkeypatch):
    import jax

    from jaxeit.parallel import data_mesh, initialize_distributed, replicate, shard_batch

    mesh = data_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == len(jax.devices())
    assert data_mesh(mesh) is mesh and data_mesh(1).size == 1
    with pytest.raises(ValueError, match="visible"):
        data_mesh(len(jax.devices()) + 1)
    x = shard_batch({"a": np.arange(6.0).reshape(3, 2)}, mesh)["a"]
    np.testing.assert_array_equal(np.asarray(x), np.arange(6.0).reshape(3, 2))
    assert np.asarray(replicate(np.float32(2), mesh)) == 2
    with pytest.raises(ValueError, match="leading batch axis"):
        shard_batch(np.float32(1), mesh)

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert initialize_distributed() is False and calls == []
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    assert initialize_distributed() is True
    assert calls == [{"num_processes": 4, "process_id": 2}]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
