"""Fitting the DGM models (Flax NNX) with the package's one trainer, :mod:`jaxeit.training`.

The pattern (no ``nnx.jit``): a model is split once into ``(graphdef, params,
rest)`` with :func:`split_model`; the loss is a pure function
``loss_fn(params, rest, batch, key, extra) -> (loss, aux)`` that merges the
model inside (``nnx.merge``). :func:`fit` runs epochs over arrays held in host
memory through :func:`jaxeit.training.train_loop`:

* the order of epoch ``e`` is ``np.random.default_rng([seed, e]).permutation(n)``
  and the key of step ``s`` is ``fold_in(PRNGKey(seed), s)``, so a run resumed
  from a checkpoint reproduces an uninterrupted run bit for bit;
* checkpoints (``<workdir>/<name>.ckpt.npz``, :class:`jaxeit.training.Checkpointer`)
  are written atomically every ``checkpoint_every`` steps, at the end, at the
  time budget and on SIGINT/SIGTERM, and resumed when the run description matches;
* optional early stopping on a validation loss (``FitConfig.patience`` with
  ``val_data``), keeping the best parameters;
* data-parallel over ``devices`` (default: all visible devices): each batch is
  split over the devices along its first axis and the parameters and
  optimiser state are replicated (:mod:`jaxeit.parallel`).

Optimiser: gradient clipping by global norm, then L2 weight decay added to the
gradient (PyTorch ``Adam(weight_decay=...)``, as in the DGM code), then Adam,
with an optional linear warm-up and an optional EMA of the parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .. import training
from ..parallel import data_mesh, replicate
from ..training import (Checkpointer, EarlyStopping, OptimizerConfig, TrainState, checkpoint_summary,
                        count_params, epoch_batches, load_arrays, read_meta, save_arrays)

__all__ = ["FitConfig", "TrainState", "make_optimizer", "split_model", "count_params", "fit", "fit_summary",
           "epoch_batches", "host_rng", "host_normal", "host_zeros", "host_ones",
           "checkpoint_summary", "save_arrays", "load_arrays", "read_meta", "FitResult"]


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Optimisation settings of one training stage.

    Attributes:
        epochs: passes over the training arrays (each ``n // batch_size`` steps).
        batch_size: samples per step (the last incomplete batch of an epoch is dropped).
        lr: Adam learning rate (constant).
        weight_decay: L2 weight added to the gradient (0 for none).
        grad_clip: clip gradients to this global norm (0 or None for none).
        seed: data order and step keys (see the module docstring).
        checkpoint_every: steps between checkpoints.
        log_every: steps between history entries (means over the interval); also how often
            the loop waits for the device (the loss is checked for NaN there).
        max_seconds: stop once this much training wall time (resumed runs included) has
            passed, at the next step boundary (``None``: run all epochs). The steps done
            are in the history; :func:`fit` with ``until_step`` reproduces such a run.
        warmup_steps: linear learning-rate warm-up from 0 over this many steps.
        ema_decay: keep an EMA of the parameters with this decay (``None``: none);
            :func:`fit` then returns the EMA parameters.
        patience: with ``val_data`` given to :func:`fit`, stop after this many
            validation evaluations (every ``eval_every`` steps) without improvement and
            return the best parameters (``None``: no early stopping).
        eval_every: steps between validation evaluations (default: once per epoch).
    """

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    max_seconds: float | None = None
    warmup_steps: int = 0
    ema_decay: float | None = None
    patience: int | None = None
    eval_every: int | None = None

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or (self.grad_clip is not None and self.grad_clip < 0):
            raise ValueError("weight_decay and grad_clip must be >= 0")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {self.max_seconds}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 or None, got {self.eval_every}")
        self.optimizer()  # validates lr, warm-up and EMA decay

    def optimizer(self) -> OptimizerConfig:
        """The :class:`jaxeit.training.OptimizerConfig` of this stage (L2 decay, constant lr)."""
        return OptimizerConfig(lr=self.lr, warmup_steps=self.warmup_steps, decay_steps=None,
                               weight_decay=self.weight_decay, decoupled_weight_decay=False,
                               grad_clip=self.grad_clip, ema_decay=self.ema_decay)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_optimizer(config: FitConfig) -> optax.GradientTransformation:
    """clip_by_global_norm → add_decayed_weights (L2 into the gradient) → Adam."""
    return training.make_optimizer(config.optimizer())


def split_model(model: nnx.Module):
    """``(graphdef, params, rest)``: trainable :class:`nnx.Param` s and every other variable."""
    return nnx.split(model, nnx.Param, ...)


def host_rng(key) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().astype(np.uint64))


def host_normal(std: float | None = None):
    """Initialiser N(0, std²) drawn with numpy from the key (std None: LeCun, 1/√fan_in).

    Host-side initialisers avoid compiling one XLA kernel per parameter shape,
    which dominates model construction on a CPU; the values are a deterministic
    function of the key, like JAX's own initialisers.
    """
    def init(key, shape, dtype=jnp.float32):
        sd = std if std is not None else 1.0 / math.sqrt(max(1, math.prod(shape[:-1])))
        return jnp.asarray(sd * host_rng(key).standard_normal(shape), dtype)
    return init


def host_zeros(key, shape, dtype=jnp.float32):
    """Zeros, without an XLA kernel."""
    return jnp.asarray(np.zeros(shape), dtype)


def host_ones(key, shape, dtype=jnp.float32):
    """Ones, without an XLA kernel."""
    return jnp.asarray(np.ones(shape), dtype)


# -----------------------------------------------------------------------------------
# The fit
# -----------------------------------------------------------------------------------

LossFn = Callable[..., tuple]


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns besides the parameters (also unpacks as ``(params, history)``)."""

    params: object
    history: list
    stop_reason: training.StopReason
    wall_time: float
    state: TrainState | None = None
    best_val_loss: float | None = None
    best_step: int | None = None

    def __iter__(self):
        return iter((self.params, self.history))


def fit_summary(result: FitResult) -> dict:
    """How a :func:`fit` run ended, JSON-able: stop reason, wall time (s), steps, best validation loss and step."""
    state = result.state
    return {"stop_reason": str(getattr(result.stop_reason, "value", result.stop_reason)),
            "wall_time": float(result.wall_time), "steps": None if state is None else int(state.step),
            "best_val_loss": None if result.best_val_loss is None else float(result.best_val_loss),
            "best_step": None if result.best_step is None else int(result.best_step)}


@functools.lru_cache(maxsize=64)
def _adapt(loss_fn):
    """``loss(params, (rest, batch), key, extra)`` in the signature of :func:`jaxeit.training.make_train_step`."""
    def loss(params, rest_batch, key, extra):
        rest, batch = rest_batch
        return loss_fn(params, rest, batch, key, extra)
    return loss


def fit(loss_fn: LossFn, params, *, data: dict, config: FitConfig, rest=None, extra=None,
        workdir=None, name: str = "model", run_config: dict | None = None, resume: bool = True,
        until_step: int | None = None, progress: bool = True, log=print, devices=None,
        val_data: dict | None = None, key=None) -> FitResult:
    """Minimise ``loss_fn`` over ``data`` with Adam; returns a :class:`FitResult` (``params, history = ...``).

    Args:
        loss_fn: ``loss_fn(params, rest, batch, key, extra) -> (loss, aux)`` (a hashable
            function; keep the same object across calls to reuse the compiled step), with
            ``batch`` a dict of (B, ...) arrays (the same keys as ``data``),
            ``key`` the step's PRNG key and ``aux`` a dict of scalars.
        params: the initial trainable parameters (a pytree, e.g. an ``nnx.State``).
        data: ``{name: (n, ...) numpy array}``, all with the same n.
        config: the :class:`FitConfig`.
        rest: non-trainable model variables passed to ``loss_fn`` unchanged.
        extra: any other pytree passed to ``loss_fn`` (e.g. a frozen network).
        workdir: folder for ``<name>.ckpt.npz``; ``None``: no checkpoints.
        name: the checkpoint's name.
        run_config: JSON-able description of everything that defines the run
            (model config, data); a checkpoint is resumed only if it matches.
        resume: continue from an existing checkpoint.
        until_step: stop after this many steps in total (e.g. to split a run).
        progress: tqdm bar.
        log: one-line messages (``None``: silent).
        devices: the devices to split each batch over (see
            :func:`jaxeit.parallel.data_mesh`; ``None``: all visible devices).
        val_data: validation arrays (same keys as ``data``) for early stopping
            (``config.patience``); the validation loss is the mean of ``loss_fn`` over
            its full batches with a fixed key, on the EMA parameters if kept.
        key: the base key of the step keys (``fold_in(key, step)``); default
            ``PRNGKey(config.seed)``.

    Returns:
        A :class:`FitResult`: the trained parameters (the EMA if ``config.ema_decay``;
        the best by validation loss with early stopping), history rows (dicts with
        ``step``, ``epoch``, ``loss`` and the means of ``aux``; ``val_loss`` rows), the
        stop reason and the wall time.

    Raises:
        ValueError: on inconsistent data, too few samples for one batch, a batch
            size that is not a multiple of the number of devices, or a
            checkpoint written with another ``run_config``.
        FloatingPointError: if the loss becomes NaN/inf.
        jaxeit.training.TrainingInterrupted: on SIGINT/SIGTERM, after saving.
    """
    log = log or (lambda *a, **k: None)
    sizes = {k: len(v) for k, v in data.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all data arrays need the same number of samples, got {sizes}")
    n = next(iter(sizes.values()))
    spe = n // config.batch_size
    if spe < 1:
        raise ValueError(f"{n} samples are fewer than one batch of {config.batch_size}")
    mesh = data_mesh(devices)
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size {config.batch_size} cannot be split over {mesh.size} devices: use a "
                         f"multiple of {mesh.size} or fewer devices (devices=...)")
    if config.patience is not None and val_data is None:
        raise ValueError("FitConfig.patience needs val_data (the validation arrays) for early stopping")
    total = spe * config.epochs
    end = total if until_step is None else min(int(until_step), total)
    opt_config = config.optimizer()
    full_config = {"fit": config.to_dict(), "run": run_config or {}, "n_samples": n}
    ckpt = None if workdir is None else Checkpointer(Path(workdir) / f"{name}.ckpt.npz", full_config,
                                                     mutable=())
    state = training.init_state(params, opt_config)
    history, wall, pending, es = [], 0.0, None, None
    if ckpt is not None and resume:
        loaded = ckpt.load(state)
        if loaded is not None:
            state, history, wall, pending, es = (loaded.state, loaded.history, loaded.wall_time, loaded.pending,
                                                 loaded.early_stop)
            log(f"[{name}] resumed at step {int(state.step)}/{total} ({wall / 60:.1f} min so far)")
    state, rest, extra = replicate((state, rest, extra), mesh)
    step = training.make_train_step(_adapt(loss_fn), opt_config)
    base_key = jax.random.PRNGKey(config.seed) if key is None else key
    batch_at = epoch_batches(data, config.batch_size, config.seed, mesh)

    best = {"params": None}
    early = None
    if config.patience is not None:
        evaluate = _validation_loss(loss_fn, val_data, config.batch_size, rest, extra)
        best_path = None if workdir is None else Path(workdir) / f"{name}.best.npz"

        def on_best(st):
            weights = st.ema if st.ema is not None else st.params
            best["params"] = jax.tree_util.tree_map(jnp.copy, weights)
            if best_path is not None:
                save_arrays(best_path, weights, {"step": int(st.step)})

        early = EarlyStopping(lambda st: evaluate(st.ema if st.ema is not None else st.params),
                              every=config.eval_every or spe, patience=config.patience, on_best=on_best)
    budget = None if config.max_seconds is None else max(config.max_seconds - wall, 1e-9)
    result = training.train_loop(lambda st, s: step(st, (rest, batch_at(s)), base_key, extra), state, end=end,
                                 total=total,
                                 checkpointer=ckpt, history=history, wall_time=wall, pending=pending,
                                 log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                                 max_seconds=budget, steps_per_epoch=spe, early_stopping=early,
                                 early_stop_state=es, progress=progress, desc=name, log=log)
    final = result.state.ema if result.state.ema is not None else result.state.params
    if early is not None and result.early_stop.get("best_step") is not None:
        if best["params"] is None and workdir is not None:   # the best came before a resume
            best["params"], _ = load_arrays(Path(workdir) / f"{name}.best.npz", final)
        final = best["params"] if best["params"] is not None else final
    return FitResult(final, result.history, result.stop_reason, result.wall_time, result.state,
                     result.early_stop.get("best"), result.early_stop.get("best_step"))


def _validation_loss(loss_fn, val_data: dict, batch_size: int, rest, extra):
    """``evaluate(params) -> float``: mean loss over the full batches of ``val_data`` with a fixed key."""
    n = len(next(iter(val_data.values())))
    nb = max(1, n // batch_size)
    size = min(batch_size, n)
    batches = [{k: jnp.asarray(v[i * size:(i + 1) * size]) for k, v in val_data.items()} for i in range(nb)]
    key = jax.random.PRNGKey(0x5EED)

    @jax.jit
    def one(params, batch):
        return loss_fn(params, rest, batch, key, extra)[0]

    return lambda params: float(np.mean([float(one(params, b)) for b in batches]))
