"""A small, resumable training loop shared by the DGM models (Flax NNX + optax).

The pattern (no ``nnx.jit``): a model is split once into ``(graphdef, params,
rest)`` with :func:`split_model`; the loss is a pure function
``loss_fn(params, rest, batch, key, extra) -> (loss, aux)`` that merges the
model inside (``nnx.merge``); one optimiser step is ``jax.jit``-ed.

:func:`fit` runs epochs over arrays held in host memory:

* the order of epoch ``e`` is ``np.random.default_rng([seed, e]).permutation(n)``
  and the key of step ``s`` is ``fold_in(PRNGKey(seed), s)``, so the data
  order and the randomness of a step depend only on ``(seed, s)``: a run
  resumed from a checkpoint reproduces an uninterrupted run bit for bit;
* checkpoints (``<workdir>/<name>.ckpt.npz``) hold the whole
  :class:`TrainState`, the history and the config, are written atomically
  (temporary file + ``os.replace``) every ``checkpoint_every`` steps, at the
  end and on ``KeyboardInterrupt``, and are resumed automatically when the
  config matches;
* progress is a tqdm bar with the running loss;
* data-parallel over ``devices`` (default: all visible devices): each batch is
  split over the devices along its first axis and the parameters and
  optimiser state are replicated (:mod:`jaxeit.parallel`), so the same step
  runs on 1 or N devices and XLA adds the gradient all-reduce. The batch size
  must be a multiple of the number of devices.

Optimiser (:func:`make_optimizer`): gradient clipping by global norm, then L2
weight decay added to the gradient (PyTorch ``Adam(weight_decay=...)``, as in
the DGM code), then Adam.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..io_utils import atomic_path
from ..parallel import data_mesh, replicate, shard_batch

__all__ = ["FitConfig", "TrainState", "make_optimizer", "split_model", "count_params", "fit",
           "epoch_batches", "run_loop", "host_rng", "host_normal", "host_zeros", "host_ones",
           "save_checkpoint", "load_checkpoint", "checkpoint_summary", "save_arrays", "load_arrays"]


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
            passed, at the next logging step (``None``: run all epochs). The steps done
            are in the history; :func:`fit` with ``until_step`` reproduces such a run.
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TrainState(NamedTuple):
    """Everything a resume needs (a pytree)."""

    step: jax.Array      # () int32, steps done
    params: object       # nnx.State of the trainable parameters
    opt_state: object    # optax state


def make_optimizer(config: FitConfig) -> optax.GradientTransformation:
    """clip_by_global_norm → add_decayed_weights (L2 into the gradient) → Adam."""
    parts = []
    if config.grad_clip:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.adam(config.lr))
    return optax.chain(*parts)


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


def count_params(tree) -> int:
    """Number of scalars in a pytree."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


# -----------------------------------------------------------------------------------
# Array files and checkpoints
# -----------------------------------------------------------------------------------

def save_arrays(path, tree, meta: dict | None = None) -> Path:
    """Write the leaves of ``tree`` and a JSON ``meta`` to ``path`` (.npz) atomically."""
    path = Path(path)
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["meta_json"] = np.array(json.dumps(meta or {}))
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def load_arrays(path, template):
    """Read a file of :func:`save_arrays` into the structure of ``template``: ``(tree, meta)``.

    Raises:
        ValueError: if the file is unreadable or its arrays do not match the template.
    """
    path = Path(path)
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data["meta_json"]))
    except Exception as exc:  # noqa: BLE001 - any corruption reads the same
        raise ValueError(f"{path} is unreadable ({exc}); delete it to start afresh") from exc
    leaves, treedef = jax.tree_util.tree_flatten(template)
    n = sum(k.startswith("leaf_") for k in data)
    if n != len(leaves):
        raise ValueError(f"{path} holds {n} arrays, the model needs {len(leaves)}: was it written with "
                         "another configuration?")
    out = []
    for i, ref in enumerate(leaves):
        arr = data[f"leaf_{i:05d}"]
        if arr.shape != np.shape(ref) or arr.dtype != np.asarray(ref).dtype:
            raise ValueError(f"{path}: array {i} is {arr.dtype}{arr.shape}, expected "
                             f"{np.asarray(ref).dtype}{np.shape(ref)}")
        out.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, out), meta


def save_checkpoint(path, state: TrainState, *, config: dict, history, wall_time: float) -> Path:
    """Atomically write a :class:`TrainState` with its config, history and wall time."""
    return save_arrays(path, state, {"config": config, "history": history, "wall_time": wall_time})


def load_checkpoint(path, template: TrainState, *, config: dict | None = None):
    """Read a checkpoint: ``(state, history, wall_time)``, or ``None`` if ``path`` does not exist.

    Raises:
        ValueError: if it is unreadable, or ``config`` is given and differs from the saved one.
    """
    path = Path(path)
    if not path.exists():
        return None
    state, meta = load_arrays(path, template)
    if config is not None and meta.get("config") != json.loads(json.dumps(config)):
        saved = meta.get("config") or {}
        diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise ValueError(f"checkpoint {path} was written with another config (differs in {diff}); "
                         "use another workdir or delete it")
    return state, meta.get("history", []), float(meta.get("wall_time", 0.0))


# -----------------------------------------------------------------------------------
# The loop
# -----------------------------------------------------------------------------------

LossFn = Callable[..., tuple]


def fit(loss_fn: LossFn, params, *, data: dict, config: FitConfig, rest=None, extra=None,
        workdir=None, name: str = "model", run_config: dict | None = None, resume: bool = True,
        until_step: int | None = None, progress: bool = True, log=print, devices=None):
    """Minimise ``loss_fn`` over ``data`` with Adam; returns ``(params, history)``.

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

    Returns:
        ``(params, history)``; history rows are dicts with ``step``, ``epoch``,
        ``loss`` and the means of ``aux`` over the logging interval.

    Raises:
        ValueError: on inconsistent data, too few samples for one batch, a batch
            size that is not a multiple of the number of devices, or a
            checkpoint written with another ``run_config``.
        FloatingPointError: if the loss becomes NaN/inf.
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
    total = spe * config.epochs
    end = total if until_step is None else min(int(until_step), total)
    opt = make_optimizer(config)  # only for init; the step builds the same chain
    full_config = {"fit": config.to_dict(), "run": run_config or {}, "n_samples": n}
    ckpt = None if workdir is None else Path(workdir) / f"{name}.ckpt.npz"
    state = TrainState(jnp.asarray(0, jnp.int32), params, opt.init(params))
    history, wall = [], 0.0
    if ckpt is not None and resume:
        loaded = load_checkpoint(ckpt, state, config=full_config)
        if loaded is not None:
            state, history, wall = loaded
            log(f"[{name}] resumed at step {int(state.step)}/{total} ({wall / 60:.1f} min so far)")
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    state, rest, extra = replicate((state, rest, extra), mesh)
    train_step = _train_step(loss_fn, config.lr, config.weight_decay, config.grad_clip, config.seed)

    batch_at = epoch_batches(data, config.batch_size, config.seed, mesh)
    state, history = run_loop(lambda st, b: train_step(st, rest, b, extra), state, batch_at, end=end, spe=spe,
                              config=config, history=history, wall=wall, name=name, progress=progress, log=log,
                              save=None if ckpt is None else
                              lambda st, h, w: save_checkpoint(ckpt, st, config=full_config, history=h,
                                                               wall_time=w))
    return state.params, history


def epoch_batches(data: dict, batch_size: int, seed: int, mesh=None) -> Callable[[int], dict]:
    """``batch_at(step) -> {name: (B, ...) device array}``: epoch ``e`` visits the samples in the order
    ``default_rng([seed, e]).permutation(n)`` (drop-last), so a batch depends only on (seed, step).
    With a device ``mesh`` (:func:`jaxeit.parallel.data_mesh`) the batch axis is split over its devices."""
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


def run_loop(step_fn, state, batch_at, *, end: int, spe: int, config: FitConfig, history: list, wall: float,
             name: str, progress: bool, log, save=None):
    """The loop shared by :func:`fit` and the score model's trainer: steps ``state.step … end − 1``.

    ``step_fn(state, batch) -> (state, aux)`` is jitted and asynchronous: the loop
    waits for the device only every ``config.log_every`` steps (when it averages
    ``aux`` and checks the loss), so small models on an accelerator are not
    bound by one host round trip per step. ``save(state, history, wall_s)``
    writes a checkpoint (every ``checkpoint_every`` steps, at the end, on
    KeyboardInterrupt). Stops early once ``config.max_seconds`` of wall time
    (this run after its first, compiling step, plus ``wall``) has passed.
    Returns ``(state, history)``.
    """
    from tqdm.auto import tqdm

    start = int(state.step)
    t_last = time.perf_counter()

    def checkpoint():
        nonlocal wall, t_last
        now = time.perf_counter()
        wall += now - t_last
        t_last = now
        if save is not None:
            save(state, history, wall)

    acc, n_acc = None, 0
    s = start
    budget_used = wall                    # training time of earlier (resumed) runs
    t_budget = time.perf_counter()
    bar = tqdm(total=end, initial=start, disable=not progress, desc=name, dynamic_ncols=True, mininterval=5.0)
    try:
        while s < end:
            state, aux = step_fn(state, batch_at(s))
            acc = aux if acc is None else jax.tree_util.tree_map(jnp.add, acc, aux)
            n_acc += 1
            s += 1
            if s == start + 1:   # the time budget starts after the first (compiling) step
                jax.block_until_ready(aux)
                t_budget = time.perf_counter()
            if s % config.log_every == 0 or s == end:
                means = {k: float(v) / n_acc for k, v in acc.items()}   # waits for the device
                if not math.isfinite(means["loss"]):
                    raise FloatingPointError(f"[{name}] loss is {means['loss']} before step {s}; "
                                             "lower the learning rate")
                row = {"step": s, "epoch": s / spe, **means}
                history.append(row)
                bar.update(s - bar.n)
                bar.set_postfix(loss=f"{row['loss']:.4g}")
                acc, n_acc = None, 0
                if (config.max_seconds is not None and s < end
                        and budget_used + time.perf_counter() - t_budget >= config.max_seconds):
                    log(f"[{name}] time budget of {config.max_seconds:g} s reached at step {s}/{end}")
                    checkpoint()
                    break
            if s % config.checkpoint_every == 0 or s == end:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        log(f"[{name}] interrupted: checkpoint at step {int(state.step)}")
        raise
    finally:
        bar.close()
    if s == start:
        checkpoint()
    return state, history


@functools.lru_cache(maxsize=32)
def _train_step(loss_fn, lr, weight_decay, grad_clip, seed):
    """The jitted ``step(state, rest, batch, extra) -> (state, aux)``, cached so that repeated
    :func:`fit` calls with the same loss function and optimiser reuse the compiled code."""
    opt = make_optimizer(FitConfig(lr=lr, weight_decay=weight_decay, grad_clip=grad_clip, seed=seed))
    base_key = jax.random.PRNGKey(seed)

    @jax.jit
    def step(state: TrainState, rest, batch, extra):
        key = jax.random.fold_in(base_key, state.step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, rest, batch, key, extra)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        aux = dict(aux, loss=loss, grad_norm=optax.global_norm(grads))
        return TrainState(state.step + 1, params, opt_state), aux

    return step


def checkpoint_summary(path) -> tuple[float, int, float, float]:
    """(wall s, steps, epochs, last logged loss) recorded in a training checkpoint."""
    with np.load(Path(path)) as z:
        meta = json.loads(str(z["meta_json"]))
    last = (meta.get("history") or [{}])[-1]
    return (float(meta.get("wall_time", 0.0)), int(last.get("step", 0)), float(last.get("epoch", 0.0)),
            float(last.get("loss", float("nan"))))
