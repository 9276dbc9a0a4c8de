"""The jaxeit command: help texts and their examples, one-line errors, reconstruct from .npz / KIT4 / KTC2023."""

import os
import shlex

import jax.numpy as jnp
import numpy as np
import pytest

from jaxeit import ForwardModel, cli, mesh, protocol

from .conftest import data_dir

COMMANDS = ("demo", "simulate", "reconstruct", "train-prior", "benchmark")


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def _examples(text: str, prefix: str) -> list[str]:
    """Example command lines of a help text that start with ``prefix`` (continuation lines joined)."""
    text = text.replace("\\\n", " ")
    return [" ".join(line.split("#")[0].split()) for line in text.splitlines() if line.strip().startswith(prefix)]


def test_top_level_help_lists_every_command(capsys):
    out = _help(["--help"], capsys)
    assert "usage" in out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command, capsys):
    out = _help([command, "--help"], capsys)
    assert "usage" in out and "examples" in out
    assert _examples(out, f"jaxeit {command}"), f"no `jaxeit {command} ...` example in its help"


def _one_line_error(argv, capsys, *fragments):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxeit: error:") and "\n" not in err, err
    for f in fragments:
        assert f in err, err


def test_errors_are_one_line(tmp_path, capsys):
    _one_line_error(["reconstruct", str(tmp_path / "missing.npz")], capsys, "does not exist")
    bad = tmp_path / "bad.npz"
    np.savez(bad, w=np.zeros(3))
    _one_line_error(["reconstruct", str(bad)], capsys, "'v'")
    nan = tmp_path / "nan.npz"
    v = np.ones(208)
    v[[3, 7]] = np.nan
    np.savez(nan, v=v)
    _one_line_error(["reconstruct", str(nan), "--method", "one-step"], capsys, "2 NaN/inf", "index 3")
    _one_line_error(["reconstruct", str(nan), "--method", "magic"], capsys, "unknown method 'magic'", "inr+tv")
    other = tmp_path / "other.mat"
    from scipy.io import savemat

    savemat(other, {"x": np.zeros(3)})
    _one_line_error(["reconstruct", str(other)], capsys, "neither a KIT4", "['x']")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _one_line_error(["reconstruct", str(text)], capsys, "expected an .npz")


def test_reconstruct_npz(tmp_path):
    m = mesh.disk(h=0.25, edge_refinement=0.6)
    fm = ForwardModel(m, protocol.adjacent(16))
    sigma = 1.0 + 0.5 * (np.linalg.norm(m.centroids() - [0.3, 0.2], axis=1) < 0.35)
    path = tmp_path / "data.npz"
    np.savez(path, v=np.asarray(fm.voltages(jnp.asarray(sigma))))
    assert cli.main(["reconstruct", str(path), "--method", "one-step", "--h", "0.25", "--out", str(tmp_path)]) == 0
    out = np.load(tmp_path / "data_one-step.npz")
    assert out["image"].shape == (128, 128) and (tmp_path / "data_one-step.png").exists()


def test_reconstruct_npz_help_example_runs(tmp_path, capsys, monkeypatch):
    example = _examples(_help(["reconstruct", "--help"], capsys), "jaxeit reconstruct data.npz")[0]
    m = mesh.disk(h=0.1)
    sigma = 1.0 + 0.5 * (np.linalg.norm(m.centroids() - [0.3, 0.2], axis=1) < 0.35)
    monkeypatch.chdir(tmp_path)
    np.savez("data.npz", v=np.asarray(ForwardModel(m, protocol.adjacent(16), contact_impedance=0.01)
                                      .voltages(jnp.asarray(sigma))))
    assert cli.main(shlex.split(example)[1:]) == 0
    out = np.load(tmp_path / "out" / "data_gn.npz")
    inside = out["image"][np.isfinite(out["image"]) & (out["image"] != 0)]
    assert inside.max() > 1.1  # the inclusion (σ = 1.5) shows up
    assert (tmp_path / "out" / "data_gn.png").exists()


@pytest.mark.parametrize("kind", ["kit4", "ktc2023"])
def test_real_data_help_examples_run(kind, tmp_path, capsys, monkeypatch):
    """The cheap (coarse-mesh) real-data examples of `jaxeit reconstruct --help`."""
    if kind == "kit4" and os.environ.get("JAXEIT_SLOW_TESTS") != "1":
        # ~1.5 CPU-min (calibration + GN); the same KIT4 pipeline runs in test_realdata.py::test_real_data_smoke
        pytest.skip("the KIT4 example runs with JAXEIT_SLOW_TESTS=1")
    if not (data_dir() / kind).is_dir():
        pytest.skip(f"real data not found at {data_dir() / kind} (set JAXEIT_DATA)")
    lines = [e for e in _examples(_help(["reconstruct", "--help"], capsys), f"jaxeit reconstruct {kind}/")
             if "--h 0.025" in e]
    assert lines
    argv = shlex.split(lines[0])[1:]   # verbatim: the relative path is found through $JAXEIT_DATA
    argv[argv.index("--out") + 1] = str(tmp_path)
    monkeypatch.setenv("JAXEIT_DATA", str(data_dir()))
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 1 and files[0].with_suffix(".png").exists()
    out = np.load(files[0])
    if kind == "ktc2023":
        assert out["segmentation"].shape == (256, 256) and int(out["level"]) == 4
        assert 0.0 < float(out["score"]) <= 1.0 and "score" in printed
    else:
        assert out["image"].shape == (128, 128) and np.ptp(out["contrast"]) > 0.1


def test_simulate_help_example_runs(tmp_path, capsys):
    example = [e for e in _examples(_help(["simulate", "--help"], capsys), "jaxeit simulate") if "--size 16" in e][0]
    argv = shlex.split(example.replace("/tmp/tiny_data", str(tmp_path / "tiny")))[1:]
    assert cli.main(argv) == 0
    from jaxeit.data import load_split

    train = load_split(tmp_path / "tiny", "train", fields=("image", "gn_image"))
    assert train["image"].shape == (32, 16, 16) and np.isfinite(train["gn_image"]).all()


def test_train_prior_help_example_runs(tmp_path, capsys):
    if os.environ.get("JAXEIT_SLOW_TESTS") != "1":
        # ~50 s; the same trainer runs at a tiny size in test_priors_train.py
        pytest.skip("the train-prior example runs with JAXEIT_SLOW_TESTS=1")
    example = [e for e in _examples(_help(["train-prior", "--help"], capsys), "jaxeit train-prior")
               if "/tmp/tiny" in e][0]
    assert cli.main(shlex.split(example.replace("/tmp/tiny", str(tmp_path)))[1:]) == 0
    assert (tmp_path / "checkpoint.npz").exists()


def test_train_prior_error_is_one_line(tmp_path, capsys):
    assert cli.main(["train-prior", "--workdir", str(tmp_path), "--export-only", "--export", "x"]) != 0
    err = capsys.readouterr().err.strip()
    assert "error" in err and "\n" not in err and "Traceback" not in err


def test_cli_turns_on_the_compilation_cache_unless_told_not_to(tmp_path, monkeypatch):
    import jax

    from jaxeit import compilation_cache

    monkeypatch.setenv("JAXEIT_CACHE_DIR", str(tmp_path / "xla"))
    monkeypatch.setenv("JAXEIT_COMPILE_CACHE", "1")
    try:
        assert cli._use_compilation_cache(["demo", "--no-compile-cache"]) == ["demo"]
        assert compilation_cache.enabled_dir() is None
        assert cli._use_compilation_cache(["demo", "--quick"]) == ["demo", "--quick"]
        assert compilation_cache.enabled_dir() == (tmp_path / "xla").resolve()
    finally:
        compilation_cache.disable()
    assert not jax.config.jax_enable_compilation_cache or compilation_cache.enabled_dir() is None


def test_help_is_plain_text_with_a_line_per_method(capsys):
    top = _help(["--help"], capsys)
    assert "``" not in top
    out = _help(["reconstruct", "--help"], capsys)
    assert "`" not in out
    from jaxeit.recon import METHODS

    for name in METHODS:
        assert f"\n  {name} " in out, name


def _ktc_line(level, out, *extra):
    return ["reconstruct", "ktc2023/training/data1.mat", "--method", "baseline", "--level", str(level), "--h", "0.03",
            "--out", str(out), "--quiet", *extra]


def test_outputs_carry_the_level_and_are_not_overwritten(tmp_path, capsys, monkeypatch):
    if not (data_dir() / "ktc2023").is_dir():
        pytest.skip(f"real data not found at {data_dir() / 'ktc2023'} (set JAXEIT_DATA)")
    monkeypatch.setenv("JAXEIT_DATA", str(data_dir()))
    monkeypatch.chdir(tmp_path)
    assert cli.main(_ktc_line(1, tmp_path)) == 0
    assert cli.main(_ktc_line(4, tmp_path)) == 0
    names = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert names == ["data1_L1_baseline.npz", "data1_L4_baseline.npz"]
    # the challenge's submission format beside it: `reconstruction`, (256, 256) uint8, scored as in the .npz
    from scipy.io import loadmat

    from jaxeit.io import load_ktc_truth
    from jaxeit.realdata.ktc import score

    submitted = loadmat(tmp_path / "data1_L4_baseline.mat")["reconstruction"]
    saved = np.load(tmp_path / "data1_L4_baseline.npz")
    assert submitted.shape == (256, 256) and submitted.dtype == np.uint8
    np.testing.assert_array_equal(submitted, saved["segmentation"])
    truth = load_ktc_truth(data_dir() / "ktc2023/training/true1.mat")
    assert score(submitted, truth) == pytest.approx(float(saved["score"]))
    before = (tmp_path / "data1_L4_baseline.npz").stat().st_mtime_ns
    capsys.readouterr()
    _one_line_error(_ktc_line(4, tmp_path), capsys, "data1_L4_baseline.npz already exists", "--overwrite")
    assert (tmp_path / "data1_L4_baseline.npz").stat().st_mtime_ns == before
    assert cli.main(_ktc_line(4, tmp_path, "--overwrite")) == 0


def test_repeated_npz_run_needs_overwrite(tmp_path, capsys):
    m = mesh.disk(h=0.25, edge_refinement=0.6)
    path = tmp_path / "data.npz"
    np.savez(path, v=np.asarray(ForwardModel(m, protocol.adjacent(16)).voltages(jnp.ones(m.n_elements) * 1.3)))
    argv = ["reconstruct", str(path), "--method", "one-step", "--h", "0.25", "--out", str(tmp_path), "--quiet"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    _one_line_error(argv, capsys, "already exists", "--overwrite")
    assert cli.main(argv + ["--overwrite"]) == 0
