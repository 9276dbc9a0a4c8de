"""Configuration of a simulated paired EIT data set (DGM comparison paper, §4.1).

:class:`SimulationConfig` is a frozen dataclass: every number that the paper
gives is a named default with a pointer to its section; everything the paper
leaves open (mesh density, radii, the GN regularisation) is a documented
choice. ``to_dict`` / ``from_dict`` round-trip through JSON, and the dict is
stored in the data set's ``metadata.json`` so a data set can always be
regenerated, shard by shard.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["SimulationConfig", "PAPER_SPLITS"]

#: The paper's split sizes (§4.1): 23,810 pairs, 21,600 train, 2,160 validation, the rest (50) test.
PAPER_SPLITS = (21_600, 2_160, 50)

_GN_PRIORS = ("lm", "kotre", "laplace", "tikhonov")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines a simulated data set.

    Phantoms (paper §4.1):
        n_circles: 2 or 4 non-overlapping random circles on the unit disk
            (:func:`jaxeit.phantoms.random_circles`: centres uniform in
            [-0.55, 0.55]², radii uniform in [0.15, 0.25], gap ≥ 0.05, inside
            the disk; the paper's radius distribution is lost in our copy).
        circle_values: "fixed" (default): circle k gets the k-th value of the
            paper's set, {0.5, 1.5} for 2 circles and {0.01, 0.1, 0.5, 1.5} for 4
            ("the conductivity values are 0.5 and 1.5 respectively in each
            circle"); the circles are exchangeable, so this is a random
            permutation of the set. "random": each circle draws its value
            uniformly and independently from the set (the default of
            :func:`~jaxeit.phantoms.random_circles`).
        background: σ of the background (1.0, §4.1).

    Forward model:
        electrode_model: "point" (pyEIT's model, the paper's setting: current
            through boundary nodes) or "cem" (complete electrode model on a
            jaxeit disk mesh with electrodes of width ``electrode_width``).
        mesh: "pyeit" (``pyeit.mesh.create(16, h0=h0)``, converted with
            :func:`jaxeit.mesh.from_pyeit`; needs pyeit) or "disk"
            (:func:`jaxeit.mesh.disk` with element size ``h0``). "auto": pyeit
            for the point model when pyeit is installed, else a disk. The CEM
            always uses a disk (pyEIT meshes carry no electrode edges).
        h0: element size (pyEIT's default 0.1: 376 nodes, 686 triangles).
        electrode_width: CEM electrode arc length (unit-disk units).
        contact_impedance: CEM contact impedance z.
        mesh_samples: sub-triangles per element used to average the phantom
            over each element (:func:`jaxeit.phantoms.on_mesh`; 64 = 8²).
        n_electrodes: 16 with the adjacent protocol (208 measurements,
            pyEIT's ``std`` parser).

    Noise (§4.1, Tests 1–3): snr_db, 40 or 25 dB; white Gaussian noise with
    std ‖v‖/√M · 10^(−SNR/20) per sample (:func:`jaxeit.noise.add_noise`).

    Images: image_size × image_size pixels over [-1, 1]² (128 in the paper);
    the ground truth is the exact pixel average of the phantom
    (:func:`jaxeit.phantoms.on_grid`, ``image_supersample``² sub-pixels);
    pixels whose centre lies outside the mesh are ``exterior_value`` (0, as
    pyEIT's masked interpolation used by the DGM code).

    Gauss–Newton image (the conditioning input of the CNF, §3.2, and the GN
    baseline): see :mod:`jaxeit.recon.linear`.
        gn_method: "linear" (default): one linearised regularised GN step
            from the known background, σ = σ_bg·exp(H (v − F(σ_bg))) with the
            precomputed H = (J_sᵀJ_s + λR)⁻¹J_sᵀ at σ_bg (J_s the Jacobian in
            log σ), applied to a whole chunk as one matrix product;
            "iterative": the regularised Gauss–Newton
            of :func:`jaxeit.recon.gauss_newton` (line search, in log σ),
            run per sample (slow).
        gn_param: "log" (default; the step is taken in log σ) or "linear"
            (σ = σ_bg + H (v − F(σ_bg)) with the Jacobian in σ).
        gn_prior: R: "lm" (diag(JᵀJ), the Levenberg–Marquardt / NOSER choice
            of the paper's eq. 9), "kotre" (diag(JᵀJ)^p, pyEIT's JAC default),
            "laplace" or "tikhonov".
        gn_alpha: dimensionless weight; λ = alpha · mean diag(JᵀJ) / mean diag(R).
            The default 3.0 was chosen on 256 held-out samples of each of the
            four settings (2/4 circles, 40/25 dB; 64 px): it is within ~15 %
            of the best in-domain MSE of every setting.
        gn_p: the Kotre exponent.
        gn_iterations: iterations of the "iterative" method.
        gn_render: "nodes" (element values averaged to the nodes by area, then
            P1-interpolated at the pixel centres: smooth, like pyEIT's
            interpolation) or "elements" (element lookup).

    Sizes and bookkeeping:
        n_train, n_val, n_test: split sizes; samples 0..n_train-1 are the
            training split, then validation, then test (paper: 21,600 /
            2,160 / 50 of 23,810).
        shard_size: samples per .npz shard (a multiple of chunk_size).
        chunk_size: samples per vmapped batch (the last chunk is padded, so
            every chunk runs the same compiled program).
        seed: sample i depends only on (seed, i).
        compress: write shards with ``np.savez_compressed``.
    """

    n_circles: int = 2                 # §4.1: 2 or 4 anomalies
    snr_db: float = 40.0               # §4.1: Test 1 40 dB, Test 2 25 dB
    circle_values: str = "fixed"
    background: float = 1.0            # §4.1
    electrode_model: str = "point"     # §4.1: pyEIT, current through boundary nodes
    mesh: str = "auto"
    h0: float = 0.1                    # pyEIT's default mesh size
    electrode_width: float = 0.2
    contact_impedance: float = 0.01
    mesh_samples: int = 64
    n_electrodes: int = 16             # §4.1 / pyEIT: 16 electrodes, adjacent, 208 measurements
    image_size: int = 128              # §4.1: 128 × 128 pixels
    image_supersample: int = 4
    exterior_value: float = 0.0
    gn_method: str = "linear"
    gn_param: str = "log"
    gn_prior: str = "lm"               # eq. 9: Levenberg–Marquardt-type diagonal
    gn_alpha: float = 3.0
    gn_p: float = 0.2
    gn_iterations: int = 5
    gn_render: str = "nodes"
    n_train: int = PAPER_SPLITS[0]     # §4.1
    n_val: int = PAPER_SPLITS[1]       # §4.1
    n_test: int = PAPER_SPLITS[2]      # §4.1: the rest of 23,810
    shard_size: int = 1024
    chunk_size: int = 64
    seed: int = 0
    compress: bool = False

    def __post_init__(self):
        def bad(msg):
            raise ValueError(f"SimulationConfig: {msg}")

        if self.n_circles < 1:
            bad(f"n_circles must be >= 1, got {self.n_circles}")
        if self.circle_values not in ("fixed", "random"):
            bad(f"circle_values must be 'fixed' or 'random', got {self.circle_values!r}")
        if self.n_circles not in (2, 4):
            bad(f"n_circles must be 2 or 4 (the paper's value sets), got {self.n_circles}")
        if not math.isfinite(self.snr_db):
            bad(f"snr_db must be finite, got {self.snr_db}")
        if self.electrode_model not in ("point", "cem"):
            bad(f"electrode_model must be 'point' or 'cem', got {self.electrode_model!r}")
        if self.mesh not in ("auto", "pyeit", "disk"):
            bad(f"mesh must be 'auto', 'pyeit' or 'disk', got {self.mesh!r}")
        if self.mesh == "pyeit" and self.electrode_model == "cem":
            bad("a pyEIT mesh has no electrode edges: use mesh='disk' (or 'auto') with the CEM")
        if self.h0 <= 0 or self.background <= 0 or self.contact_impedance <= 0:
            bad("h0, background and contact_impedance must be positive")
        if math.isqrt(self.mesh_samples) ** 2 != self.mesh_samples:
            bad(f"mesh_samples must be a perfect square, got {self.mesh_samples}")
        if self.image_size < 8 or self.image_supersample < 1:
            bad(f"image_size must be >= 8 and image_supersample >= 1, got {self.image_size}, "
                f"{self.image_supersample}")
        if self.gn_method not in ("linear", "iterative"):
            bad(f"gn_method must be 'linear' or 'iterative', got {self.gn_method!r}")
        if self.gn_param not in ("log", "linear"):
            bad(f"gn_param must be 'log' or 'linear', got {self.gn_param!r}")
        if self.gn_method == "iterative" and self.gn_param != "log":
            bad("the iterative GN works in log sigma: use gn_param='log'")
        if self.gn_prior not in _GN_PRIORS:
            bad(f"gn_prior must be one of {_GN_PRIORS}, got {self.gn_prior!r}")
        if self.gn_method == "iterative" and self.gn_prior == "kotre":
            bad("the iterative GN supports gn_prior 'lm' (as 'noser'), 'laplace' or 'tikhonov'")
        if self.gn_alpha <= 0 or self.gn_iterations < 1:
            bad("gn_alpha must be > 0 and gn_iterations >= 1")
        if self.gn_render not in ("nodes", "elements"):
            bad(f"gn_render must be 'nodes' or 'elements', got {self.gn_render!r}")
        if min(self.n_train, self.n_val, self.n_test) < 0 or self.n_samples == 0:
            bad(f"split sizes must be >= 0 with a positive total, got "
                f"{(self.n_train, self.n_val, self.n_test)}")
        if self.chunk_size < 1 or self.shard_size < 1 or self.shard_size % self.chunk_size:
            bad(f"shard_size ({self.shard_size}) must be a positive multiple of chunk_size "
                f"({self.chunk_size})")

    # -- derived --------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        """Total number of samples (all splits)."""
        return self.n_train + self.n_val + self.n_test

    @property
    def splits(self) -> dict[str, tuple[int, int]]:
        """``{name: (start, stop)}`` global sample index ranges of the splits."""
        a, b = self.n_train, self.n_train + self.n_val
        return {"train": (0, a), "val": (a, b), "test": (b, self.n_samples)}

    def shards(self, split: str) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` global index ranges of the shards of ``split``."""
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; choose 'train', 'val' or 'test'")
        lo, hi = self.splits[split]
        return [(s, min(s + self.shard_size, hi)) for s in range(lo, hi, self.shard_size)]

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SimulationConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SimulationConfig fields {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "SimulationConfig":
        return dataclasses.replace(self, **changes)
