"""Prior training (exact resume), U-Net, weight export and offline loading of the shipped prior."""

import json
import os
import shutil
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxeit.priors import DEFAULT_PRIOR, DiffusionPrior, available_priors, load_pretrained
from jaxeit.priors import train as tr
from jaxeit.priors.pretrained import WEIGHTS_DIR
from jaxeit.priors.unet import UNetConfig, abstract_params, init_params, make_apply, timestep_embedding

#: A tiny run: one 8-channel level on 8×8 images, 4 steps of batch 2.
TINY = tr.TrainConfig(image_size=8, base_channels=8, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(),
                      num_heads=2, num_groups=4, batch_size=2, steps=4, warmup_steps=1, checkpoint_every=2, log_every=1)
TINY_ARGS = ["--image-size", "8", "--base-channels", "8", "--channel-mult", "1", "--num-res-blocks", "1",
             "--attention-resolutions", "",
             "--num-heads", "2", "--num-groups", "4", "--batch-size", "2", "--steps", "4", "--warmup-steps", "1",
             "--checkpoint-every", "2", "--log-every", "1", "--no-progress"]


def _leaves(state):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The state and folder of an uninterrupted tiny run."""
    d = tmp_path_factory.mktemp("prior_full")
    return tr.train(TINY, d, progress=False, log=None).state, d


def test_unet_shapes_dtypes_and_zero_init():
    cfg = UNetConfig(image_size=8, base_channels=8, channel_mult=(1, 2), attention_resolutions=(4,),
                     num_heads=2, num_groups=4)
    graphdef, params = init_params(cfg, jax.random.PRNGKey(0))
    model = nnx.merge(graphdef, params)
    assert isinstance(model.down, nnx.List) and isinstance(model.up, nnx.List)
    apply = make_apply(graphdef)
    x = jnp.linspace(-1, 1, 3 * 64, dtype=jnp.float64).reshape(3, 8, 8)
    eps, v = apply(params, x, jnp.array([0, 10, 999]))
    assert eps.shape == v.shape == (3, 8, 8) and eps.dtype == v.dtype == jnp.float32
    # the output convolution starts at zero: ε̂ = 0 and v = 1/2 (midway between β̃ and β)
    np.testing.assert_array_equal(eps, 0.0)
    np.testing.assert_array_equal(v, 0.5)
    eps1, _ = apply(params, x[0], 5)                        # a single (n, n) image
    assert eps1.shape == (8, 8)
    g, abstract = abstract_params(cfg)
    assert [a.shape for a in jax.tree_util.tree_leaves(abstract)] == [a.shape for a in
                                                                      jax.tree_util.tree_leaves(params)]
    from jax._src.interpreters import partial_eval as pe   # the abstract build's shortcut is undone after it
    assert pe.DynamicJaxprTracer._origin_msg is pe.DynamicJaxprTracer.__dict__["_origin_msg"]
    assert pe.DynamicJaxprTracer._origin_msg.__name__ == "_origin_msg"
    emb = timestep_embedding(jnp.array([0, 500]), 16)
    assert emb.shape == (2, 16) and emb.dtype == jnp.float32
    np.testing.assert_allclose(emb[0, :8], 1.0)            # cos(0)
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(image_size=10, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="num_groups"):
        UNetConfig(base_channels=12, num_groups=8)


def test_resume_after_interruption_is_exact(uninterrupted, tmp_path):
    full, full_dir = uninterrupted
    assert int(full.step) == TINY.steps
    # stop after 1 step (a checkpoint is written on stopping), then resume with a larger
    # checkpoint interval (allowed), then via the CLI to the end
    first = tr.train(TINY, tmp_path, until=1, progress=False, log=None).state
    assert int(first.step) == 1
    ck = tr.load_checkpoint(tmp_path)
    assert int(ck.state.step) == 1 and ck.config == TINY and len(ck.history) == 1 and ck.notes == []
    tr.train(dataclass_replace(TINY, checkpoint_every=3), tmp_path, until=3, progress=False, log=None)
    assert tr.main(["--workdir", str(tmp_path)] + TINY_ARGS) == 0
    ck = tr.load_checkpoint(tmp_path)
    state, history = ck.state, ck.history
    assert int(state.step) == TINY.steps
    assert [h["step"] for h in history] == [1, 2, 3, 4]   # no lost or repeated steps
    for a, b in zip(_leaves(state), _leaves(full)):
        np.testing.assert_array_equal(a, b)               # bit-identical to the uninterrupted run
    full_history = tr.load_checkpoint(full_dir).history
    assert history == full_history                        # the same loss sequence
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]   # atomic writes leave no temp files
    # resuming with a different config is refused; a different length only on request, noted
    with pytest.raises(ValueError, match="another config"):
        tr.train(dataclass_replace(TINY, lr=1e-2), tmp_path, progress=False, log=None)
    with pytest.raises(ValueError, match="steps: 4 -> 5"):
        tr.train(dataclass_replace(TINY, steps=5), tmp_path, progress=False, log=None)
    ck = tr.load_checkpoint(tmp_path, dataclass_replace(TINY, steps=5), allow_steps_change=True)
    assert ck.config.steps == 5 and ck.notes == ["steps changed from 4 to 5 at step 4"]


def dataclass_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        tr.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples" in out and "--workdir" in out and "--export" in out


def test_export_and_load_roundtrip(uninterrupted, tmp_path):
    state, d = uninterrupted
    w, j = tr.export_weights(d, "tiny", out_dir=tmp_path)
    meta = json.loads(j.read_text())
    assert meta["steps"] == TINY.steps and meta["seed"] == TINY.seed and "hardware" in meta
    prior = load_pretrained(path=w)
    assert isinstance(prior, DiffusionPrior) and prior.image_size == 8
    assert prior.alphas_cumprod.shape == (1000,) and prior.alphas_cumprod.dtype == jnp.float32
    for a, b in zip(_leaves(prior.params), _leaves(state.ema)):      # the EMA weights, exactly
        np.testing.assert_array_equal(a, b)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8), jnp.float32)
    eps = prior.apply(x, jnp.array([3, 400]))
    assert eps.shape == (2, 8, 8) and eps.dtype == jnp.float32
    # x̂₀ from ε̂
    ab = prior.alphas_cumprod[400]
    np.testing.assert_allclose(prior.denoise(x, 400),
                               (x - jnp.sqrt(1 - ab) * prior.apply(x, 400)) / jnp.sqrt(ab), rtol=1e-5, atol=1e-5)
    s = prior.sample(jax.random.PRNGKey(1), 2, steps=3)
    assert s.shape == (2, 8, 8) and float(jnp.abs(s).max()) <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="expected images"):
        prior.apply(jnp.zeros((2, 16, 16)), 1)


def test_missing_and_corrupt_weights_give_clear_errors(uninterrupted, tmp_path):
    _, d = uninterrupted
    with pytest.raises(FileNotFoundError, match=r"nope\.msgpack.*train"):
        load_pretrained("nope")
    w, j = tr.export_weights(d, "tiny", out_dir=tmp_path)
    for corrupt in (b"not msgpack at all", w.read_bytes()[: len(w.read_bytes()) // 2]):
        bad = tmp_path / "bad.msgpack"
        bad.write_bytes(corrupt)
        shutil.copy(j, tmp_path / "bad.json")
        with pytest.raises(ValueError, match=r"bad\.msgpack.*corrupt.*jaxeit\.priors\.train"):
            load_pretrained(path=bad)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json.*corrupt"):
        load_pretrained(path=tmp_path / "bad.msgpack")
    (tmp_path / "bad.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"bad\.json"):
        load_pretrained(path=tmp_path / "bad.msgpack")


@pytest.mark.parametrize("name", [DEFAULT_PRIOR, "shapes64"])
def test_shipped_prior_loads_offline(monkeypatch, name):
    if name not in available_priors():
        pytest.fail(f"shipped weights {WEIGHTS_DIR / name}.msgpack are missing")

    def no_network(*args, **kwargs):
        raise AssertionError("load_pretrained must not use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    prior = load_pretrained(name)
    assert prior.name == name and prior.image_size == prior.provenance["unet_config"]["image_size"]
    files = [p for p in WEIGHTS_DIR.glob(f"{name}.msgpack*")]
    assert all(f.stat().st_size <= 16 * 2**20 for f in files)       # each file moves easily
    assert (WEIGHTS_DIR / f"{name}.md").is_file()                     # its model card
    assert prior.num_timesteps == 1000
    eps = prior.apply(jnp.zeros((prior.image_size, prior.image_size)), 500)
    assert eps.shape == (prior.image_size,) * 2 and np.isfinite(np.asarray(eps)).all()


def test_large_weights_are_split_and_load_exactly(uninterrupted, tmp_path, monkeypatch):
    state, d = uninterrupted
    monkeypatch.setattr(tr, "MAX_WEIGHTS_FILE_BYTES", 20_000)
    w, j = tr.export_weights(d, "tiny", out_dir=tmp_path)
    parts = sorted(tmp_path.glob("tiny.msgpack.*"))
    assert w.name == "tiny.msgpack.00" and len(parts) >= 2 and not (tmp_path / "tiny.msgpack").exists()
    assert all(p.stat().st_size <= 20_000 for p in parts)
    prior = load_pretrained(path=tmp_path / "tiny.msgpack", cache=False)
    for a, b in zip(_leaves(prior.params), _leaves(state.ema)):
        np.testing.assert_array_equal(a, b)
    parts[-1].write_bytes(parts[-1].read_bytes()[:-10])            # a truncated part
    with pytest.raises(ValueError, match=r"tiny\.msgpack.*sizes"):
        load_pretrained(path=tmp_path / "tiny.msgpack", cache=False)


def test_weights_whose_config_does_not_match_name_the_mismatch(uninterrupted, tmp_path):
    _, d = uninterrupted
    w, j = tr.export_weights(d, "tiny", out_dir=tmp_path)
    meta = json.loads(j.read_text())
    meta["unet_config"]["num_res_blocks"] += 1                       # the JSON says another network
    j.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"tiny\.msgpack.*does not match tiny\.json.*parameter names differ.*missing"):
        load_pretrained(path=w, cache=False)
