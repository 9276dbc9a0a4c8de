"""Simulated paired EIT data sets (σ, image, noisy voltages, Gauss–Newton image) in shards.

    >>> from jaxeit.data import SimulationConfig, simulate, load_split
    >>> root = simulate(SimulationConfig(n_circles=2, snr_db=40, image_size=64,
    ...                                  n_train=2000, n_val=200, n_test=200), "out/data/c2_40")
    >>> train = load_split(root, "train", fields=("image", "gn_image", "voltages"))

See :mod:`jaxeit.data.simulate` (generation), :mod:`jaxeit.data.store` (file
layout and loading), :mod:`jaxeit.recon.linear` (the batched Gauss–Newton) and
:mod:`jaxeit.data.cli` (the ``jaxeit simulate`` command line).
"""

from .config import PAPER_SPLITS, SimulationConfig
from ..recon.linear import LinearGN
from .simulate import PAPER_VALUES, Operators, Simulator, default_name, make_mesh, sample_keys, simulate
from .store import FIELDS, load_geometry, load_split, read_metadata, verify_shard

__all__ = ["SimulationConfig", "PAPER_SPLITS", "PAPER_VALUES", "LinearGN", "Operators", "Simulator", "simulate",
           "default_name", "make_mesh", "sample_keys", "load_split", "load_geometry", "read_metadata",
           "verify_shard", "FIELDS", "main"]


def main(argv=None) -> int:
    """The ``jaxeit simulate`` command line (see :func:`jaxeit.data.cli.main`)."""
    from .cli import main as _main

    return _main(argv)
