"""The learned KTC2023 segmenter: a tiny network trains through the shared trainer, resumes, exports, segments."""

import jax
import numpy as np
import pytest

from jaxeit.realdata.ktc_segmenter import Segmenter, SegmenterConfig, train_segmenter
from jaxeit.realdata.ktc_simulator import KTCSimConfig, simulate_ktc

from .conftest import data_dir

TINY = SegmenterConfig(image_size=16, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                       attention_resolutions=(), num_heads=1, num_groups=4, mesh_h=0.03, batch_size=2, steps=4,
                       warmup_steps=1, n_val=2, checkpoint_every=2, log_every=1, eval_every=2, patience=3)


def test_tiny_segmenter_trains_resumes_and_segments(tmp_path):
    ref = data_dir() / "ktc2023" / "training" / "ref.mat"
    if not ref.exists():
        pytest.skip(f"real data not found at {ref.parent} (set JAXEIT_DATA)")
    sim = simulate_ktc(KTCSimConfig(n_samples=8, shard_size=8, batch_size=8, h=0.012), tmp_path / "sim",
                       reference=ref, log=None)
    whole = train_segmenter(sim, tmp_path / "a", reference=ref, config=TINY, progress=False, log=None)
    assert int(whole.state.step) == 4 and np.isfinite([r["loss"] for r in whole.history if "loss" in r]).all()
    assert any("val_loss" in r for r in whole.history)
    # stopped after 2 steps, then resumed: the same history and weights as the uninterrupted run
    import dataclasses

    half = train_segmenter(sim, tmp_path / "b", reference=ref, config=dataclasses.replace(TINY, steps=4),
                           progress=False, log=None, max_seconds=1e-9)
    assert int(half.state.step) < 4
    resumed = train_segmenter(sim, tmp_path / "b", reference=ref, config=TINY, progress=False, log=None)
    assert [r for r in resumed.history] == [r for r in whole.history]
    seg = Segmenter.load(tmp_path / "a", reference=ref)
    from jaxeit.realdata.ktc_simulator import load_ktc_simulation

    data = load_ktc_simulation(sim)
    labels = seg.segment(data["voltages"][:3], data["reference"][:3], level=4)
    assert labels.shape == (3, 256, 256) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    with pytest.raises(ValueError, match="no trained segmenter"):
        Segmenter.load(tmp_path / "sim", reference=ref)
    # fine-tuning: a new run starts from a's EMA weights (and says so in its card); another network is refused
    import json

    tuned = train_segmenter(sim, tmp_path / "c", reference=ref, progress=False, log=None,
                            config=dataclasses.replace(TINY, init_from=str(tmp_path / "a"), lr=1e-12))
    np.testing.assert_allclose(np.asarray(jax.tree.leaves(tuned.state.params)[0]),
                               np.asarray(jax.tree.leaves(seg.params)[0]))   # lr ~0: the weights stay a's
    card = json.loads((tmp_path / "c" / "segmenter.json").read_text())
    assert "started from the EMA weights" in card["notes"][0]
    assert card["simulation"]["n_samples"] == 8 and card["simulation"]["h"] == 0.012   # what the model saw
    with pytest.raises(ValueError, match="another network"):
        train_segmenter(sim, tmp_path / "d", reference=ref, progress=False, log=None,
                        config=dataclasses.replace(TINY, base_channels=4, init_from=str(tmp_path / "a")))
    # the score term: its soft score is logged beside the cross-entropy, the card keeps the weight
    scored = train_segmenter(sim, tmp_path / "f", reference=ref, progress=False, log=None,
                             config=dataclasses.replace(TINY, steps=2, score_weight=1.0, init_from=str(tmp_path / "a")))
    rows = [r for r in scored.history if "soft_score" in r]
    assert rows and all(0.0 <= r["soft_score"] <= 1.0 and r["loss"] >= r["cross_entropy"] for r in rows)
    assert Segmenter.load(tmp_path / "f", reference=ref).config.score_weight == 1.0
    with pytest.raises(ValueError, match="score_weight must be a finite number >= 0"):
        dataclasses.replace(TINY, score_weight=-1.0)
    # a one-level model: trained and usable at its level only; another level is refused, not guessed
    train_segmenter(sim, tmp_path / "e", reference=ref, progress=False, log=None,
                    config=dataclasses.replace(TINY, steps=2, levels=(3,), init_from=str(tmp_path / "a")))
    one = Segmenter.load(tmp_path / "e", reference=ref)
    assert one.config.levels == (3,) and one.segment(data["voltages"][:1], data["reference"][:1], 3).shape == (1, 256, 256)
    with pytest.raises(ValueError, match=r"trained at levels \(3,\), not at level 4"):
        one.segment(data["voltages"][:1], data["reference"][:1], 4)
    with pytest.raises(ValueError, match=r"trained at levels \(3,\), not at \[1\]"):
        Segmenter.load(tmp_path / "e", reference=ref, levels=(1, 3))


def test_batch_levels_come_from_the_config(monkeypatch):
    """All levels: the per-step draw of the runs that made the shipped weights (so they resume exactly);
    one level: only that level. Bad level sets are refused."""
    from jaxeit.realdata import ktc_segmenter

    monkeypatch.setattr(ktc_segmenter, "_batch", lambda data, features, idx, levels: levels)
    data = {"truth": np.zeros((10, 1))}
    every = ktc_segmenter._Batches(data, None, 4, seed=5)
    for step in range(6):
        np.testing.assert_array_equal(every(step), np.random.default_rng([5, 1, step]).integers(1, 8, 4))
    assert set(np.concatenate([ktc_segmenter._Batches(data, None, 4, 5, levels=(6,))(s) for s in range(4)])) == {6}
    for bad in ((), (0,), (2, 2), (8,), 1):
        with pytest.raises(ValueError, match="levels must be distinct challenge levels"):
            SegmenterConfig(levels=bad)


def test_unet_method_uses_the_shipped_segmenter(tmp_path, monkeypatch):
    """reconstruct_ktc(method="unet"): the shipped weights (here a tiny model put in their place), a
    segmentation in the truth frame and a score; a clear error when no weights are shipped."""
    folder = data_dir() / "ktc2023" / "training"
    if not (folder / "ref.mat").exists():
        pytest.skip(f"real data not found at {folder} (set JAXEIT_DATA)")
    from jaxeit.io import load_ktc2023, load_ktc_truth
    from jaxeit.realdata import ktc, ktc_mesh, ktc_segmenter

    ds = load_ktc2023(folder / "data1.mat", folder / "ref.mat", level=2)
    mesh = ktc_mesh(h=0.03)
    monkeypatch.setattr(ktc_segmenter, "SHIPPED", tmp_path / "none")
    with pytest.raises(ValueError, match="ships no trained segmenter"):
        ktc.reconstruct_ktc(ds, mesh, "unet")
    sim = simulate_ktc(KTCSimConfig(n_samples=4, shard_size=4, batch_size=4, h=0.015), tmp_path / "sim",
                       reference=folder / "ref.mat", log=None)
    import dataclasses

    train_segmenter(sim, tmp_path / "w", reference=folder / "ref.mat", progress=False, log=None,
                    config=dataclasses.replace(TINY, steps=2, n_val=1, batch_size=2, eval_every=1))
    monkeypatch.setattr(ktc_segmenter, "SHIPPED", tmp_path / "w")
    res = ktc.reconstruct_ktc(ds, mesh, "unet", truth=load_ktc_truth(folder / "true1.mat"))
    assert res.method == "unet" and res.level == 2 and res.segmentation.shape == (256, 256)
    assert res.contrast.shape == (mesh.n_elements,) and -1.0 <= res.score <= 1.0   # a mean of SSIMs


def test_fit_class_bias_finds_the_offset_that_undoes_a_shifted_logit(tmp_path):
    """Logits whose resistive class is pushed down by 0.6: the plain argmax misses the resistive disk,
    the fitted offsets recover it (the score rises to 1), and the card keeps them for Segmenter.load."""
    import json

    from jaxeit.metrics import ktc_score
    from jaxeit.realdata.ktc_segmenter import (decide, fit_class_bias, read_class_bias, weights_fingerprint,
                                               write_class_bias)

    yy, xx = np.mgrid[:256, :256]
    truth = np.zeros((2, 256, 256), np.uint8)
    truth[:, (yy - 100) ** 2 + (xx - 90) ** 2 < 30 ** 2] = 1
    truth[1, (yy - 170) ** 2 + (xx - 160) ** 2 < 25 ** 2] = 2
    logits = np.eye(3, dtype=np.float32)[truth] * 0.5          # the true class leads by 0.5 …
    logits[..., 1] -= 0.6                                     # … except the resistive one, which trails by 0.1
    plain = float(np.mean(np.asarray(ktc_score(decide(logits), truth))))
    bias, table = fit_class_bias(logits, truth, grid=(-0.5, -0.25, 0.0, 0.25, 0.5), sweeps=1)
    assert bias[0] == 0.0 and bias[1] >= 0.25 and table[(0.0, 0.0)] == pytest.approx(plain)
    fitted = float(np.mean(np.asarray(ktc_score(decide(logits, bias), truth))))
    assert plain < 0.9 and fitted == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="contain 0"):
        fit_class_bias(logits, truth, grid=(0.25, 0.5))
    with pytest.raises(ValueError, match=r"\(N, 256, 256, 3\)"):
        fit_class_bias(logits[..., :2], truth)
    assert read_class_bias(tmp_path) == (0.0, 0.0, 0.0)       # no card: the plain argmax
    (tmp_path / "segmenter.json").write_text(json.dumps({"steps": 1}))
    write_class_bias(tmp_path, bias, {"chosen_on": "test"})
    assert read_class_bias(tmp_path) == bias
    assert json.loads((tmp_path / "segmenter.json").read_text())["steps"] == 1   # the rest of the card stays
    with pytest.raises(ValueError, match="finite"):
        write_class_bias(tmp_path, (0.0, np.nan, 0.0), {})
    # caches of scores are keyed on the weights and the offsets: either one changes the fingerprint
    assert weights_fingerprint(tmp_path) == "none"
    (tmp_path / "segmenter.npz").write_bytes(b"weights")
    before = weights_fingerprint(tmp_path)
    write_class_bias(tmp_path, (0.0, 0.0, 0.5), {"chosen_on": "test"})
    after = weights_fingerprint(tmp_path)
    (tmp_path / "segmenter.npz").write_bytes(b"other weights")
    assert len({before, after, weights_fingerprint(tmp_path)}) == 3
