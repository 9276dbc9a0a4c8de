"""Shipped DGM models: load one by name, offline, together with the geometry it was trained on.

A learned model is only right for data of the geometry, electrode model and
protocol of its training set, so a shipped model carries them. It is four
files in :data:`WEIGHTS_DIR` (or any folder):

* ``<name>.npz`` — the model, as its own ``save`` writes it (parameters, config, history);
* ``<name>.mesh.npz`` — the forward mesh of its training data (:meth:`jaxeit.mesh.Mesh.save`);
* ``<name>.json`` — the manifest: ``kind`` (``"cnf"``, ``"cvae"`` or ``"score"``), the
  :class:`~jaxeit.data.SimulationConfig` of the training data, the SHA-256 of both
  ``.npz`` files, and the card (training record, validation scores, choices made on
  validation such as CSD*'s ``t0``);
* ``<name>.md`` — the human-readable model card (written by ``benchmarks/dgm_pretrain.py``).

:func:`load_pretrained` checks sizes and digests before it reads anything, so a
truncated or altered file gives an error that names it. :class:`PretrainedDGM`
turns voltages into the network's input exactly as the data set did
(:class:`jaxeit.data.Operators`) and checks a forward model against the
training geometry (:meth:`PretrainedDGM.check_geometry`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from ..data import Operators, SimulationConfig
from ..data.simulate import PAPER_VALUES
from ..forward import ForwardModel
from ..grid import grid_to_mesh
from ..io_utils import atomic_write_text
from ..mesh import Mesh
from ..protocol import adjacent
from .cnf import CNF
from .cvae import CVAE
from .score import ScoreModel

__all__ = ["KINDS", "WEIGHTS_DIR", "MAX_FILE_BYTES", "PretrainedDGM", "available_models", "load_pretrained",
           "find_pretrained", "default_pretrained", "save_pretrained", "image_measurement"]

#: kind → model class
KINDS = {"cnf": CNF, "cvae": CVAE, "score": ScoreModel}
#: where the shipped models live
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: the largest file a shipped model may have (so that it moves easily between machines)
MAX_FILE_BYTES = 16 * 2**20

_REGEN = "regenerate it with `python benchmarks/dgm_pretrain.py` (see the model card)"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(directory: Path, name: str) -> dict[str, Path]:
    return {"model": directory / f"{name}.npz", "mesh": directory / f"{name}.mesh.npz",
            "manifest": directory / f"{name}.json"}


@dataclasses.dataclass(frozen=True, eq=False)
class PretrainedDGM:
    """A shipped model with the geometry and data pipeline of its training set.

    Attributes:
        name: the model's name (its file stem).
        kind: ``"cnf"``, ``"cvae"`` or ``"score"``.
        model: the :class:`~jaxeit.dgm.CNF`, :class:`~jaxeit.dgm.CVAE` or :class:`~jaxeit.dgm.ScoreModel`.
        simulation: the :class:`~jaxeit.data.SimulationConfig` of the training data.
        mesh: the forward mesh of the training data.
        card: the manifest's card (training record, validation scores and choices).
    """

    name: str
    kind: str
    model: object
    simulation: SimulationConfig
    mesh: Mesh
    card: dict

    @functools.cached_property
    def operators(self) -> Operators:
        """The data set's forward model, GN operator, image grid and mask on the stored mesh."""
        return Operators.build(self.simulation, self.mesh)

    def forward_model(self) -> ForwardModel:
        """The forward model whose voltages the network was trained on (simulate or check data with it)."""
        return self.operators.model

    @property
    def image_size(self) -> int:
        return self.simulation.image_size

    def mismatches(self, model: ForwardModel) -> list[str]:
        """How ``model`` differs from the training geometry (empty when it matches)."""
        sim = self.simulation
        out = []
        if model.electrode_model != sim.electrode_model:
            out.append(f"electrode model {model.electrode_model!r}, trained on {sim.electrode_model!r}")
        if model.mesh.n_electrodes != sim.n_electrodes:
            out.append(f"{model.mesh.n_electrodes} electrodes, trained on {sim.n_electrodes}")
        elif model.protocol != adjacent(sim.n_electrodes):
            out.append(f"a protocol of {model.n_measurements} measurements that is not the adjacent "
                       f"{sim.n_electrodes}-electrode protocol it was trained on")
        if model.mesh != self.mesh:
            out.append(f"a different mesh ({model.mesh.n_nodes} nodes, {model.mesh.n_elements} elements; "
                       f"trained on {self.mesh.n_nodes} nodes, {self.mesh.n_elements} elements)")
        if sim.electrode_model == "cem" and not np.allclose(np.asarray(model.contact_impedance),
                                                            sim.contact_impedance):
            out.append(f"contact impedance {np.asarray(model.contact_impedance)}, trained on "
                       f"{sim.contact_impedance}")
        return out

    def check_geometry(self, model: ForwardModel) -> None:
        """A ValueError naming every difference between ``model`` and the training geometry."""
        bad = self.mismatches(model)
        if bad:
            raise ValueError(f"the {self.kind} model {self.name!r} was trained on another geometry: this forward "
                             f"model has {'; '.join(bad)}. A learned model gives a silently wrong image on data "
                             f"it was not trained for: use jaxeit.dgm.load_pretrained({self.name!r})"
                             ".forward_model() for simulated data, or train a model for your geometry "
                             "(benchmarks/dgm_pretrain.py)")

    def apparent_background(self, v) -> np.ndarray:
        """(..., M) voltages → (...) the homogeneous conductivity whose voltages fit them best (least squares).

        Voltages scale as 1/σ, so this is σ_bg · (v_bg · v_bg) / (v · v_bg); it reveals data in other units,
        of another current or of another geometry's scale.
        """
        v_bg = np.asarray(self.operators.gn.v_bg, np.float64)
        dot = np.asarray(v, np.float64) @ v_bg
        with np.errstate(divide="ignore"):
            return self.simulation.background * (v_bg @ v_bg) / dot

    def check_data(self, v) -> None:
        """A ValueError when ``v`` is unlike the training data: its apparent background conductivity
        (:meth:`apparent_background`) outside 1.5× the range the card records for the training voltages."""
        rng = self.card.get("apparent_background")
        if rng is None:
            return
        a = float(np.min(self.apparent_background(v))), float(np.max(self.apparent_background(v)))
        lo, hi = rng[0] / 1.5, rng[1] * 1.5
        if not (np.isfinite(a[0]) and lo <= a[0] and a[1] <= hi):
            raise ValueError(f"these voltages are unlike the training data of the {self.kind} model {self.name!r}: "
                             f"their apparent background conductivity is {a[0] if a[0] < lo else a[1]:.4g}, "
                             f"the training voltages' lie in [{rng[0]:.4g}, {rng[1]:.4g}]. The model needs data "
                             f"of its geometry in its units (unit current, background {self.simulation.background:g}"
                             "); check the units, the current amplitude and the electrode order")

    def gn_image(self, v) -> np.ndarray:
        """(..., M) voltages → (..., n, n) float32 GN images, the CNF's and CSD*'s input (as in training)."""
        return self.operators.gn_image(v)

    def csd_input(self, v) -> np.ndarray:
        """(..., M) voltages → (..., n, n) CSD*'s input images as the model card says: the iterative LM image
        (``csd_input: "lm"``, the card's ``lm_alpha`` and ``lm_iterations``; ~0.2 s per sample) or the
        one-step GN image."""
        if self.card.get("csd_input") != "lm":
            return self.gn_image(v)
        return self.operators.lm_image(v, alpha=float(self.card["lm_alpha"]),
                                       max_iter=int(self.card.get("lm_iterations", 10)))

    def posterior_samples(self, v, key, *, zeta: float, n_samples: int, n_steps: int) -> np.ndarray:
        """DPS (:func:`~jaxeit.dgm.dps_sample`) with this score model and the exact forward model of the
        training geometry: (M,) voltages → (n_samples, n, n) float32 images in image units.

        The chains run ``n_steps`` reverse-diffusion steps from T, each followed by the likelihood step
        ζ·∇‖v − F(x̂₀)‖/‖v_bg‖ (:func:`image_measurement`); x̂₀ and the samples are clipped to the
        range of the training images (exterior value … largest phantom value). One compiled program
        per (n_samples, n_steps), kept with the model.
        """
        import jax
        import jax.numpy as jnp

        from .sampling import dps_sample

        if self.kind != "score":
            raise ValueError(f"DPS needs a score model; {self.name!r} is a {self.kind} model")
        sim, score = self.simulation, self.model
        run = self._dps_programs.get((n_samples, n_steps))
        if run is None:
            measure, v_scale = image_measurement(score, self.operators, floor=1e-3 * sim.background)
            values = PAPER_VALUES[sim.n_circles]
            lo = min(sim.exterior_value, sim.background, *values)
            hi = max(sim.background, *values)
            data_range = tuple(float(score.normalize(np.float32(x))) for x in (lo, hi))
            n = self.image_size

            @jax.jit
            def run(vv, kk, zz):
                return dps_sample(score.score_fn(), score.sde, measure, vv / v_scale, kk, zeta=zz, shape=(n, n),
                                  n_samples=n_samples, n_steps=n_steps, data_range=data_range)
            self._dps_programs[(n_samples, n_steps)] = run
        xs = run(jnp.asarray(v, jnp.float64), key, jnp.asarray(zeta, jnp.float32))
        return np.asarray(score.denormalize(xs), np.float32)

    @functools.cached_property
    def _dps_programs(self) -> dict:
        return {}

    def masked(self, images) -> np.ndarray:
        """Images with the training data's exterior value outside the domain (float32)."""
        return np.where(self.operators.mask, images, self.simulation.exterior_value).astype(np.float32)

    @functools.cached_property
    def _to_mesh(self):
        ops = self.operators
        return grid_to_mesh(self.mesh, ops.grid, mask=ops.mask)

    def image_to_sigma(self, image) -> np.ndarray:
        """(n, n) image → (E,) float64 element values on the training mesh (pixel averages per element)."""
        return np.asarray(self._to_mesh(np.asarray(image, np.float64)), np.float64)


def image_measurement(model: ScoreModel, operators: Operators, *, floor: float = 1e-3):
    """DPS's forward map of one image in a score model's units: ``(F, v_scale)``.

    ``F(x)`` maps an (n, n) image ``x`` in model units to its (M,) voltages / ``v_scale``: image units
    (``model.denormalize``) → element averages over the forward mesh (:func:`jaxeit.grid.grid_to_mesh`,
    16 samples per element, pixels outside the domain ignored) → ``operators.model``'s voltages, floored
    at ``floor`` (σ must stay positive for the FEM). ``v_scale`` = ‖v_bg‖ makes the residual
    dimensionless. ``F`` is a ``jax.tree_util.Partial``, differentiable, for :func:`~jaxeit.dgm.dps_sample`.
    """
    import jax
    import jax.numpy as jnp

    to_mesh = grid_to_mesh(operators.model.mesh, operators.grid, samples=16, mask=operators.mask)
    v_scale = float(np.linalg.norm(operators.gn.v_bg))

    def measure(x):
        sigma = to_mesh(model.denormalize(x).astype(jnp.float64))
        return operators.model.voltages(jnp.maximum(sigma, floor)) / v_scale

    return jax.tree_util.Partial(measure), v_scale


def save_pretrained(directory, name: str, kind: str, model, simulation: SimulationConfig, mesh: Mesh,
                    card: dict) -> Path:
    """Write a model in the shipped format (see the module notes); returns the manifest's path.

    Every file is written atomically; the manifest goes last and records the
    digests of the others, so an interrupted save leaves no loadable half model.
    Raises a ValueError for an unknown ``kind``, a model of another class, or a
    file over :data:`MAX_FILE_BYTES`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if not isinstance(model, KINDS[kind]):
        raise ValueError(f"a {kind} model must be a {KINDS[kind].__name__}, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = _files(directory, name)
    model.save(files["model"])
    mesh.save(files["mesh"])
    for part in ("model", "mesh"):
        size = files[part].stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{files[part]} has {size / 2**20:.1f} MiB, more than the {MAX_FILE_BYTES / 2**20:.0f} "
                             "MiB a shipped file may have: use a smaller network")
    manifest = {"format": 1, "name": name, "kind": kind, "simulation": simulation.to_dict(),
                "files": {part: {"file": files[part].name, "bytes": files[part].stat().st_size,
                                 "sha256": _sha256(files[part])} for part in ("model", "mesh")},
                "card": card}
    atomic_write_text(files["manifest"], json.dumps(manifest, indent=1, default=_jsonable))
    return files["manifest"]


def _jsonable(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-able")


def available_models(directory=None, kind: str | None = None) -> list[str]:
    """Names of the models in ``directory`` (default :data:`WEIGHTS_DIR`), optionally of one ``kind``."""
    directory = Path(directory) if directory is not None else WEIGHTS_DIR
    names = []
    for p in sorted(directory.glob("*.json")):
        try:
            meta = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("kind") in KINDS and (kind is None or meta["kind"] == kind):
            names.append(p.stem)
    return names


_CACHE: dict = {}


def load_pretrained(name: str, *, directory=None) -> PretrainedDGM:
    """Load a shipped (or saved) model by name, offline.

    Args:
        name: the model's name (see :func:`available_models`).
        directory: where its files are (default :data:`WEIGHTS_DIR`).

    Raises:
        FileNotFoundError: a file is missing (the message lists the models that exist).
        ValueError: a file is corrupt, truncated or altered (the message names it).
    """
    directory = Path(directory) if directory is not None else WEIGHTS_DIR
    files = _files(directory, name)
    for p in files.values():
        if not p.is_file():
            avail = available_models(directory)
            raise FileNotFoundError(f"DGM model file {p} is missing (models in {directory}: "
                                    f"{', '.join(avail) if avail else 'none'}); {_REGEN}")
    stamp = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in files.values())
    if stamp in _CACHE:
        return _CACHE[stamp]
    try:
        meta = json.loads(files["manifest"].read_text())
        kind = meta["kind"]
        cls = KINDS[kind]
        simulation = SimulationConfig.from_dict(meta["simulation"])
        expected = meta["files"]
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"DGM manifest {files['manifest']} is corrupt ({type(exc).__name__}: {exc}); "
                         f"{_REGEN}") from exc
    for part in ("model", "mesh"):
        p = files[part]
        if p.stat().st_size != expected[part]["bytes"] or _sha256(p) != expected[part]["sha256"]:
            raise ValueError(f"DGM model file {p} is corrupt: its size or SHA-256 differs from what "
                             f"{files['manifest'].name} records (truncated or altered); {_REGEN}")
    try:
        model = cls.load(files["model"])
        mesh = Mesh.load(files["mesh"])
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"DGM model files {files['model'].name} / {files['mesh'].name} in {directory} could not "
                         f"be read ({type(exc).__name__}: {exc}); {_REGEN}") from exc
    size = getattr(model.config, "image_size", None)
    if size != simulation.image_size:
        raise ValueError(f"DGM model {name!r}: the network is for {size} px images but its training data were "
                         f"{simulation.image_size} px ({files['manifest']}); {_REGEN}")
    out = PretrainedDGM(name, kind, model, simulation, mesh, meta.get("card", {}))
    _CACHE[stamp] = out
    return out


def find_pretrained(kind: str, model: ForwardModel, *, name: str | None = None, directory=None) -> PretrainedDGM:
    """The model of ``kind`` for data of ``model``'s geometry.

    With ``name`` that model (checked against the geometry); without it, the
    models of ``kind`` in ``directory`` whose training geometry matches, the
    card's ``default`` one first, then by name.

    Raises:
        ValueError: no model of ``kind`` matches (the message says what each one
            was trained on), or the named one is of another kind or geometry.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if name is not None:
        pm = load_pretrained(name, directory=directory)
        if pm.kind != kind:
            raise ValueError(f"model {name!r} is a {pm.kind} model, not a {kind} model; "
                             f"{kind} models: {available_models(directory, kind) or 'none'}")
        pm.check_geometry(model)
        return pm
    names = available_models(directory, kind)
    if not names:
        where = directory if directory is not None else WEIGHTS_DIR
        raise ValueError(f"no {kind} model is shipped in {where}; train one for your geometry with "
                         f"`python benchmarks/dgm_pretrain.py --kind {kind}` and pass weights_dir=")
    candidates, reasons = [], []
    for n in names:
        pm = load_pretrained(n, directory=directory)
        bad = pm.mismatches(model)
        if bad:
            reasons.append(f"{n}: {'; '.join(bad)}")
        else:
            candidates.append(pm)
    if not candidates:
        raise ValueError(f"no {kind} model was trained on this geometry, so none can be used on its data "
                         f"(a learned model would give a silently wrong image): " + " | ".join(reasons)
                         + f". Train one for it with `python benchmarks/dgm_pretrain.py --kind {kind}`")
    return min(candidates, key=_preference)


def _preference(pm: PretrainedDGM):
    return (not pm.card.get("default", False), pm.name)


def default_pretrained(kind: str, *, directory=None) -> PretrainedDGM:
    """The preferred model of ``kind`` in ``directory`` (the card's ``default`` first, then by name), for
    callers that take the geometry from the model (``.forward_model()``); a ValueError when there is none."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    names = available_models(directory, kind)
    if not names:
        where = directory if directory is not None else WEIGHTS_DIR
        raise ValueError(f"no {kind} model is shipped in {where}; train one with "
                         f"`python benchmarks/dgm_pretrain.py --kind {kind} --ship`")
    return min((load_pretrained(n, directory=directory) for n in names), key=_preference)
