"""A learned KTC2023 segmentation: a U-Net on linearised reconstructions, trained on simulated tanks.

The approach of the challenge's winners (Denker et al. 2024, learned post-processing): the
input is a few linearised reconstructions of the difference data
(:class:`jaxeit.realdata.ktc_features.LinearisedInputs`: smoothness, Laplace and NOSER priors,
n × n, each channel scaled by its largest magnitude so that the network sees shapes, not
amplitudes) and the difficulty level, which conditions every block of the U-Net of
:mod:`jaxeit.priors.unet` in place of a diffusion time; the output is three class logits
(water, resistive, conductive) on the n × n grid, upsampled bilinearly to the 256 × 256 truth
frame, trained with the cross-entropy over the tank's pixels on simulated data only
(:mod:`jaxeit.realdata.ktc_simulator`), optionally plus ``score_weight * (1 - soft KTC score)``
(:func:`jaxeit.metrics.ktc_soft_score`: the challenge's SSIM on the class probabilities; it gained
nothing over the decision offsets in a controlled run, so the shipped weights use the cross-entropy
only). Every sample is shown at a level drawn per step, so one network serves all seven levels.
The classes are the argmax of the logits plus three offsets (:func:`fit_class_bias`, chosen on simulated validation tanks for the official score, which the
cross-entropy's plain argmax does not maximise; kept in ``segmenter.json``).

Training runs through :mod:`jaxeit.training` (state, AdamW with warm-up and cosine decay, EMA,
atomic resumable checkpoints, time budget, signals, early stopping on the validation
cross-entropy of the EMA weights). A step's batch and levels are functions of the step
number, so a stopped run resumes exactly. ``SegmenterConfig.init_from`` starts a run from an
earlier segmenter's EMA weights (fine-tuning on a new simulation); the card keeps the lineage.

    >>> result = train_segmenter("runs/ktc_sim", "runs/ktc_unet", reference="ktc2023/training/ref.mat",
    ...                          max_seconds=7200)
    >>> seg = Segmenter.load("runs/ktc_unet")
    >>> labels = seg.segment(voltages, reference_voltages, level=4)     # (256, 256) uint8
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import training
from ..data.store import read_metadata
from ..io import EITDataset, load_ktc_reference, resolve_data_path
from ..io.ktc import KTC_LEVELS
from ..io_utils import atomic_write_text
from ..metrics import ktc_score, ktc_soft_score
from ..priors.unet import UNetConfig, abstract_params, count_params, init_params
from ..training import Checkpointer, EarlyStopping, OptimizerConfig
from .ktc import disk_mask
from .ktc_features import FEATURE_PRIORS, LinearisedInputs
from .ktc_simulator import load_ktc_simulation
from .tanks import ktc_mesh

__all__ = ["SegmenterConfig", "train_segmenter", "Segmenter", "segmenter_loss", "decide", "fit_class_bias",
           "read_class_bias", "write_class_bias", "weights_fingerprint", "BIAS_GRID", "CHECKPOINT_NAME", "SHIPPED"]

CHECKPOINT_NAME = "checkpoint.npz"
#: the shipped segmenter's folder (``segmenter.npz`` + ``segmenter.json``), if this install has one
SHIPPED = Path(__file__).resolve().parent / "weights" / "ktc_unet"
_N_CLASSES = 3
#: config fields that may change when a run is resumed (they do not affect the state)
_RESUMABLE_FIELDS = ("checkpoint_every", "log_every", "eval_every", "patience")


@dataclasses.dataclass(frozen=True)
class SegmenterConfig:
    """Network, optimiser and data settings of a segmenter run (defaults: the intended full run)."""

    image_size: int = 64
    base_channels: int = 16          # 1.15 M parameters: trainable on a CPU
    channel_mult: tuple = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple = (8,)
    num_heads: int = 4
    num_groups: int = 8
    mesh_h: float = 0.014            # reconstruction mesh of the linearised inputs (m)
    batch_size: int = 16
    steps: int = 8000
    lr: float = 3e-4
    warmup_steps: int = 200
    min_lr_fraction: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    score_weight: float = 0.0        # loss = cross-entropy + score_weight * (1 - soft KTC score); 0: cross-entropy only
    n_val: int = 256                 # the last n_val simulated samples: validation, never trained on
    seed: int = 0
    init_from: str = ""              # a segmenter folder whose EMA weights start the run ("" = random)
    levels: tuple = tuple(KTC_LEVELS)  # the levels it is trained at (and may be used at): all, or one level's model
    checkpoint_every: int = 100
    log_every: int = 10
    eval_every: int = 250
    patience: int = 8

    def __post_init__(self):
        for name in ("image_size", "batch_size", "steps", "n_val", "checkpoint_every", "log_every", "eval_every",
                     "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SegmenterConfig: {name} must be an integer >= 1, got {value!r}")
        levels = tuple(self.levels) if isinstance(self.levels, (tuple, list, range)) else ()
        if not levels or len(set(levels)) != len(levels) or not set(levels) <= set(KTC_LEVELS):
            raise ValueError(f"SegmenterConfig: levels must be distinct challenge levels {tuple(KTC_LEVELS)}, e.g. "
                             f"(1,) for a level-1 model, got {self.levels!r}")
        if isinstance(self.score_weight, bool) or not isinstance(self.score_weight, (int, float)) \
                or not np.isfinite(self.score_weight) or self.score_weight < 0:
            raise ValueError(f"SegmenterConfig: score_weight must be a finite number >= 0 (0 = cross-entropy only), "
                             f"got {self.score_weight!r}")
        self.unet_config()   # the U-Net's own checks

    def unet_config(self) -> UNetConfig:
        return UNetConfig(image_size=self.image_size, base_channels=self.base_channels,
                          channel_mult=tuple(self.channel_mult), num_res_blocks=self.num_res_blocks,
                          attention_resolutions=tuple(self.attention_resolutions), num_heads=self.num_heads,
                          num_groups=self.num_groups, out_channels=_N_CLASSES, in_channels=len(FEATURE_PRIORS))

    def optimizer(self) -> OptimizerConfig:
        return OptimizerConfig(lr=self.lr, warmup_steps=self.warmup_steps, decay_steps=max(self.steps, 2),
                               min_lr_fraction=self.min_lr_fraction, weight_decay=self.weight_decay,
                               decoupled_weight_decay=True, grad_clip=self.grad_clip, ema_decay=self.ema_decay)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SegmenterConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# -- the network and its loss ---------------------------------------------------------------

def normalise_features(x):
    """(..., P, n, n) → (..., n, n, P) float32, each channel divided by its largest magnitude."""
    x = jnp.asarray(x, jnp.float32)
    scale = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True)
    return jnp.moveaxis(x / jnp.where(scale > 0, scale, 1.0), -3, -1)


@functools.lru_cache(maxsize=8)
def _abstract(unet_config: UNetConfig):
    """(graphdef, parameter shapes) of the U-Net, traced once per config (about 2 s on the CPU)."""
    return abstract_params(unet_config)


def _graphdef(unet_config: UNetConfig):
    return _abstract(unet_config)[0]


def _logits(graphdef, params, x, level):
    """(B, 256, 256, 3) truth-frame logits from features x (B, n, n, P) and levels (B,)."""
    out = nnx.merge(graphdef, params)(x, level)                    # (B, n, n, 3)
    return jax.image.resize(out, (out.shape[0], 256, 256, _N_CLASSES), "bilinear")


#: inference: one compiled program (loaded from the persistent compilation cache by the command line)
#: instead of the network's few hundred operations dispatched one by one
_logits_jit = jax.jit(_logits, static_argnums=0)


def segmenter_loss(graphdef, params, batch, score_weight: float = 0.0):
    """Mean cross-entropy over the tank's pixels plus ``score_weight * (1 - soft KTC score)``
    (:func:`jaxeit.metrics.ktc_soft_score` of the softmax; left out when 0) of a batch
    ``{"x": (B, n, n, P), "level": (B,), "truth": (B, 256, 256) int}``; the auxiliaries are the
    cross-entropy, the pixel accuracy and (when weighted) the mean soft score."""
    logits = _logits(graphdef, params, batch["x"], batch["level"])
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, batch["truth"][..., None].astype(jnp.int32), axis=-1)[..., 0]
    inside = jnp.asarray(disk_mask(), jnp.float32)
    cross_entropy = jnp.sum(nll * inside) / (inside.sum() * nll.shape[0])
    acc = jnp.sum((jnp.argmax(logits, -1) == batch["truth"]) * inside) / (inside.sum() * nll.shape[0])
    aux = {"cross_entropy": cross_entropy, "accuracy": acc}
    if not score_weight:
        return cross_entropy, aux
    soft = jnp.mean(ktc_soft_score(jnp.exp(logp), batch["truth"]))
    return cross_entropy + score_weight * (1.0 - soft), {**aux, "soft_score": soft}


@functools.lru_cache(maxsize=8)
def _loss_fn(unet_config: UNetConfig, score_weight: float = 0.0):
    """The trainer's ``loss(params, batch, key, extra)``, one object per network and loss (so its compiled step is reused)."""
    graphdef = _graphdef(unet_config)

    def loss(params, batch, key, extra):
        return segmenter_loss(graphdef, params, batch, score_weight)
    return loss


# -- data -----------------------------------------------------------------------------------

class _Batches:
    """Batch ``s`` of a run: samples from a seeded per-epoch permutation, one level per sample drawn
    from ``levels`` with ``default_rng([seed, 1, s])``; features computed on the fly (a few ms per batch)."""

    def __init__(self, data: dict, features: LinearisedInputs, batch_size: int, seed: int, levels=KTC_LEVELS):
        self.data, self.features, self.batch_size, self.seed = data, features, batch_size, seed
        self.levels = np.asarray(levels)
        self.n = len(data["truth"])
        if self.n < batch_size:
            raise ValueError(f"{self.n} training samples are fewer than one batch of {batch_size}")
        self.spe = self.n // batch_size
        self._perm = (None, None)

    def __call__(self, step: int) -> dict:
        epoch, pos = divmod(int(step), self.spe)
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(self.n))
        idx = np.sort(self._perm[1][pos * self.batch_size:(pos + 1) * self.batch_size])
        choice = np.random.default_rng([self.seed, 1, int(step)]).integers(0, len(self.levels), len(idx))
        return _batch(self.data, self.features, idx, self.levels[choice])


def _batch(data: dict, features: LinearisedInputs, idx, levels) -> dict:
    """The network batch of samples ``idx`` of ``data``, each at its level of ``levels``."""
    idx, levels = np.asarray(idx), np.asarray(levels)
    x = np.empty((len(idx), len(FEATURE_PRIORS), features.size, features.size), np.float32)
    for level in np.unique(levels):
        sel = levels == level
        x[sel] = features(data["voltages"][idx[sel]], data["reference"][idx[sel]], int(level))
    return {"x": normalise_features(x), "level": jnp.asarray(levels, jnp.float32),
            "truth": jnp.asarray(data["truth"][idx], jnp.int32)}


def _split(data: dict, n_val: int) -> tuple[dict, dict]:
    n = len(data["truth"])
    if n_val >= n:
        raise ValueError(f"n_val={n_val} leaves no training samples of the {n} simulated")
    return ({k: v[: n - n_val] for k, v in data.items()}, {k: v[n - n_val:] for k, v in data.items()})


# -- training -------------------------------------------------------------------------------

def train_segmenter(data_root, workdir, *, reference, config: SegmenterConfig = SegmenterConfig(),
                    resume: bool = True, max_seconds: float | None = None, progress: bool = True,
                    log=print) -> training.LoopResult:
    """Train (or resume) a segmenter in ``workdir`` on the simulated set ``data_root``; export its EMA weights.

    Args:
        data_root: a :func:`~jaxeit.realdata.ktc_simulator.simulate_ktc` folder.
        workdir: checkpoints (``checkpoint.npz``) and the exported ``segmenter.npz`` + ``segmenter.json``.
        reference: the challenge's ``ref.mat`` (calibration and protocol of the inputs).
        config: :class:`SegmenterConfig`.
        resume: continue from ``workdir``'s checkpoint (its config must match).
        max_seconds: wall-clock budget of this call (stops at a step boundary with a checkpoint).
        progress: a tqdm bar with the loss and ETA; ``log``: one-line messages.

    Returns:
        The :class:`jaxeit.training.LoopResult`.
    """
    log = log or (lambda *a, **k: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    train_data, val_data = _split(load_ktc_simulation(data_root), config.n_val)
    ref = load_ktc_reference(resolve_data_path(reference))
    levels = tuple(config.levels)
    log(f"[segmenter] linearised inputs: calibrating and forming the operators of levels "
        f"{', '.join(map(str, levels))} (h = {config.mesh_h} m)")
    features = LinearisedInputs.build(ref, h=config.mesh_h, size=config.image_size, levels=levels)
    graphdef = _graphdef(config.unet_config())
    opt = config.optimizer()
    ckpt = Checkpointer(workdir / CHECKPOINT_NAME, config.to_dict(), mutable=_RESUMABLE_FIELDS)
    template = jax.eval_shape(lambda p: training.init_state(p, opt), _abstract(config.unet_config())[1])
    loaded = ckpt.load(template) if resume else None
    if loaded is None:
        params, notes = _initial_params(config), []
        if config.init_from:
            notes.append(f"started from the EMA weights of {config.init_from} ({_parent_summary(config.init_from)})")
        state, history, wall, pending, es = training.init_state(params, opt), [], 0.0, None, None
        log(f"[segmenter] new run: {count_params(params):,} parameters, {len(train_data['truth'])} training and "
            f"{len(val_data['truth'])} validation samples" + (f"; {notes[0]}" if notes else ""))
    else:
        state, history, wall, notes, pending = (loaded.state, loaded.history, loaded.wall_time, loaded.notes,
                                                loaded.pending)
        es = loaded.early_stop
        log(f"[segmenter] resumed at step {int(state.step)} ({wall / 60:.1f} min so far)")

    step = training.make_train_step(_loss_fn(config.unet_config(), float(config.score_weight)), opt)
    batches = _Batches(train_data, features, config.batch_size, config.seed, levels)
    key = jax.random.PRNGKey(config.seed)
    val_levels = np.asarray(levels)[np.arange(len(val_data["truth"])) % len(levels)]   # each level in turn, fixed
    val_batches = [_batch(val_data, features, np.arange(i, min(i + config.batch_size, len(val_levels))),
                          val_levels[i:i + config.batch_size]) for i in range(0, len(val_levels), config.batch_size)]
    val_loss = jax.jit(lambda p, b: segmenter_loss(graphdef, p, b, config.score_weight)[0])

    def evaluate(st):
        return float(np.mean([float(val_loss(st.ema, b)) for b in val_batches]))

    result = training.train_loop(lambda st, s: step(st, batches(s), key, None), state, end=config.steps,
                                 checkpointer=ckpt, history=history, wall_time=wall, notes=notes, pending=pending,
                                 log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                                 max_seconds=max_seconds, steps_per_epoch=batches.spe,
                                 early_stopping=EarlyStopping(evaluate, every=config.eval_every,
                                                              patience=config.patience),
                                 early_stop_state=es, progress=progress, desc="segmenter", log=log)
    simulation = read_metadata(data_root)["config"]          # the card records what the model saw
    _export(workdir, config, result, len(train_data["truth"]), features, notes, simulation)
    return result


def _initial_params(config: SegmenterConfig):
    """Random weights (``config.seed``), or the EMA weights of the segmenter in ``config.init_from``
    (fine-tuning: e.g. a trained segmenter on a new simulation); its network must be the same."""
    if not config.init_from:
        return init_params(config.unet_config(), jax.random.PRNGKey(config.seed))[1]
    path = Path(config.init_from) / "segmenter.npz"
    if not path.exists():
        raise ValueError(f"init_from: {path} does not exist; give a folder of a trained segmenter (segmenter.npz)")
    parent = SegmenterConfig.from_dict(training.read_meta(path)["config"])
    if parent.unet_config() != config.unet_config():
        raise ValueError(f"init_from: {path} holds another network ({parent.unet_config()}); "
                         f"this run's is {config.unet_config()}")
    return training.load_arrays(path, _abstract(config.unet_config())[1])[0]


def _parent_summary(folder) -> str:
    card = Path(folder) / "segmenter.json"
    if not card.exists():
        return "no card"
    c = json.loads(card.read_text())
    own = f"{c.get('steps')} steps, {c.get('samples_seen')} samples, {float(c.get('wall_time_s', 0)) / 60:.0f} min"
    return "; ".join([own, *c.get("notes", [])])        # the whole lineage of a repeatedly fine-tuned model


def _export(workdir: Path, config: SegmenterConfig, result: training.LoopResult, n_train: int, features,
            notes=(), simulation: dict | None = None) -> None:
    """``segmenter.npz`` (EMA weights, float32) and ``segmenter.json`` (config, provenance, losses)."""
    training.save_arrays(workdir / "segmenter.npz", result.state.ema, meta={"config": config.to_dict()})
    steps = int(result.state.step)
    card = {"config": config.to_dict(), "steps": steps, "samples_seen": steps * config.batch_size,
            "training_samples": n_train, "epochs": steps * config.batch_size / max(n_train, 1),
            "wall_time_s": result.wall_time, "stop_reason": str(result.stop_reason.value),
            "early_stop": result.early_stop, "device": jax.devices()[0].device_kind,
            "calibration": {"sigma": features.calibration.sigma,
                            "contact_impedance": float(np.mean(features.calibration.contact_impedance))},
            "notes": list(notes), "simulation": simulation or {}, "history": result.history[-20:]}
    atomic_write_text(workdir / "segmenter.json", json.dumps(card, indent=1, default=str))


# -- inference ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Segmenter:
    """A trained segmenter: ``segment(voltages, reference, level)`` → (256, 256) uint8 classes."""

    config: SegmenterConfig
    params: object
    features: LinearisedInputs
    #: logit offsets (water, resistive, conductive) of the decision rule, fitted by
    #: :func:`fit_class_bias` on simulated validation tanks and kept in ``segmenter.json``; zeros: argmax
    class_bias: tuple = (0.0, 0.0, 0.0)

    @classmethod
    def load(cls, folder=None, *, reference="ktc2023/training/ref.mat", levels=None,
             calibration=None, calibration_mesh=None) -> "Segmenter":
        """The exported weights of a :func:`train_segmenter` run in ``folder`` (default: the shipped
        segmenter). ``reference`` — the empty tank's ``ref.mat`` path or an :class:`~jaxeit.io.EITDataset`
        with its ``reference`` voltages — sets up the linearised inputs (its calibration) of ``levels``
        (default: every level the model was trained at; one level sets up in a seventh of the time);
        ``calibration`` of that tank skips calibrating. A
        calibration fitted on ``calibration_mesh`` other than the segmenter's mesh (``ktc_mesh(config.mesh_h)``)
        is not used: the tank is calibrated again on the segmenter's mesh."""
        folder = Path(SHIPPED if folder is None else folder)
        path = folder / "segmenter.npz"
        if not path.exists():
            where = "this install ships no trained segmenter" if folder == SHIPPED else f"{folder} holds none"
            raise ValueError(f"no trained segmenter (segmenter.npz): {where}; train one with "
                             "jaxeit.realdata.ktc_segmenter.train_segmenter (docs/training.md)")
        config = SegmenterConfig.from_dict(training.read_meta(path)["config"])
        levels = tuple(config.levels) if levels is None else tuple(levels)
        untrained = sorted(set(levels) - set(config.levels))
        if untrained:
            raise ValueError(f"the segmenter in {folder} was trained at levels {tuple(config.levels)}, not at "
                             f"{untrained}: a learned model gives a silently wrong image at a level it has not "
                             "seen; use a segmenter trained at that level (e.g. the shipped one, all levels)")
        params, _ = training.load_arrays(path, _abstract(config.unet_config())[1])
        ref = reference if isinstance(reference, EITDataset) else load_ktc_reference(resolve_data_path(reference))
        if calibration_mesh is not None and calibration_mesh != ktc_mesh(h=config.mesh_h):
            calibration = None
        features = LinearisedInputs.build(ref, h=config.mesh_h, size=config.image_size, levels=tuple(levels),
                                          calibration=calibration)
        return cls(config, params, features, read_class_bias(folder))

    def probabilities(self, voltages, reference, level: int) -> np.ndarray:
        """(..., 256, 256, 3) class probabilities (water, resistive, conductive) in the truth frame: the
        network's softmax, without the decision offsets (``class_bias``) that :meth:`segment` adds."""
        return np.asarray(jax.nn.softmax(jnp.asarray(self.logits(voltages, reference, level)), axis=-1))

    def logits(self, voltages, reference, level: int) -> np.ndarray:
        """(..., 256, 256, 3) class logits in the truth frame."""
        if level not in tuple(self.config.levels):
            raise ValueError(f"this segmenter was trained at levels {tuple(self.config.levels)}, not at level "
                             f"{level!r}: use a segmenter trained at that level (e.g. the shipped one, all levels)")
        x = self.features(voltages, reference, level)
        single = x.ndim == 3
        x = normalise_features(x[None] if single else x)
        out = np.asarray(_logits_jit(_graphdef(self.config.unet_config()), self.params, x,
                                 jnp.full((x.shape[0],), float(level))))
        return out[0] if single else out

    def segment(self, voltages, reference, level: int) -> np.ndarray:
        """(..., 256, 256) uint8: 0 water, 1 resistive, 2 conductive; 0 outside the tank."""
        return self.decide(self.logits(voltages, reference, level))

    def decide(self, logits) -> np.ndarray:
        """(..., 256, 256) uint8 classes of (..., 256, 256, 3) logits: the argmax of logits + ``class_bias``."""
        return decide(logits, self.class_bias)


def decide(logits, class_bias=(0.0, 0.0, 0.0)) -> np.ndarray:
    """(..., 256, 256) uint8 classes: argmax over the last axis of ``logits + class_bias``; 0 outside the tank."""
    labels = np.argmax(np.asarray(logits, np.float32) + np.asarray(class_bias, np.float32), axis=-1)
    return np.where(disk_mask(), labels, 0).astype(np.uint8)


# -- the decision rule ----------------------------------------------------------------------

#: offsets tried by :func:`fit_class_bias` for the resistive and the conductive logit (water stays 0)
BIAS_GRID = (-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0)


def fit_class_bias(logits, truth, *, grid=BIAS_GRID, sweeps: int = 2, chunk: int = 64):
    """Logit offsets that maximise the mean official KTC score of ``argmax(logits + bias)``.

    The network is trained with the cross-entropy, whose argmax maximises pixel accuracy, not the
    score: the score's SSIM of each class's indicator rewards finding thin and small objects more
    than the accuracy does. Coordinate ascent from (0, 0) over ``grid`` for the resistive and the
    conductive offset in turn (``sweeps`` rounds; the water logit stays as it is).

    Args:
        logits: (N, 256, 256, 3) truth-frame logits of simulated **validation** tanks (never of the
            tanks the result is reported on), each at its own level.
        truth: (N, 256, 256) their true classes.
        grid: offsets tried (logit units); must contain 0.
        chunk: tanks scored per batch (memory).

    Returns:
        ``(bias, table)``: bias = (0, b_resistive, b_conductive) and table = {(b_res, b_cond): mean score}
        of every pair tried.
    """
    logits, truth = np.asarray(logits), np.asarray(truth)
    if logits.ndim != 4 or logits.shape[-3:] != (256, 256, _N_CLASSES) or truth.shape != logits.shape[:-1]:
        raise ValueError(f"fit_class_bias: need logits (N, 256, 256, 3) and truth (N, 256, 256), got "
                         f"{logits.shape} and {truth.shape}")
    grid = tuple(float(g) for g in grid)
    if 0.0 not in grid:
        raise ValueError(f"fit_class_bias: the grid must contain 0 (the plain argmax), got {grid}")
    chunks = [(jnp.asarray(logits[i:i + chunk], jnp.float32), jnp.asarray(truth[i:i + chunk]))
              for i in range(0, len(truth), chunk)]          # converted once, scored for every pair
    table: dict = {}

    def mean_score(pair):
        if pair not in table:
            bias = jnp.asarray((0.0, *pair))
            table[pair] = float(np.mean(np.concatenate([np.asarray(_score_batch(lg, tr, bias)) for lg, tr in chunks])))
        return table[pair]

    best = (0.0, 0.0)
    for _ in range(max(int(sweeps), 1)):
        for axis in (0, 1):
            candidates = [tuple(g if k == axis else best[k] for k in range(2)) for g in grid]
            best = max(candidates, key=lambda c: (mean_score(c), -abs(c[0]) - abs(c[1])))   # ties: smaller offsets
    return (0.0, *best), table


@jax.jit
def _score_batch(logits, truth, bias):
    labels = jnp.where(jnp.asarray(disk_mask()), jnp.argmax(logits + bias, axis=-1), 0)
    return ktc_score(labels, truth)


def weights_fingerprint(folder=None) -> str:
    """8 hex digits of a segmenter folder's weights and decision offsets (both set its output; default: the
    shipped weights; ``"none"`` where the folder holds no weights). Caches of scores are keyed on it."""
    folder = Path(SHIPPED if folder is None else folder)
    path = folder / "segmenter.npz"
    if not path.exists():
        return "none"
    bias = read_class_bias(folder)
    return hashlib.sha1(path.read_bytes() + (repr(bias).encode() if any(bias) else b"")).hexdigest()[:8]


def read_class_bias(folder) -> tuple:
    """The decision offsets kept in ``folder/segmenter.json`` (``"decision"``), or zeros (the argmax)."""
    card = Path(folder) / "segmenter.json"
    if not card.exists():
        return (0.0, 0.0, 0.0)
    bias = json.loads(card.read_text()).get("decision", {}).get("class_bias", (0.0, 0.0, 0.0))
    return tuple(float(b) for b in bias)


def write_class_bias(folder, bias, provenance: dict) -> None:
    """Keep ``bias`` (3 logit offsets) and how it was chosen in ``folder/segmenter.json`` (atomically)."""
    card_path = Path(folder) / "segmenter.json"
    card = json.loads(card_path.read_text())
    if len(bias) != _N_CLASSES or not all(np.isfinite(bias)):
        raise ValueError(f"class_bias must be {_N_CLASSES} finite logit offsets, got {bias}")
    card["decision"] = {"class_bias": [float(b) for b in bias], **provenance}
    atomic_write_text(card_path, json.dumps(card, indent=1, default=str))

