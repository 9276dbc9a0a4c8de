"""Shipped DGM models: the file format, geometry checks, and ``reconstruct(fm, v, "cnf" | "cvae" | "csd")``.

Tiny untrained networks on a tiny disk mesh: what is tested is the plumbing (the
network sees exactly the data set's input, results carry what they promise,
wrong geometry and damaged files are refused), not the image quality, which
benchmarks/dgm_pretrain.py measures.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxeit import ForwardModel
from jaxeit.data import Operators, SimulationConfig, Simulator
from jaxeit.data.simulate import make_mesh
from jaxeit.dgm import (CNF, CVAE, CNFConfig, CVAEConfig, FitConfig, ScoreConfig, ScoreModel, available_models,
                        find_pretrained, load_pretrained, save_pretrained)
from jaxeit.mesh import disk
from jaxeit.protocol import adjacent
from jaxeit.recon import METHODS, reconstruct
from jaxeit.recon.registry import register_method

SIM = SimulationConfig(mesh="disk", h0=0.25, image_size=16, image_supersample=2, mesh_samples=16, chunk_size=8,
                       shard_size=8, n_train=8, n_val=0, n_test=0, seed=3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder with one tiny model of each kind, trained on SIM's geometry."""
    out = tmp_path_factory.mktemp("dgm_weights")
    mesh, _ = make_mesh(SIM)
    cnf = CNF.init(CNFConfig(image_size=16, levels=2, blocks=1, hidden=(8, 8), cond_channels=(4, 4),
                             cond_width=4, n_samples=3))
    cvae_config = CVAEConfig(image_size=16, channels=(4, 8, 8, 16), mlp_widths=(16,), latent_dim=4,
                             vae=FitConfig(epochs=1), mlp=FitConfig(epochs=1))
    _, vp, _, mp = CVAE.init(cvae_config)
    cvae = CVAE(cvae_config, vp, mp, np.zeros(208, np.float32), np.ones(208, np.float32))
    score = ScoreModel.init(ScoreConfig(image_size=16, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                                        num_groups=4, sde="vesde"), jax.random.PRNGKey(0))
    save_pretrained(out, "cnf_tiny", "cnf", cnf, SIM, mesh, {"default": True, "apparent_background": [0.5, 2.0]})
    save_pretrained(out, "cvae_tiny", "cvae", cvae, SIM, mesh, {})
    save_pretrained(out, "score_tiny", "score", score, SIM, mesh, {"t0": 0.1})
    return out


@pytest.fixture(scope="module")
def data():
    """The training geometry's forward model and one sample of its data set."""
    sim = Simulator.build(SIM)
    return sim.model, sim(np.arange(2))


def test_the_network_input_is_the_data_sets_gn_image(folder, data):
    model, sample = data
    pm = load_pretrained("cnf_tiny", directory=folder)
    assert pm.kind == "cnf" and pm.card["default"] is True
    np.testing.assert_allclose(pm.gn_image(sample["voltages"]), sample["gn_image"], rtol=1e-5, atol=1e-6)
    assert pm.forward_model().mesh == model.mesh
    assert pm.mismatches(model) == []
    # element averages of a constant image are that constant
    np.testing.assert_allclose(pm.image_to_sigma(np.full((16, 16), 1.3)), 1.3, rtol=1e-12)


def test_voltages_in_other_units_are_refused(folder, data):
    model, sample = data
    pm = load_pretrained("cnf_tiny", directory=folder)
    np.testing.assert_allclose(pm.apparent_background(np.asarray(pm.operators.gn.v_bg) / 1.7), 1.7, rtol=1e-12)
    assert 0.5 < float(pm.apparent_background(sample["voltages"][0])) < 2.0
    with pytest.raises(ValueError, match="unlike the training data.*apparent background conductivity is 0.0009"):
        reconstruct(model, 1e3 * sample["voltages"][0], "cnf", weights_dir=str(folder))


def test_available_models_lists_by_kind(folder):
    assert available_models(folder) == ["cnf_tiny", "cvae_tiny", "score_tiny"]
    assert available_models(folder, "score") == ["score_tiny"]


@pytest.mark.parametrize("method, options", [("cnf", dict(n_samples=3)), ("cvae", {}),
                                             ("csd", dict(n_samples=2, n_steps=3)),
                                             ("dps", dict(n_samples=2, n_steps=3, zeta=0.5))])
def test_reconstruct_with_a_learned_method(folder, data, method, options):
    model, sample = data
    res = reconstruct(model, sample["voltages"][0], method, weights_dir=str(folder), **options)
    assert res.method == method and res.status == "done"
    assert res.image.shape == (16, 16) and np.all(np.isfinite(res.image))
    assert res.sigma.shape == (model.n_elements,) and np.all(np.isfinite(res.sigma))
    assert res.extras["model"] == {"cnf": "cnf_tiny", "cvae": "cvae_tiny", "csd": "score_tiny",
                                   "dps": "score_tiny"}[method]
    outside = ~load_pretrained(res.extras["model"], directory=folder).operators.mask
    assert np.all(res.image[outside] == 0.0)
    if method != "cvae":
        assert res.extras["std"].shape == (16, 16) and np.all(res.extras["std"] >= 0)
    if method in ("cnf", "csd"):
        np.testing.assert_allclose(res.extras["gn_image"], sample["gn_image"][0], rtol=1e-5, atol=1e-6)
    if method in ("cnf", "dps"):
        assert res.extras["samples"].shape == (options["n_samples"], 16, 16)
        again = reconstruct(model, sample["voltages"][0], method, weights_dir=str(folder), **options)
        np.testing.assert_array_equal(again.image, res.image)          # the default key is fixed


def test_the_csd_start_time_defaults_to_the_card(folder, data):
    model, sample = data
    res = reconstruct(model, sample["voltages"][0], "csd", weights_dir=str(folder), n_samples=1, n_steps=2)
    assert res.options["t0"] is None       # resolved from the card (0.1) at run time
    with pytest.raises(ValueError, match="t0 must be in"):
        reconstruct(model, sample["voltages"][0], "csd", weights_dir=str(folder), t0=1.5)


def test_the_csd_input_follows_the_card(folder, data, tmp_path):
    """A card with ``csd_input: "lm"`` makes CSD* start from the iterative LM image (the paper's GN) at the
    card's weight."""
    model, sample = data
    pm = load_pretrained("score_tiny", directory=folder)
    card = {"t0": 0.1, "csd_input": "lm", "lm_alpha": 1.0, "lm_iterations": 3, "n_steps": 2}
    save_pretrained(tmp_path, "score_lm", "score", pm.model, SIM, pm.mesh, card)
    v = sample["voltages"][0]
    res = reconstruct(model, v, "csd", weights_dir=str(tmp_path), n_samples=1)
    lm = pm.operators.lm_image(v, alpha=1.0, max_iter=3)
    np.testing.assert_allclose(res.extras["gn_image"], lm, rtol=1e-6)
    assert not np.allclose(lm, pm.gn_image(v), atol=1e-3)
    assert load_pretrained("score_lm", directory=tmp_path).csd_input(v).shape == (16, 16)


def test_dps_likelihood_steps_pull_the_samples_towards_the_data(folder, data):
    """DPS through the training geometry's FEM: with ζ > 0 the samples explain the voltages better than the
    prior's samples alone (ζ = 0, same key); a negative ζ and a model of another kind are refused."""
    model, sample = data
    pm = load_pretrained("score_tiny", directory=folder)
    v = sample["voltages"][0]

    def misfit(zeta):
        res = reconstruct(model, v, "dps", weights_dir=str(folder), n_samples=2, n_steps=30, zeta=zeta)
        return np.linalg.norm(np.asarray(model.voltages(res.sigma)) - v)

    # the tiny score model is untrained (score 0): the pull is weak but must point towards the data
    assert misfit(100.0) < 0.97 * misfit(0.0)
    with pytest.raises(ValueError, match="zeta must be a number >= 0"):
        reconstruct(model, v, "dps", weights_dir=str(folder), zeta=-1.0)
    with pytest.raises(ValueError, match="DPS needs a score model"):
        load_pretrained("cnf_tiny", directory=folder).posterior_samples(v, jax.random.PRNGKey(0), zeta=1.0,
                                                                        n_samples=1, n_steps=2)
    assert pm.posterior_samples(v, jax.random.PRNGKey(0), zeta=1.0, n_samples=1, n_steps=2).shape == (1, 16, 16)


def test_another_geometry_is_refused_with_what_differs(folder, data):
    model, sample = data
    other_mesh = ForwardModel(disk(n_electrodes=16, h=0.3), adjacent(16), electrode_model="point")
    with pytest.raises(ValueError, match="no cnf model was trained on this geometry.*different mesh"):
        reconstruct(other_mesh, sample["voltages"][0], "cnf", weights_dir=str(folder))
    eight = ForwardModel(disk(n_electrodes=8, h=0.3), adjacent(8), electrode_model="point")
    with pytest.raises(ValueError, match="8 electrodes, trained on 16"):
        reconstruct(eight, np.linspace(1, 2, eight.n_measurements), "cnf", weights_dir=str(folder),
                    weights="cnf_tiny")
    cem = ForwardModel(model.mesh, model.protocol, electrode_model="cem") if len(model.mesh.electrode_edges) \
        else None
    if cem is not None:
        with pytest.raises(ValueError, match="electrode model 'cem', trained on 'point'"):
            find_pretrained("cnf", cem, name="cnf_tiny", directory=folder)


def test_a_model_of_another_kind_or_a_missing_one_is_a_clear_error(folder, data, tmp_path):
    model, _ = data
    with pytest.raises(ValueError, match="'cvae_tiny' is a cvae model, not a cnf model"):
        find_pretrained("cnf", model, name="cvae_tiny", directory=folder)
    with pytest.raises(FileNotFoundError, match="missing.*cnf_tiny, cvae_tiny, score_tiny"):
        load_pretrained("cnf_nothing", directory=folder)
    with pytest.raises(ValueError, match="no cnf model is shipped in"):
        find_pretrained("cnf", model, directory=tmp_path)


def test_a_damaged_file_is_named(folder, tmp_path):
    for f in folder.glob("cnf_tiny*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    target = tmp_path / "cnf_tiny.npz"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"cnf_tiny\.npz is corrupt.*truncated or altered"):
        load_pretrained("cnf_tiny", directory=tmp_path)
    (tmp_path / "cnf_tiny.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest .*cnf_tiny\.json is corrupt"):
        load_pretrained("cnf_tiny", directory=tmp_path)


def test_save_refuses_a_model_of_the_wrong_class(folder, tmp_path):
    pm = load_pretrained("cnf_tiny", directory=folder)
    with pytest.raises(ValueError, match="a cvae model must be a CVAE, got CNF"):
        save_pretrained(tmp_path, "x", "cvae", pm.model, SIM, pm.mesh, {})
    with pytest.raises(ValueError, match="kind must be one of"):
        save_pretrained(tmp_path, "x", "gan", pm.model, SIM, pm.mesh, {})


def test_the_learned_methods_are_registered_and_names_stay_unique():
    assert {"cnf", "cvae", "csd", "dps"} <= set(METHODS)
    assert register_method(METHODS["cnf"]) is METHODS["cnf"]       # registering again is harmless

    class Impostor(METHODS["gn"]):
        pass
    with pytest.raises(ValueError, match="method name 'gn' is taken"):
        register_method(Impostor)


def test_the_command_line_uses_the_models_geometry(folder, data, tmp_path, monkeypatch):
    from jaxeit import cli
    from jaxeit.dgm import pretrained

    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    model, sample = data
    np.savez(tmp_path / "v.npz", v=sample["voltages"][0])
    code = cli.main(["reconstruct", str(tmp_path / "v.npz"), "--method", "cnf", "--out", str(tmp_path / "out"),
                     "--quiet", "--no-compile-cache"])
    assert code == 0
    out = np.load(tmp_path / "out" / "v_cnf.npz")
    assert out["sigma"].shape == (model.n_elements,) and out["image"].shape == (128, 128)
    assert (tmp_path / "out" / "v_cnf.png").is_file()
    # --weights with a classical method is an error, before any computing
    assert cli.main(["reconstruct", str(tmp_path / "v.npz"), "--method", "gn", "--weights", "cnf_tiny",
                     "--out", str(tmp_path / "o2"), "--quiet", "--no-compile-cache"]) == 2


@pytest.mark.parametrize("name", ["cnf_c4_40db", "cvae_c4_40db"])
def test_a_shipped_model_beats_its_gn_input_on_new_phantoms(name):
    """The shipped weights load offline and, on new 4-circle phantoms at 40 dB simulated on their own
    geometry, score a higher paper-convention SSIM than the one-step GN image (all 6 cases on average)."""
    from jaxeit import metrics
    from jaxeit.noise import add_noise
    from jaxeit.phantoms import on_grid, on_mesh, random_circles

    if name not in available_models():
        pytest.fail(f"{name} is not shipped in jaxeit/dgm/weights")
    pm = load_pretrained(name)
    fm = pm.forward_model()
    inside = pm.operators.mask
    gains = []
    for i in range(6):
        k_ph, k_noise = jax.random.split(jax.random.PRNGKey(1000 + i))
        ph = random_circles(k_ph, 4, values=(0.01, 0.1, 0.5, 1.5), background=1.0)
        v = np.asarray(add_noise(fm.voltages(on_mesh(ph, fm.mesh)), 40.0, k_noise))
        truth = np.where(inside, np.asarray(on_grid(ph, pm.operators.grid)), 0.0)
        res = reconstruct(fm, v, pm.card["method"])
        ssim = {k: float(metrics.paper_metrics(x, truth, inside)["SSIM"])
                for k, x in (("gn", pm.masked(pm.gn_image(v))), ("learned", res.image))}
        gains.append(ssim["learned"] - ssim["gn"])
    assert np.mean(gains) > 0.05, gains
