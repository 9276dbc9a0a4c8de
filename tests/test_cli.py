"""The jaxeit command: help texts, one-line errors, reconstruct from an .npz."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxeit import ForwardModel, cli, mesh, protocol


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["reconstruct", "--help"], ["benchmark", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["reconstruct", str(tmp_path / "missing.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxeit: error:") and "\n" not in err
    bad = tmp_path / "bad.npz"
    np.savez(bad, w=np.zeros(3))
    assert cli.main(["reconstruct", str(bad)]) == 2
    assert "'v'" in capsys.readouterr().err


def test_reconstruct_npz(tmp_path):
    m = mesh.disk(h=0.25, edge_refinement=0.6)
    fm = ForwardModel(m, protocol.adjacent(16))
    sigma = 1.0 + 0.5 * (np.linalg.norm(m.centroids() - [0.3, 0.2], axis=1) < 0.35)
    path = tmp_path / "data.npz"
    np.savez(path, v=np.asarray(fm.voltages(jnp.asarray(sigma))))
    assert cli.main(["reconstruct", str(path), "--method", "one-step", "--h", "0.25", "--out", str(tmp_path)]) == 0
    out = np.load(tmp_path / "data_one-step.npz")
    assert out["image"].shape == (128, 128) and (tmp_path / "data_one-step.png").exists()
