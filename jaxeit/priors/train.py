"""Training of the shapes diffusion prior: config, jitted step, atomic checkpoints, resume, CLI.

The data are streamed, never stored: the batch of step ``s`` is
``shapes.sample_images(fold_in(data_key, s), batch_size)`` and its timesteps and
noise come from ``fold_in(noise_key, s)``, with both keys derived from the seed.
So training is a deterministic function of ``(config, step)``: a run resumed
from a checkpoint replays exactly the batches an uninterrupted run would see and
ends in the same state (bit for bit on the same machine and software).

Checkpoints (``<workdir>/checkpoint.npz``, written every ``checkpoint_every``
steps, at the end and on SIGTERM / Ctrl-C) hold the whole train state (step,
parameters, AdamW state, EMA parameters, RNG key) as the flattened leaves of
the state pytree, plus the config as JSON, the loss history and the wall time
so far. They are written to a temporary file in the same folder, flushed and
moved over the old one with ``os.replace`` (atomic on POSIX), so a kill at any
moment leaves either the old or the new checkpoint, never a torn file.

A run that turns out too slow can be shortened (or extended) on resume with
``--reschedule --steps N``: the learning-rate schedule follows the new length
from the checkpoint on, and a note in the checkpoint and the exported JSON
records the change (the shipped ``shapes32`` prior was started with 4000 steps
and cut to 2500 at step 602 on a machine shared with other jobs).

The shipped prior: ``TrainConfig()`` defaults (32×32, U-Net 16×[1, 2, 4]
channels with attention at 8×8, 0.69 M parameters, batch 32, 2500 steps,
AdamW 8e-4 with warm-up and cosine decay, EMA 0.999), 61 min on one core.

Command line (``python -m jaxeit.priors.train --help``; the future
``jaxeit train-prior`` calls :func:`main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxeit.machine import cpu_model
from jaxeit.priors import shapes as shapes_lib
from jaxeit.priors.diffusion import EMA_DECAY, GaussianDiffusion, ema_update
from jaxeit.priors.unet import UNetConfig, abstract_params, count_params, init_params, make_apply

__all__ = ["TrainConfig", "TrainState", "init_state", "make_train_step", "train", "save_checkpoint",
           "load_checkpoint", "Checkpoint", "export_weights", "main", "CHECKPOINT_NAME", "WEIGHTS_DIR"]

CHECKPOINT_NAME = "checkpoint.npz"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Config fields that may change when a run is resumed (they do not affect the state).
_RESUMABLE_FIELDS = ("checkpoint_every", "log_every")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the defaults trained the shipped prior).

    Network: ``image_size``, ``base_channels``, ``channel_mult``, ``num_res_blocks``,
    ``attention_resolutions``, ``num_heads``, ``num_groups`` (see
    :class:`jaxeit.priors.unet.UNetConfig`). Diffusion: ``num_timesteps`` (cosine
    schedule), ``lambda_vlb``. Optimiser: AdamW with linear warm-up over
    ``warmup_steps`` to ``lr`` then cosine decay to ``lr · min_lr_fraction`` at
    ``steps``; ``weight_decay``; global-norm gradient clipping at ``grad_clip``.
    ``ema_decay``: EMA of the weights, with the usual warm-up
    ``min(ema_decay, (1 + s)/(10 + s))``. ``seed``: parameters and data stream.
    ``shapes``: the data distribution.
    """

    # 32×32, not 64×64: on one core this U-Net trains at 0.53–0.63 s/step (batch 32);
    # the cheapest 64×64 U-Net tried took ≥ 2.1 s/step, i.e. ≤ 1/4 of the steps in the
    # same budget, and 16-electrode EIT resolves far less than 32×32 anyway
    image_size: int = 32
    base_channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (8,)
    num_heads: int = 4
    num_groups: int = 8
    num_timesteps: int = 1000
    lambda_vlb: float = 0.001
    batch_size: int = 32
    steps: int = 2500
    lr: float = 8e-4
    warmup_steps: int = 200
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = EMA_DECAY
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 50
    shapes: shapes_lib.ShapesConfig = shapes_lib.ShapesConfig()

    def __post_init__(self):
        for name in ("batch_size", "steps", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        self.unet_config()  # validates the network shape

    def unet_config(self) -> UNetConfig:
        return UNetConfig(image_size=self.image_size, base_channels=self.base_channels,
                          channel_mult=tuple(self.channel_mult), num_res_blocks=self.num_res_blocks,
                          attention_resolutions=tuple(self.attention_resolutions),
                          num_heads=self.num_heads, num_groups=self.num_groups)

    def diffusion(self) -> GaussianDiffusion:
        return GaussianDiffusion.cosine(self.num_timesteps, lambda_vlb=self.lambda_vlb)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shapes"] = self.shapes.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        shapes = shapes_lib.ShapesConfig.from_dict(d.pop("shapes", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(shapes=shapes, **d)


class TrainState(NamedTuple):
    """The complete state of a run: everything a resume needs (a pytree)."""

    step: jax.Array          # () int32, steps done
    params: object           # nnx.State of the U-Net (float32)
    opt_state: object        # optax state
    ema: object              # EMA of params
    key: jax.Array           # (2,) uint32 base key of the run (from the seed)


def _optimizer(config: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.lr, max(1, min(config.warmup_steps, config.steps)), max(config.steps, 2),
        end_value=config.lr * config.min_lr_fraction)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip),
                       optax.adamw(schedule, weight_decay=config.weight_decay))


@functools.lru_cache(maxsize=8)
def _graphdef(unet_config: UNetConfig):
    graphdef, _ = abstract_params(unet_config)
    return graphdef


def init_state(config: TrainConfig) -> TrainState:
    """Fresh state: parameters from ``fold_in(key(seed), 2)``, zero step."""
    key = jax.random.PRNGKey(config.seed)
    _, params = init_params(config.unet_config(), jax.random.fold_in(key, 2))
    opt_state = _optimizer(config).init(params)
    ema = jax.tree_util.tree_map(jnp.copy, params)
    return TrainState(jnp.asarray(0, jnp.int32), params, opt_state, ema, key)


def _abstract_state(config: TrainConfig) -> TrainState:
    """The state's structure with ``jax.ShapeDtypeStruct`` leaves (nothing is computed)."""
    _, params = abstract_params(config.unet_config())
    return jax.eval_shape(lambda p: TrainState(jnp.zeros((), jnp.int32), p, _optimizer(config).init(p), p,
                                               jax.random.PRNGKey(config.seed)), params)


def make_train_step(config: TrainConfig):
    """The jitted ``step(state) -> (state, metrics)`` for ``config`` (cached per config).

    The batch, timesteps and noise of step ``s = state.step`` are drawn from keys
    folded with ``s``; metrics are scalar means ``loss``, ``mse``, ``vb``,
    ``grad_norm`` and ``lr`` of that step.
    """
    return _make_train_step(dataclasses.replace(config, **{k: 1 for k in _RESUMABLE_FIELDS}))


@functools.lru_cache(maxsize=8)
def _make_train_step(config: TrainConfig):
    apply = make_apply(_graphdef(config.unet_config()))
    diffusion = config.diffusion()
    opt = _optimizer(config)
    schedule_lr = optax.warmup_cosine_decay_schedule(
        0.0, config.lr, max(1, min(config.warmup_steps, config.steps)), max(config.steps, 2),
        end_value=config.lr * config.min_lr_fraction)

    def step(state: TrainState):
        s = state.step
        data_key = jax.random.fold_in(jax.random.fold_in(state.key, 0), s)
        noise_key = jax.random.fold_in(jax.random.fold_in(state.key, 1), s)
        x0 = shapes_lib._sample_images(data_key, batch=config.batch_size, size=config.image_size,
                                       config=config.shapes)
        (loss, aux), grads = jax.value_and_grad(
            lambda p: diffusion.training_losses(apply, p, x0, noise_key), has_aux=True)(state.params)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        sf = s.astype(jnp.float32)
        decay = jnp.minimum(config.ema_decay, (1.0 + sf) / (10.0 + sf))
        ema = ema_update(state.ema, params, decay)
        metrics = dict(aux, grad_norm=optax.tree.norm(grads), lr=schedule_lr(s))
        return TrainState(s + 1, params, opt_state, ema, state.key), metrics

    return jax.jit(step, donate_argnums=0)


# -----------------------------------------------------------------------------------
# Checkpoints
# -----------------------------------------------------------------------------------

def _atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns."""

    state: TrainState
    config: TrainConfig
    history: list          # rows (step, loss, mse, vb, grad_norm), one per log interval
    wall_time: float       # seconds of training so far
    notes: list            # free-text notes (e.g. schedule changes)


def save_checkpoint(workdir, state: TrainState, config: TrainConfig, *, history=(), wall_time: float = 0.0,
                    notes=()) -> Path:
    """Write ``<workdir>/checkpoint.npz`` atomically; returns its path."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["config_json"] = np.array(json.dumps(config.to_dict()))
    arrays["history"] = np.asarray(history, dtype=np.float64).reshape(-1, 5)
    arrays["wall_time"] = np.asarray(wall_time, dtype=np.float64)
    arrays["notes_json"] = np.array(json.dumps(list(notes)))
    path = workdir / CHECKPOINT_NAME
    _atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def load_checkpoint(workdir, config: TrainConfig | None = None, *, allow_steps_change: bool = False):
    """Read ``<workdir>/checkpoint.npz``.

    Args:
        workdir: the run folder.
        config: the expected config; ``None`` uses the one saved in the checkpoint.
        allow_steps_change: accept a ``config`` whose ``steps`` differ from the saved
            one (shortening or extending a run: the learning-rate schedule changes from
            the checkpoint on, so the run is no longer identical to a fresh one; a note
            records it).

    Returns:
        A :class:`Checkpoint` ``(state, config, history, wall_time, notes)``, or ``None``
        if there is no checkpoint.

    Raises:
        ValueError: if the checkpoint is unreadable or does not match the config.
    """
    path = Path(workdir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
        saved = TrainConfig.from_dict(json.loads(str(data["config_json"])))
    except Exception as exc:  # noqa: BLE001 - report any corruption the same way
        raise ValueError(f"checkpoint {path} is unreadable ({exc}); delete it or pass --fresh") from exc
    if config is None:
        config = saved
    else:
        a, b = saved.to_dict(), config.to_dict()
        allowed = _RESUMABLE_FIELDS + (("steps",) if allow_steps_change else ())
        diff = sorted(k for k in a if a[k] != b[k] and k not in allowed)
        if diff:
            raise ValueError(f"checkpoint {path} was written with a different config "
                             f"({', '.join(f'{k}: {a[k]} -> {b[k]}' for k in diff)}); "
                             f"use another workdir or --fresh")
    template = _abstract_state(config)
    leaves, treedef = jax.tree_util.tree_flatten(template)
    n = sum(k.startswith("leaf_") for k in data)
    if n != len(leaves):
        raise ValueError(f"checkpoint {path} has {n} arrays, the config's state has {len(leaves)}")
    loaded = []
    for i, ref in enumerate(leaves):
        arr = data[f"leaf_{i:05d}"]
        if arr.shape != ref.shape or arr.dtype != ref.dtype:
            raise ValueError(f"checkpoint {path}: array {i} is {arr.dtype}{arr.shape}, "
                             f"expected {ref.dtype}{ref.shape}")
        loaded.append(jnp.asarray(arr))
    state = jax.tree_util.tree_unflatten(treedef, loaded)
    notes = json.loads(str(data["notes_json"])) if "notes_json" in data else []
    if saved.steps != config.steps:
        notes.append(f"steps changed from {saved.steps} to {config.steps} at step {int(state.step)}")
    return Checkpoint(state, config, [tuple(r) for r in data["history"]], float(data["wall_time"]), notes)


# -----------------------------------------------------------------------------------
# Training loop
# -----------------------------------------------------------------------------------

def train(config: TrainConfig, workdir, *, resume: bool = True, until: int | None = None,
          progress: bool = True, log=print, allow_steps_change: bool = False) -> TrainState:
    """Train (or resume) a prior in ``workdir`` until ``config.steps`` (or ``until``).

    Args:
        config: the run's config.
        workdir: folder for ``checkpoint.npz`` and ``config.json``.
        resume: continue from the checkpoint in ``workdir`` if there is one (its config
            must match, apart from ``checkpoint_every`` / ``log_every``); ``False``
            starts afresh and overwrites it.
        until: stop after this many steps in total (e.g. to split a run); the
            schedule still follows ``config.steps``.
        progress: show a tqdm bar (loss in the postfix).
        log: function for one-line log messages (``None`` for silence).
        allow_steps_change: resume even if ``config.steps`` differs from the checkpoint's
            (see :func:`load_checkpoint`).

    Returns:
        The final :class:`TrainState` (also written as the checkpoint).
    """
    from tqdm.auto import tqdm

    log = log or (lambda *a, **k: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    end = config.steps if until is None else min(int(until), config.steps)
    loaded = load_checkpoint(workdir, config, allow_steps_change=allow_steps_change) if resume else None
    if loaded is None:
        state, history, wall, notes = init_state(config), [], 0.0, []
        log(f"[train] new run in {workdir}: {count_params(state.params):,} parameters, "
            f"{config.image_size}x{config.image_size}, batch {config.batch_size}, {config.steps} steps")
    else:
        state, _, history, wall, notes = loaded
        log(f"[train] resumed {workdir} at step {int(state.step)} ({wall / 60:.1f} min so far)"
            + (f"; {notes[-1]}" if notes and notes[-1].endswith(f"at step {int(state.step)}") else ""))
    (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    step_fn = make_train_step(config)
    start = int(state.step)
    acc, n_acc = np.zeros(4), 0
    t_last = time.perf_counter()
    bar = tqdm(total=end, initial=start, disable=not progress, mininterval=5.0, dynamic_ncols=True,
               desc="train-prior")

    def checkpoint():
        nonlocal wall, t_last
        now = time.perf_counter()
        wall += now - t_last
        t_last = now
        save_checkpoint(workdir, state, config, history=history, wall_time=wall, notes=notes)

    try:
        while int(state.step) < end:
            state, m = step_fn(state)
            s = int(state.step)
            acc += np.array([float(m["loss"]), float(m["mse"]), float(m["vb"]), float(m["grad_norm"])])
            n_acc += 1
            if not math.isfinite(acc[0]):
                raise FloatingPointError(f"loss is not finite at step {s}; lower --lr")
            bar.update(1)
            if s % config.log_every == 0 or s == end:
                mean = acc / n_acc
                history.append((s, *mean))
                bar.set_postfix(loss=f"{mean[0]:.4f}", mse=f"{mean[1]:.4f}", vb=f"{mean[2]:.4f}")
                if not progress:
                    log(f"[train] step {s}/{config.steps} loss {mean[0]:.4f} mse {mean[1]:.4f} "
                        f"vb {mean[2]:.4f} |g| {mean[3]:.3f} lr {float(m['lr']):.2e}")
                acc, n_acc = np.zeros(4), 0
            if s % config.checkpoint_every == 0 or s == end:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        log(f"[train] interrupted: checkpoint at step {int(state.step)} in {workdir}")
        raise
    finally:
        bar.close()
    if int(state.step) == start:   # nothing to do; still make sure a checkpoint exists
        checkpoint()
    return state


# -----------------------------------------------------------------------------------
# Export of the shipped weights
# -----------------------------------------------------------------------------------

def export_weights(workdir, name: str, *, out_dir=None, extra: dict | None = None) -> tuple[Path, Path]:
    """Write the EMA weights of the run in ``workdir`` as ``<out_dir>/<name>.msgpack`` + ``.json``.

    The msgpack file is ``flax.serialization.msgpack_serialize`` of the EMA
    parameters as a pure nested dict; the JSON holds the provenance (config,
    steps, seed, final losses, hardware, wall time, data description).
    ``out_dir`` defaults to the package's ``jaxeit/priors/weights``.
    """
    from flax import nnx, serialization

    loaded = load_checkpoint(workdir)
    if loaded is None:
        raise FileNotFoundError(f"no {CHECKPOINT_NAME} in {workdir}; train first")
    state, config, history, wall, notes = loaded
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    pure = nnx.to_pure_dict(state.ema)
    pure = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), pure)
    blob = serialization.msgpack_serialize(pure)
    hist = np.asarray(history, dtype=np.float64).reshape(-1, 5)
    last = hist[-min(len(hist), 10):] if len(hist) else hist
    import importlib.metadata as md

    provenance = {
        "name": name,
        "format": "flax.serialization msgpack of nnx.to_pure_dict(EMA params), float32",
        "train_config": config.to_dict(),
        "unet_config": config.unet_config().to_dict(),
        "n_params": count_params(state.ema),
        "steps": int(state.step),
        "seed": config.seed,
        "final_losses": {
            "note": f"mean over the last {len(last) * config.log_every} training steps (online, not EMA)",
            "loss": float(last[:, 1].mean()) if len(last) else None,
            "mse": float(last[:, 2].mean()) if len(last) else None,
            "vb_bits_per_pixel": float(last[:, 3].mean()) if len(last) else None,
        },
        "loss_history": {"columns": ["step", "loss", "mse", "vb", "grad_norm"],
                         "rows": [[round(float(v), 6) for v in r] for r in hist[:: max(1, len(hist) // 40)]]},
        "wall_time_s": round(wall, 1),
        "notes": notes,
        "hardware": {"cpu": cpu_model(), "logical_cores": os.cpu_count(),
                     "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
                     "threads": os.environ.get("XLA_FLAGS", "default")},
        "software": {p: md.version(p) for p in ("jax", "jaxlib", "flax", "optax", "numpy")},
        "data": ("random overlapping 2D shapes (jaxeit.priors.shapes, config in train_config.shapes), "
                 f"{config.image_size}x{config.image_size} on [-1,1]^2, background outside the unit disk, "
                 "per-image min/max normalisation to [-1,1] inside the disk; streamed, "
                 f"{int(state.step) * config.batch_size} images seen"),
        "diffusion": {"schedule": "cosine", "T": config.num_timesteps, "variance": "learned range",
                      "loss": f"hybrid L_simple + {config.lambda_vlb} L_vlb"},
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "regenerate": (f"python -m jaxeit.priors.train --workdir runs/{name} "
                       f"--export {name}  (config above; see jaxeit/priors/train.py)"),
    }
    if extra:
        provenance.update(extra)
    wpath, jpath = out_dir / f"{name}.msgpack", out_dir / f"{name}.json"
    _atomic_write(wpath, lambda f: f.write(blob))
    _atomic_write(jpath, lambda f: f.write(json.dumps(provenance, indent=1).encode()))
    return wpath, jpath


# -----------------------------------------------------------------------------------
# Command line
# -----------------------------------------------------------------------------------

_EPILOG = """\
examples (`python -m jaxeit.priors.train` is the same command):
  # the shipped prior (about 75 min on one core of a 2-core Xeon):
  jaxeit train-prior --workdir runs/shapes32 --export shapes32
  # same, pinned to one core with single-threaded XLA, in the background:
  taskset -c 1 env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
      nohup jaxeit train-prior --workdir runs/shapes32 --export shapes32 --no-progress \\
      > train.log 2>&1 &
  # resume after a kill: run the same command again (it continues from checkpoint.npz)
  # shorten (or extend) a run that is too slow: resume with another --steps
  jaxeit train-prior --workdir runs/shapes32 --export shapes32 --steps 2500 --reschedule
  # a smoke run (well under a minute on a CPU):
  jaxeit train-prior --workdir /tmp/tiny --steps 4 --warmup-steps 1 --image-size 8 --base-channels 8 \\
      --channel-mult 1 --num-heads 2 --num-groups 4 --batch-size 2 --no-progress
  # export the EMA weights of a finished (or partial) run without training:
  jaxeit train-prior --workdir runs/shapes32 --export shapes32 --export-only
"""


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(v) for v in s.split(",") if v.strip())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxeit train-prior",
                                description="Train the shapes diffusion prior of Diff-INR (improved DDPM, "
                                            "hybrid loss), resuming from <workdir>/checkpoint.npz.",
                                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    p.add_argument("--workdir", default="runs/prior", help="run folder (checkpoint.npz, config.json)")
    g = p.add_argument_group("model and data (defaults: the shipped prior)")
    g.add_argument("--image-size", type=int, help=f"image side n (default {d.image_size})")
    g.add_argument("--base-channels", type=int, help=f"U-Net width (default {d.base_channels})")
    g.add_argument("--channel-mult", type=_ints, help=f"e.g. 1,2,4 (default {','.join(map(str, d.channel_mult))})")
    g.add_argument("--num-res-blocks", type=int, help=f"default {d.num_res_blocks}")
    g.add_argument("--attention-resolutions", type=_ints,
                   help=f"e.g. 8 or 16,8 (default {','.join(map(str, d.attention_resolutions))})")
    g.add_argument("--num-heads", type=int, help=f"default {d.num_heads}")
    g.add_argument("--num-groups", type=int, help=f"GroupNorm groups (default {d.num_groups})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help=f"total steps (default {d.steps})")
    g.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    g.add_argument("--warmup-steps", type=int, help=f"default {d.warmup_steps}")
    g.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default {d.weight_decay})")
    g.add_argument("--grad-clip", type=float, help=f"global-norm clip (default {d.grad_clip})")
    g.add_argument("--ema-decay", type=float, help=f"default {d.ema_decay}")
    g.add_argument("--seed", type=int, help=f"default {d.seed}")
    g = p.add_argument_group("run control")
    g.add_argument("--checkpoint-every", type=int, help=f"default {d.checkpoint_every}")
    g.add_argument("--log-every", type=int, help=f"default {d.log_every}")
    g.add_argument("--until", type=int, help="stop after this many steps (schedule still follows --steps)")
    g.add_argument("--fresh", action="store_true", help="ignore and overwrite an existing checkpoint")
    g.add_argument("--reschedule", action="store_true",
                   help="resume with a different --steps (the LR schedule changes from here on; noted)")
    g.add_argument("--no-progress", action="store_true", help="plain log lines instead of a tqdm bar")
    g.add_argument("--export", metavar="NAME",
                   help="when done, write the EMA weights to jaxeit/priors/weights/NAME.msgpack + NAME.json")
    g.add_argument("--export-dir", help="folder for --export (default: the package's weights folder)")
    g.add_argument("--export-only", action="store_true", help="only export the run's current checkpoint")
    return p


_ARG_FIELDS = {"image_size", "base_channels", "channel_mult", "num_res_blocks", "attention_resolutions",
               "num_heads", "num_groups", "steps", "batch_size", "lr", "warmup_steps", "weight_decay",
               "grad_clip", "ema_decay", "seed", "checkpoint_every", "log_every"}


def main(argv=None) -> int:
    """``jaxeit train-prior``: train / resume / export the shapes prior. Returns the exit code."""
    args = _parser().parse_args(argv)
    workdir = Path(args.workdir)
    given = {k: getattr(args, k) for k in _ARG_FIELDS if getattr(args, k) is not None}
    try:
        if args.export_only:
            if not args.export:
                print("--export-only needs --export NAME", file=sys.stderr)
                return 2
            w, j = export_weights(workdir, args.export, out_dir=args.export_dir)
            print(f"[train] wrote {w} and {j}")
            return 0
        saved = None if args.fresh else load_checkpoint(workdir)
        base = saved[1] if saved is not None else TrainConfig()
        config = TrainConfig.from_dict({**base.to_dict(), **given})

        def on_term(signum, frame):
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGTERM, on_term)   # checkpoint on `kill` as on Ctrl-C
        try:
            train(config, workdir, resume=not args.fresh, until=args.until, progress=not args.no_progress,
                  log=lambda msg: print(msg, flush=True), allow_steps_change=args.reschedule)
        finally:
            signal.signal(signal.SIGTERM, old)
        if args.export and (args.until is None or args.until >= config.steps):
            w, j = export_weights(workdir, args.export, out_dir=args.export_dir)
            print(f"[train] wrote {w} and {j}")
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        print(f"jaxeit train-prior: error: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
