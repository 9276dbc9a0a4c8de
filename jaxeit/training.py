"""The one trainer of jaxeit: state, optimiser, EMA, checkpoints, budget, signals, progress.

Every network of the package (the diffusion prior of :mod:`jaxeit.priors`, the
CVAE, CNF and score models of :mod:`jaxeit.dgm`) trains through this module:

* :class:`TrainState` — the whole state of a run as a pytree ``(step, params,
  opt_state, ema)``;
* :class:`OptimizerConfig` and :func:`make_optimizer` — optax chains:
  global-norm clipping, weight decay (decoupled, AdamW, or L2 added to the
  gradient, as in PyTorch's ``Adam(weight_decay=...)``), Adam, with a constant,
  linear-warm-up or ``optax.warmup_cosine_decay_schedule`` learning rate;
* :func:`make_train_step` — the jitted step
  ``step(state, batch, key, extra) -> (state, aux)``: one gradient step, then
  the EMA ``optax.incremental_update`` with the usual warm-up
  ``decay_s = min(ema_decay, (1 + s)/(10 + s))``;
* :class:`Checkpointer` — one checkpoint format (below), written atomically,
  with a config hash check on load and the previous checkpoint kept;
* :func:`train_loop` — the loop: a step at a time until ``end``, a wall-clock
  budget that stops at a step boundary, early stopping on a validation loss,
  SIGINT/SIGTERM that stop at a step boundary after saving the last completed
  step, and a tqdm progress bar with the loss and the ETA.

Exact resume. A step's batch and randomness must be functions of the step
number alone (the callers derive them from ``fold_in(key, step)`` or from a
seeded permutation per epoch). The loop logs the mean of each ``aux`` value
over ``log_every`` steps; a checkpoint written in the middle of a logging
interval also stores the running sums of that interval, so a run stopped at
any step and resumed writes the same history rows and reaches the same
state, bit for bit on the same machine and software, as an uninterrupted run.

Checkpoint format (one ``.npz`` file, :data:`CHECKPOINT_FORMAT`):

==================  ======================================================
``leaf_00000`` …    the leaves of the :class:`TrainState` in
                    ``jax.tree_util.tree_flatten`` order
``meta_json``       JSON: ``format``, ``config`` (the run's description),
                    ``config_hash`` (SHA-256 of its canonical JSON),
                    ``step``, ``history`` (list of dict rows), ``wall_time``
                    (s), ``notes``, ``pending`` (sums of the open logging
                    interval), ``early_stop`` (best validation loss, its
                    step, evaluations without improvement), ``stop_reason``
==================  ======================================================

A save writes a temporary file in the same folder, flushes and fsyncs it,
moves the current checkpoint to ``<stem>.prev.npz`` and the new one into place
with ``os.replace``; a kill at any moment leaves a readable newest or previous
checkpoint. A corrupt or truncated newest checkpoint raises a ``ValueError``
that names it and the intact previous one.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .io_utils import atomic_path
from .signals import Interrupted, StopSignals

__all__ = ["TrainState", "OptimizerConfig", "make_optimizer", "learning_rate_schedule", "init_state",
           "make_train_step", "ema_decay_at", "Checkpointer", "Checkpoint", "CHECKPOINT_FORMAT", "config_hash",
           "train_loop", "LoopResult", "StopReason", "TrainingInterrupted", "EarlyStopping", "epoch_batches",
           "checkpoint_summary", "save_arrays", "load_arrays", "read_meta", "count_params"]

#: The version tag of the checkpoint format written by :class:`Checkpointer`.
CHECKPOINT_FORMAT = "jaxeit.training/1"


# -----------------------------------------------------------------------------------
# State and optimiser
# -----------------------------------------------------------------------------------

class TrainState(NamedTuple):
    """Everything a resume needs (a pytree).

    Attributes:
        step: () int32, the number of completed steps.
        params: the trainable parameters (any pytree, e.g. an ``nnx.State``), float32.
        opt_state: the optax state.
        ema: the exponential moving average of ``params`` (same structure), or
            ``None`` when the run keeps no EMA.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema: Any


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """An optax chain: clip → weight decay → Adam(learning-rate schedule), plus the EMA decay.

    Attributes:
        lr: peak learning rate.
        warmup_steps: linear warm-up from 0 to ``lr`` over this many steps (0: none).
        decay_steps: if set, cosine decay from ``lr`` to ``lr · min_lr_fraction``
            ending at this step (``optax.warmup_cosine_decay_schedule``; the total
            number of steps of the run); ``None``: constant after the warm-up.
        min_lr_fraction: the final learning rate of the cosine decay, relative to ``lr``.
        weight_decay: 0 for none.
        decoupled_weight_decay: ``True``: AdamW (decay applied to the update);
            ``False``: L2, the decay added to the gradient before Adam.
        grad_clip: global-norm clipping threshold (``None`` or 0: no clipping).
        ema_decay: EMA decay of the parameters (``None``: no EMA is kept).
    """

    lr: float = 1e-3
    warmup_steps: int = 0
    decay_steps: int | None = None
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = True
    grad_clip: float | None = None
    ema_decay: float | None = None

    def __post_init__(self):
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ValueError(f"decay_steps must be >= 1 or None, got {self.decay_steps}")
        if not 0.0 <= self.min_lr_fraction <= 1.0:
            raise ValueError(f"min_lr_fraction must be in [0, 1], got {self.min_lr_fraction}")
        if self.weight_decay < 0 or (self.grad_clip is not None and self.grad_clip < 0):
            raise ValueError("weight_decay and grad_clip must be >= 0")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
    """The learning rate as a function of the step (an optax schedule)."""
    if config.decay_steps is not None:
        warmup = max(1, min(config.warmup_steps, config.decay_steps))
        return optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, max(config.decay_steps, warmup + 1),
                                                  end_value=config.lr * config.min_lr_fraction)
    if config.warmup_steps:
        return optax.join_schedules([optax.linear_schedule(0.0, config.lr, config.warmup_steps),
                                     optax.constant_schedule(config.lr)], [config.warmup_steps])
    return optax.constant_schedule(config.lr)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """The optax chain of ``config`` (see :class:`OptimizerConfig`)."""
    schedule = learning_rate_schedule(config)
    parts = []
    if config.grad_clip:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    if config.decoupled_weight_decay:
        parts.append(optax.adamw(schedule, weight_decay=config.weight_decay))
    else:
        if config.weight_decay:
            parts.append(optax.add_decayed_weights(config.weight_decay))
        parts.append(optax.adam(schedule))
    return optax.chain(*parts)


def init_state(params, config: OptimizerConfig) -> TrainState:
    """A fresh :class:`TrainState` at step 0 (the EMA starts as a copy of ``params``).

    ``params`` is copied, so the caller's arrays survive the donating train step.
    """
    params = jax.tree_util.tree_map(jnp.copy, params)
    ema = jax.tree_util.tree_map(jnp.copy, params) if config.ema_decay is not None else None
    return TrainState(jnp.asarray(0, jnp.int32), params, make_optimizer(config).init(params), ema)


def ema_decay_at(step, ema_decay: float):
    """The EMA decay used after step ``step`` (0-based): ``min(ema_decay, (1 + s)/(10 + s))``.

    The warm-up keeps the early average from being dominated by the random initialisation.
    """
    s = jnp.asarray(step, jnp.float32)
    return jnp.minimum(ema_decay, (1.0 + s) / (10.0 + s))


LossFn = Callable[..., tuple]


def make_train_step(loss_fn: LossFn, config: OptimizerConfig, *, donate: bool = True):
    """The jitted ``step(state, batch, key, extra) -> (state, aux)`` (cached per arguments).

    ``key`` is the run's base key; the loss gets ``fold_in(key, state.step)``, so the
    randomness of a step is a function of the step number (exact resume).

    Args:
        loss_fn: ``loss_fn(params, batch, key, extra) -> (loss, aux)`` with ``aux`` a dict
            of scalars (``batch`` may be ``None`` when the loss draws its own data from
            ``key``); keep the same (hashable) function object across calls to reuse the
            compiled step.
        config: the optimiser (its ``ema_decay`` sets the EMA update).
        donate: donate the input state's buffers to the output (halves peak memory; the
            caller must not use the input state again).

    ``aux`` of the step gets ``loss``, ``grad_norm`` and ``lr`` added.
    """
    return _make_train_step(loss_fn, config, donate)


@functools.lru_cache(maxsize=32)
def _make_train_step(loss_fn, config: OptimizerConfig, donate: bool):
    opt = make_optimizer(config)
    schedule = learning_rate_schedule(config)

    def step(state: TrainState, batch, key, extra):
        step_key = jax.random.fold_in(key, state.step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, step_key, extra)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema
        if config.ema_decay is not None:
            ema = optax.incremental_update(params, ema, 1.0 - ema_decay_at(state.step, config.ema_decay))
        aux = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(state.step))
        return TrainState(state.step + 1, params, opt_state, ema), aux

    return jax.jit(step, donate_argnums=(0,) if donate else ())


def count_params(tree) -> int:
    """Number of scalars in a pytree."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


# -----------------------------------------------------------------------------------
# Array files and checkpoints
# -----------------------------------------------------------------------------------

def _canonical(obj) -> Any:
    """JSON-normal form (tuples as lists, keys as strings) so that equal configs compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def config_hash(config: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config``."""
    return hashlib.sha256(json.dumps(_canonical(config), sort_keys=True).encode()).hexdigest()


def _flat_items(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat_items(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], d


def _config_differences(saved: dict, current: dict) -> list[str]:
    a, b = dict(_flat_items(_canonical(saved))), dict(_flat_items(_canonical(current)))
    return [f"{k}: {a.get(k, '<absent>')} -> {b.get(k, '<absent>')}" for k in sorted(set(a) | set(b))
            if a.get(k, "<absent>") != b.get(k, "<absent>")]


def save_arrays(path, tree, meta: dict | None = None) -> Path:
    """Write the leaves of ``tree`` and a JSON ``meta`` to ``path`` (.npz) atomically (fsync, rename)."""
    path = Path(path)
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["meta_json"] = np.array(json.dumps(_canonical(meta or {})))
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
        data["meta_json"] = json.loads(str(data["meta_json"]))
    except Exception as exc:  # noqa: BLE001 - any corruption reads the same
        raise ValueError(f"{path} is unreadable ({type(exc).__name__}: {exc})") from exc
    return data


def _unflatten_like(path: Path, data: dict, template):
    leaves, treedef = jax.tree_util.tree_flatten(template)
    n = sum(k.startswith("leaf_") for k in data)
    if n != len(leaves):
        raise ValueError(f"{path} holds {n} arrays, the model needs {len(leaves)}: was it written with "
                         "another configuration?")
    out = []
    for i, ref in enumerate(leaves):
        arr = data[f"leaf_{i:05d}"]
        ref_shape, ref_dtype = np.shape(ref), np.dtype(getattr(ref, "dtype", np.asarray(ref).dtype))
        if arr.shape != ref_shape or arr.dtype != ref_dtype:
            raise ValueError(f"{path}: array {i} is {arr.dtype}{arr.shape}, expected {ref_dtype}{ref_shape}: "
                             "was it written with another configuration?")
        out.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, out)


def read_meta(path) -> dict:
    """The JSON header of a file of :func:`save_arrays` (e.g. a saved model's kind and config).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is unreadable (the message names it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with np.load(path) as z:
            return json.loads(str(z["meta_json"]))
    except Exception as exc:  # noqa: BLE001 - any corruption reads the same
        raise ValueError(f"{path} is unreadable ({type(exc).__name__}: {exc})") from exc


def load_arrays(path, template):
    """Read a file of :func:`save_arrays` into the structure of ``template``: ``(tree, meta)``.

    ``template`` may hold arrays or ``jax.ShapeDtypeStruct`` leaves.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is unreadable or its arrays do not match the template.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    data = _read_npz(path)
    return _unflatten_like(path, data, template), data["meta_json"]


class Checkpoint(NamedTuple):
    """What :meth:`Checkpointer.load` returns."""

    state: TrainState
    config: dict
    history: list        # dict rows, one per logging interval
    wall_time: float     # seconds of training so far, all runs
    notes: list          # free-text notes (e.g. a schedule change)
    pending: dict        # {"n": steps, "sums": {name: value}} of the open logging interval
    early_stop: dict     # EarlyStopping state
    stop_reason: str     # why the run that wrote it stopped


#: config keys, at any depth, that bound one call rather than define the state: a run resumes with another value
BUDGET_KEYS = frozenset({"max_seconds"})


def _without_budgets(obj):
    """``obj`` without :data:`BUDGET_KEYS` at any depth (a chained run may continue with a longer budget)."""
    if isinstance(obj, dict):
        return {k: _without_budgets(v) for k, v in obj.items() if k not in BUDGET_KEYS}
    if isinstance(obj, list):
        return [_without_budgets(v) for v in obj]
    return obj


class Checkpointer:
    """Atomic, resumable checkpoints of one run in one ``.npz`` file (format in the module docstring).

    Args:
        path: the checkpoint file, e.g. ``runs/prior/checkpoint.npz``.
        config: JSON-able description of everything that defines the run's state
            (model, data, optimiser). A checkpoint is resumed only when its
            config hash matches; :meth:`load` names the fields that differ.
        mutable: top-level ``config`` keys that may differ on resume (e.g. a
            logging interval that does not change the state). Wall-clock budgets
            (:data:`BUDGET_KEYS`, at any depth) may always differ: a run stopped by its
            budget continues with a longer one.
    """

    def __init__(self, path, config: dict, *, mutable: tuple[str, ...] = ()):
        self.path = Path(path)
        self.config = _canonical(config)
        self.mutable = tuple(mutable)

    @property
    def previous_path(self) -> Path:
        """The previous checkpoint, kept on every save."""
        return self.path.with_name(self.path.name.removesuffix(".npz") + ".prev.npz")

    def _hashed(self, config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in self.mutable}

    def save(self, state: TrainState, *, history=(), wall_time: float = 0.0, notes=(), pending=None,
             early_stop=None, stop_reason: str = "") -> Path:
        """Write the checkpoint atomically, keeping the one it replaces as :attr:`previous_path`."""
        meta = {"format": CHECKPOINT_FORMAT, "config": self.config,
                "config_hash": config_hash(self._hashed(self.config)), "step": int(state.step),
                "history": list(history), "wall_time": float(wall_time), "notes": list(notes),
                "pending": pending or {"n": 0, "sums": {}}, "early_stop": early_stop or {},
                "stop_reason": stop_reason}
        leaves = jax.tree_util.tree_leaves(state)
        arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
        arrays["meta_json"] = np.array(json.dumps(_canonical(meta)))
        if self.path.exists():   # keep the current newest as the previous (a hard link: no copy, no gap)
            link = self.previous_path.with_name(f".{self.previous_path.name}.{os.getpid()}")
            try:
                os.link(self.path, link)
            except OSError:      # a file system without hard links
                shutil.copy2(self.path, link)
            os.replace(link, self.previous_path)
        with atomic_path(self.path) as tmp:
            np.savez(tmp, **arrays)
        return self.path

    def exists(self) -> bool:
        return self.path.exists()

    def _unreadable(self, exc: ValueError) -> ValueError:
        """The error for a corrupt newest checkpoint: it names the file and the intact previous one."""
        prev = self.previous_path
        hint = (f"; the previous checkpoint {prev} is intact: move it over {self.path.name} to resume from it"
                if prev.exists() else "; delete it to start afresh")
        return ValueError(f"checkpoint {exc}{hint}")

    def saved_config(self) -> dict | None:
        """The config recorded in the checkpoint (its header only), or ``None`` if there is none.

        Raises:
            ValueError: as :meth:`load` for an unreadable checkpoint.
        """
        if not self.path.exists():
            return None
        try:
            return read_meta(self.path).get("config", {})
        except ValueError as exc:
            raise self._unreadable(exc) from exc

    def load(self, template: TrainState, *, allow_changes: tuple[str, ...] = ()) -> Checkpoint | None:
        """Read the checkpoint into the structure of ``template``; ``None`` if there is none.

        Args:
            template: a :class:`TrainState` (arrays or ``jax.ShapeDtypeStruct`` leaves).
            allow_changes: top-level config keys that may differ this time (a note records
                the change, e.g. a new number of steps for the schedule).

        Raises:
            ValueError: if the file is unreadable (naming it, and the intact previous
                checkpoint if there is one), is not in :data:`CHECKPOINT_FORMAT`, was
                written with another config (naming the differing fields) or does not
                fit the template.
        """
        if not self.path.exists():
            return None
        try:
            data = _read_npz(self.path)
        except ValueError as exc:
            raise self._unreadable(exc) from exc
        meta = data["meta_json"]
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint {self.path} is not a {CHECKPOINT_FORMAT} checkpoint "
                             f"(format {meta.get('format')!r}); use another folder or delete it")
        saved = meta.get("config", {})
        ignore = set(self.mutable) | set(allow_changes)
        strip = lambda c: _without_budgets({k: v for k, v in c.items() if k not in ignore})  # noqa: E731
        if config_hash(strip(saved)) != config_hash(strip(self.config)):
            diff = _config_differences(strip(saved), strip(self.config))
            raise ValueError(f"checkpoint {self.path} was written with another config ({'; '.join(diff)}); "
                             "use another folder, or start afresh")
        if meta.get("config_hash") != config_hash(self._hashed(saved)):
            raise ValueError(f"checkpoint {self.path}: its config hash does not match its config (edited by "
                             "hand?); delete it to start afresh")
        state = _unflatten_like(self.path, data, template)
        notes = list(meta.get("notes", []))
        for k in sorted(set(allow_changes)):
            if _canonical(saved.get(k)) != _canonical(self.config.get(k)):
                notes.append(f"{k} changed from {saved.get(k)} to {self.config.get(k)} at step {int(state.step)}")
        return Checkpoint(state, saved, list(meta.get("history", [])), float(meta.get("wall_time", 0.0)), notes,
                          meta.get("pending") or {"n": 0, "sums": {}}, meta.get("early_stop") or {},
                          meta.get("stop_reason", ""))


def checkpoint_summary(path) -> tuple[float, int, float, float]:
    """(wall s, steps, epochs, last logged loss) recorded in a training checkpoint."""
    meta = read_meta(path)
    last = (meta.get("history") or [{}])[-1]
    return (float(meta.get("wall_time", 0.0)), int(meta.get("step", last.get("step", 0))),
            float(last.get("epoch", 0.0)), float(last.get("loss", float("nan"))))


# -----------------------------------------------------------------------------------
# Data order
# -----------------------------------------------------------------------------------

def epoch_batches(data: dict, batch_size: int, seed: int, mesh=None) -> Callable[[int], dict]:
    """``batch_at(step) -> {name: (B, ...) device array}`` over host arrays, epoch by epoch.

    Epoch ``e`` visits the samples in the order ``default_rng([seed, e]).permutation(n)``
    (drop-last), so a batch depends only on ``(seed, step)``. With a device ``mesh``
    (:func:`jaxeit.parallel.data_mesh`) the batch axis is split over its devices.
    """
    from .parallel import shard_batch

    n = len(next(iter(data.values())))
    spe = n // batch_size
    perms: dict[int, np.ndarray] = {}

    def batch_at(step: int) -> dict:
        epoch, pos = divmod(step, spe)
        if epoch not in perms:
            perms.clear()
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        idx = np.sort(perms[epoch][pos * batch_size:(pos + 1) * batch_size])
        batch = {k: v[idx] for k, v in data.items()}
        return {k: jnp.asarray(v) for k, v in batch.items()} if mesh is None else shard_batch(batch, mesh)
    return batch_at


# -----------------------------------------------------------------------------------
# The loop
# -----------------------------------------------------------------------------------

class StopReason(str, enum.Enum):
    """Why :func:`train_loop` returned."""

    COMPLETED = "completed"           # reached ``end``
    TIME_BUDGET = "time_budget"       # ``max_seconds`` used up
    EARLY_STOPPED = "early_stopped"   # the validation loss stopped improving
    INTERRUPTED = "interrupted"       # SIGINT / SIGTERM (raised as TrainingInterrupted)


class TrainingInterrupted(Interrupted):
    """Raised by :func:`train_loop` after it saved the last completed step on SIGINT or SIGTERM.

    Attributes:
        signum: the signal number.
        step: the step saved.
        exit_code: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM), for command lines.
    """

    def __init__(self, signum: int, step: int):
        self.step = int(step)
        super().__init__(signum, f"after step {step}; the last completed step is saved")


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop when the validation loss has not improved for ``patience`` evaluations.

    Attributes:
        eval_fn: ``eval_fn(state) -> float``, the validation loss (e.g. of the EMA weights).
        every: evaluate every this many steps.
        patience: evaluations without an improvement of more than ``min_delta`` before stopping.
        min_delta: the smallest decrease that counts as an improvement.
        on_best: optional ``on_best(state)``, called when the loss reaches a new best
            (e.g. to save the best weights).
    """

    eval_fn: Callable
    every: int
    patience: int = 5
    min_delta: float = 0.0
    on_best: Callable | None = None

    def __post_init__(self):
        if self.every < 1 or self.patience < 1:
            raise ValueError(f"every and patience must be >= 1, got {self.every}, {self.patience}")


@dataclasses.dataclass
class LoopResult:
    """What :func:`train_loop` returns.

    Attributes:
        state: the final :class:`TrainState`.
        history: dict rows ``{"step", "epoch"?, "loss", …}``, one per logging interval
            (and ``{"step", "val_loss"}`` rows of the validation loss).
        wall_time: seconds of training, all runs of the checkpoint together.
        stop_reason: a :class:`StopReason`.
        early_stop: best validation loss, its step and the evaluations since.
    """

    state: TrainState
    history: list
    wall_time: float
    stop_reason: StopReason
    early_stop: dict


def _mean_row(sums: dict, n: int) -> dict:
    return {k: float(v) / n for k, v in sums.items()}


def train_loop(step_fn: Callable, state: TrainState, *, end: int, total: int | None = None, checkpointer: Checkpointer | None = None,
               history: list | None = None, wall_time: float = 0.0, notes=(), pending: dict | None = None,
               log_every: int = 50, checkpoint_every: int = 500, max_seconds: float | None = None,
               steps_per_epoch: int | None = None, early_stopping: EarlyStopping | None = None,
               early_stop_state: dict | None = None, progress: bool = True, desc: str = "train",
               log: Callable | None = print, handle_signals: bool = True) -> LoopResult:
    """Run ``state = step_fn(state, s)`` for ``s = state.step … end − 1``.

    Args:
        step_fn: ``step_fn(state, s) -> (state, aux)``, usually a jitted step (from
            :func:`make_train_step`) fed the batch and key of step ``s``; ``aux`` is a dict
            of scalars with a ``"loss"``. Steps run asynchronously: the loop waits for the
            device only at logging steps, checkpoints and evaluations.
        state: the state to start from (fresh, or from :meth:`Checkpointer.load`).
        end: the step to stop at.
        total: the run's full length (default ``end``): a run split at ``end < total``
            (e.g. ``until``) writes its last history row only at a multiple of
            ``log_every`` or at ``total``, so split and whole runs log the same rows.
        checkpointer: where to save (every ``checkpoint_every`` steps, at the end, at the
            time budget, on SIGINT/SIGTERM); ``None``: no files.
        history, wall_time, notes, pending, early_stop_state: what a loaded checkpoint holds
            (empty for a fresh run).
        log_every: steps per history row (the means of ``aux`` over the interval); the
            loss is checked for NaN/inf there.
        checkpoint_every: steps between checkpoints.
        max_seconds: a wall-clock budget for this call; the loop stops at the first step
            boundary past it, saves and returns with ``StopReason.TIME_BUDGET``.
        steps_per_epoch: adds an ``epoch`` column to the rows.
        early_stopping: an :class:`EarlyStopping` (validation loss every ``every`` steps).
        progress: a tqdm bar (stderr) with the loss and the ETA.
        desc: the bar's label and the log prefix.
        log: one-line messages (``None``: silent).
        handle_signals: turn SIGINT/SIGTERM into a clean stop at the next step boundary
            (main thread only).

    Returns:
        A :class:`LoopResult`.

    Raises:
        TrainingInterrupted: after saving, on SIGINT or SIGTERM.
        FloatingPointError: if the logged loss is NaN or inf (the last finite checkpoint stays).
    """
    from tqdm.auto import tqdm

    if log_every < 1 or checkpoint_every < 1:
        raise ValueError(f"log_every and checkpoint_every must be >= 1, got {log_every}, {checkpoint_every}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
    log = log or (lambda *a, **k: None)
    history = list(history or [])
    notes = list(notes)
    pending = pending or {"n": 0, "sums": {}}
    n_acc = int(pending.get("n", 0))
    acc = ({k: jnp.asarray(v, dtype) for k, (v, dtype) in pending.get("sums", {}).items()} if n_acc else None)
    es = dict(early_stop_state or {})
    es.setdefault("best", None)
    es.setdefault("best_step", None)
    es.setdefault("since_best", 0)
    total = end if total is None else int(total)
    start = s = int(state.step)
    t0 = t_mark = time.perf_counter()
    reason = StopReason.COMPLETED
    flag = StopSignals(handle_signals)

    def row_of(step, sums, n):
        row = {"step": step, **({"epoch": step / steps_per_epoch} if steps_per_epoch else {}), **_mean_row(sums, n)}
        return row

    def save(stop_reason=""):
        nonlocal wall_time, t_mark
        now = time.perf_counter()
        wall_time += now - t_mark
        t_mark = now
        if checkpointer is not None:
            # exact: a float32/float64 value is exactly a JSON (double) number
            sums = {k: [float(v), str(jnp.asarray(v).dtype)] for k, v in (acc or {}).items()}
            checkpointer.save(state, history=history, wall_time=wall_time, notes=notes,
                              pending={"n": n_acc, "sums": sums}, early_stop=es, stop_reason=stop_reason)

    bar = tqdm(total=total, initial=start, disable=not progress, desc=desc, dynamic_ncols=True, mininterval=2.0,
               unit="step")
    with flag:
        try:
            while s < end:
                if flag.signum is not None:
                    break
                state, aux = step_fn(state, s)
                aux = {k: v for k, v in aux.items() if jnp.ndim(v) == 0}
                acc = aux if acc is None else {k: acc[k] + aux[k] for k in acc}
                n_acc += 1
                s += 1
                if s % log_every == 0 or s == total:
                    row = row_of(s, acc, n_acc)     # waits for the device
                    if not math.isfinite(row["loss"]):
                        raise FloatingPointError(f"[{desc}] loss is {row['loss']} in the steps before {s}; "
                                                 "lower the learning rate (the last checkpoint is intact)")
                    history.append(row)
                    acc, n_acc = None, 0
                    bar.update(s - bar.n)
                    bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
                    if not progress:
                        log(f"[{desc}] step {s}/{total} " + " ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                                    if k not in ("step", "epoch")))
                if early_stopping is not None and s % early_stopping.every == 0:
                    val = float(early_stopping.eval_fn(state))
                    history.append({"step": s, "val_loss": val})
                    if es["best"] is None or val < es["best"] - early_stopping.min_delta:
                        es.update(best=val, best_step=s, since_best=0)
                        if early_stopping.on_best is not None:
                            early_stopping.on_best(state)
                    else:
                        es["since_best"] += 1
                    log(f"[{desc}] step {s}: validation loss {val:.5g} (best {es['best']:.5g} at "
                        f"step {es['best_step']})")
                    if es["since_best"] >= early_stopping.patience:
                        reason = StopReason.EARLY_STOPPED
                        log(f"[{desc}] early stop at step {s}: no improvement in {early_stopping.patience} "
                            "evaluations")
                        break
                if s % checkpoint_every == 0 and s < end:
                    save()
                if max_seconds is not None and s < end and time.perf_counter() - t0 >= max_seconds:
                    reason = StopReason.TIME_BUDGET
                    log(f"[{desc}] time budget of {max_seconds:g} s reached at step {s}/{total}")
                    break
        except KeyboardInterrupt:   # a KeyboardInterrupt outside the handler (e.g. another thread's)
            jax.block_until_ready(state)
            save(StopReason.INTERRUPTED.value)
            log(f"[{desc}] interrupted: checkpoint at step {int(state.step)}")
            raise
        finally:
            bar.close()
        if flag.signum is not None:
            save(StopReason.INTERRUPTED.value)
            log(f"[{desc}] {signal.Signals(flag.signum).name}: saved step {s}")
            raise TrainingInterrupted(flag.signum, s)
    save(reason.value)
    return LoopResult(state, history, wall_time, reason, es)
