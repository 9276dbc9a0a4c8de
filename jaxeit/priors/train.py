"""Training of the shapes diffusion prior: config, presets, the jitted step, export, CLI.

The loop, checkpoints, time budget, signal handling and progress bar are those
of :mod:`jaxeit.training`, the package's one trainer. The data are streamed,
never stored: the batch, timesteps and noise of step ``s`` are drawn from
``fold_in(run key, s)`` with the run key derived from the seed. So training is
a deterministic function of ``(config, step)``: a run stopped at any step
(``--until``, ``--max-seconds``, SIGINT or SIGTERM) and resumed replays exactly
the batches an uninterrupted run would see and ends in the same state (bit for
bit on the same machine and software).

Checkpoints: ``<workdir>/checkpoint.npz`` in the format of
:class:`jaxeit.training.Checkpointer` (state, config and its hash, history,
wall time, notes), the one before it kept as ``checkpoint.prev.npz``.

A run that turns out too slow can be shortened (or extended) on resume with
``--reschedule --steps N``: the learning-rate schedule follows the new length
from the checkpoint on, and a note in the checkpoint and the exported JSON
records the change.

Presets (:data:`PRESETS`):

* ``shapes64`` — the :class:`TrainConfig` defaults: an improved-DDPM U-Net on
  64×64 images, 32 base channels × (1, 2, 2, 4), 2 residual blocks per level,
  attention at 16×16 and 8×8, 4.64 M parameters; batch 32, AdamW 3e-4 with a
  300-step warm-up and cosine decay over 6000 steps, EMA 0.999.
* ``shapes32`` — the first shipped prior: 32×32, 16 × (1, 2, 4) channels, one
  residual block per level, attention at 8×8, 0.69 M parameters, 2500 steps of
  batch 32, AdamW 8e-4 (61 min on one core).

Command line: ``jaxeit train-prior --help`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import sys
from pathlib import Path

import jax
import numpy as np

from jaxeit import training
from jaxeit.io_utils import atomic_write_bytes, atomic_write_text
from jaxeit.machine import cpu_model
from jaxeit.priors import shapes as shapes_lib
from jaxeit.priors.diffusion import EMA_DECAY, GaussianDiffusion
from jaxeit.priors.unet import UNetConfig, abstract_params, count_params, init_params, make_apply
from jaxeit.training import Checkpointer, OptimizerConfig, TrainState

__all__ = ["TrainConfig", "TrainState", "init_state", "make_train_step", "train", "checkpointer",
           "load_checkpoint", "export_weights", "main", "CHECKPOINT_NAME", "WEIGHTS_DIR", "MAX_WEIGHTS_FILE_BYTES"]

CHECKPOINT_NAME = "checkpoint.npz"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Shipped weights above this size are split into parts of at most this many bytes
#: (``NAME.msgpack.00``, ``.01``, …), so that every file moves easily (16 MiB).
MAX_WEIGHTS_FILE_BYTES = 16 * 2**20

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

    # the improved-DDPM U-Net of Nichol & Dhariwal 2021 at a size a CPU can train:
    # ≥ 2 residual blocks per level, attention at the two lowest resolutions
    image_size: int = 64
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    num_groups: int = 8
    num_timesteps: int = 1000
    lambda_vlb: float = 0.001
    batch_size: int = 32
    steps: int = 6000
    lr: float = 3e-4
    warmup_steps: int = 300
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


#: Named training configs: ``shapes64`` (the defaults) and the first shipped prior ``shapes32``.
PRESETS = {
    "shapes64": TrainConfig(),
    "shapes32": TrainConfig(image_size=32, base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1,
                            attention_resolutions=(8,), steps=2500, lr=8e-4, warmup_steps=200,
                            checkpoint_every=250, log_every=50),
}


def _optimizer_config(config: TrainConfig) -> OptimizerConfig:
    """AdamW, linear warm-up then cosine decay over ``config.steps``, clipping, EMA."""
    return OptimizerConfig(lr=config.lr, warmup_steps=config.warmup_steps, decay_steps=max(config.steps, 2),
                           min_lr_fraction=config.min_lr_fraction, weight_decay=config.weight_decay,
                           decoupled_weight_decay=True, grad_clip=config.grad_clip, ema_decay=config.ema_decay)


@functools.lru_cache(maxsize=8)
def _graphdef(unet_config: UNetConfig):
    graphdef, _ = abstract_params(unet_config)
    return graphdef


def init_state(config: TrainConfig) -> TrainState:
    """Fresh state: parameters from ``fold_in(key(seed), 2)``, zero step, EMA = parameters."""
    _, params = init_params(config.unet_config(), jax.random.fold_in(jax.random.PRNGKey(config.seed), 2))
    return training.init_state(params, _optimizer_config(config))


def _abstract_state(config: TrainConfig) -> TrainState:
    """The state's structure with ``jax.ShapeDtypeStruct`` leaves (nothing is computed)."""
    _, params = abstract_params(config.unet_config())
    return jax.eval_shape(lambda p: training.init_state(p, _optimizer_config(config)), params)


def _run_key(config: TrainConfig) -> jax.Array:
    """The base key of the data and noise streams (the loss of step s gets ``fold_in(·, s)``)."""
    return jax.random.fold_in(jax.random.PRNGKey(config.seed), 3)


@functools.lru_cache(maxsize=8)
def _loss_fn(config: TrainConfig):
    """``loss(params, batch=None, key, extra=None)``: the hybrid loss on a fresh batch drawn from ``key``."""
    apply = make_apply(_graphdef(config.unet_config()))
    diffusion = config.diffusion()

    def loss(params, batch, key, extra):
        x0 = shapes_lib._sample_images(jax.random.fold_in(key, 0), batch=config.batch_size,
                                       size=config.image_size, config=config.shapes)
        return diffusion.training_losses(apply, params, x0, jax.random.fold_in(key, 1))
    return loss


def _state_config(config: TrainConfig) -> TrainConfig:
    """``config`` with the fields that do not affect the state set to 1 (one compiled step for all)."""
    return dataclasses.replace(config, **{k: 1 for k in _RESUMABLE_FIELDS})


def make_train_step(config: TrainConfig):
    """The jitted ``step(state) -> (state, metrics)`` for ``config`` (cached per config).

    The batch, timesteps and noise of step ``s = state.step`` are drawn from
    ``fold_in(run key, s)``; metrics are the scalar means ``loss``, ``mse``, ``vb``,
    ``grad_norm`` and ``lr`` of that step. The input state is donated.
    """
    cfg = _state_config(config)
    step = training.make_train_step(_loss_fn(cfg), _optimizer_config(cfg))
    key = _run_key(cfg)
    return lambda state: step(state, None, key, None)


# -----------------------------------------------------------------------------------
# Checkpoints (the format of jaxeit.training)
# -----------------------------------------------------------------------------------

def checkpointer(workdir, config: TrainConfig) -> Checkpointer:
    """The run's :class:`~jaxeit.training.Checkpointer`: ``<workdir>/checkpoint.npz``."""
    return Checkpointer(Path(workdir) / CHECKPOINT_NAME, config.to_dict(), mutable=_RESUMABLE_FIELDS)


def _saved_config(workdir) -> TrainConfig | None:
    """The config recorded in ``<workdir>/checkpoint.npz`` (``None`` if there is no checkpoint)."""
    saved = checkpointer(workdir, TrainConfig()).saved_config()
    return None if saved is None else TrainConfig.from_dict(saved)


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
        A :class:`jaxeit.training.Checkpoint` whose ``config`` is the
        :class:`TrainConfig`, or ``None`` if there is no checkpoint.

    Raises:
        ValueError: if the checkpoint is unreadable or does not match the config.
    """
    saved = _saved_config(workdir)
    if saved is None:
        return None
    config = saved if config is None else config
    ck = checkpointer(workdir, config).load(_abstract_state(config),
                                            allow_changes=("steps",) if allow_steps_change else ())
    return ck._replace(config=config)


# -----------------------------------------------------------------------------------
# Training loop
# -----------------------------------------------------------------------------------

def train(config: TrainConfig, workdir, *, resume: bool = True, until: int | None = None,
          max_seconds: float | None = None, progress: bool = True, log=print,
          allow_steps_change: bool = False) -> training.LoopResult:
    """Train (or resume) a prior in ``workdir`` until ``config.steps`` (or ``until``).

    Args:
        config: the run's config.
        workdir: folder for ``checkpoint.npz`` (and ``checkpoint.prev.npz``) and ``config.json``.
        resume: continue from the checkpoint in ``workdir`` if there is one (its config
            must match, apart from ``checkpoint_every`` / ``log_every``); ``False``
            starts afresh and overwrites it.
        until: stop after this many steps in total (e.g. to split a run); the
            schedule still follows ``config.steps``.
        max_seconds: a wall-clock budget for this call; the run stops at the first step
            boundary past it, with a checkpoint (chain such runs to train longer).
        progress: show a tqdm bar (loss and ETA).
        log: function for one-line log messages (``None`` for silence).
        allow_steps_change: resume even if ``config.steps`` differs from the checkpoint's
            (see :func:`load_checkpoint`).

    Returns:
        The :class:`jaxeit.training.LoopResult` (state, history, wall time, stop reason).

    Raises:
        jaxeit.training.TrainingInterrupted: on SIGINT/SIGTERM, after saving the last
            completed step.
        ValueError: on a checkpoint that does not match ``config``.
    """
    log = log or (lambda *a, **k: None)
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} is a file, not a folder; pass a folder for the checkpoints")
    workdir.mkdir(parents=True, exist_ok=True)
    end = config.steps if until is None else min(int(until), config.steps)
    loaded = load_checkpoint(workdir, config, allow_steps_change=allow_steps_change) if resume else None
    if loaded is None:
        state, history, wall, notes, pending = init_state(config), [], 0.0, [], None
        log(f"[train] new run in {workdir}: {count_params(state.params):,} parameters, "
            f"{config.image_size}x{config.image_size}, batch {config.batch_size}, {config.steps} steps")
    else:
        state, history, wall, notes, pending = (loaded.state, loaded.history, loaded.wall_time, loaded.notes,
                                                loaded.pending)
        log(f"[train] resumed {workdir} at step {int(state.step)} ({wall / 60:.1f} min so far)"
            + (f"; {notes[-1]}" if notes and notes[-1].endswith(f"at step {int(state.step)}") else ""))
    atomic_write_text(workdir / "config.json", json.dumps(config.to_dict(), indent=1))
    step = make_train_step(config)
    return training.train_loop(lambda st, s: step(st), state, end=end, total=config.steps, checkpointer=checkpointer(workdir, config),
                               history=history, wall_time=wall, notes=notes, pending=pending,
                               log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                               max_seconds=max_seconds, progress=progress, desc="train-prior", log=log)


# -----------------------------------------------------------------------------------
# Export of the shipped weights
# -----------------------------------------------------------------------------------

def export_weights(workdir, name: str, *, out_dir=None, extra: dict | None = None) -> tuple[Path, Path]:
    """Write the EMA weights of the run in ``workdir`` as ``<out_dir>/<name>.msgpack`` + ``.json``.

    The msgpack blob is ``flax.serialization.msgpack_serialize`` of the EMA
    parameters (float32) as a pure nested dict; above :data:`MAX_WEIGHTS_FILE_BYTES`
    it is split into ``<name>.msgpack.00``, ``.01``, … (concatenated on load) and
    ``<name>.msgpack`` is not written. The JSON holds the provenance (config, steps,
    images seen, seed, losses, hardware, wall time, data description).
    ``out_dir`` defaults to the package's ``jaxeit/priors/weights``. Returns the
    path of the first weights file and of the JSON.
    """
    from flax import nnx, serialization

    loaded = load_checkpoint(workdir)
    if loaded is None:
        raise FileNotFoundError(f"no {CHECKPOINT_NAME} in {workdir}; train first")
    state, config, history, wall, notes = loaded.state, loaded.config, loaded.history, loaded.wall_time, loaded.notes
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    pure = nnx.to_pure_dict(state.ema)
    pure = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), pure)
    blob = serialization.msgpack_serialize(pure)
    rows = [r for r in history if "loss" in r]
    last = rows[-min(len(rows), 10):]
    import importlib.metadata as md

    mean = lambda k: float(np.mean([r[k] for r in last])) if last else None  # noqa: E731
    provenance = {
        "name": name,
        "format": "flax.serialization msgpack of nnx.to_pure_dict(EMA params), float32",
        "train_config": config.to_dict(),
        "unet_config": config.unet_config().to_dict(),
        "n_params": count_params(state.ema),
        "steps": int(state.step),
        "images_seen": int(state.step) * config.batch_size,
        "seed": config.seed,
        "final_losses": {
            "note": f"mean over the last {len(last) * config.log_every} training steps (online, not EMA)",
            "loss": mean("loss"), "mse": mean("mse"), "vb_bits_per_pixel": mean("vb"),
        },
        "loss_history": {"columns": ["step", "loss", "mse", "vb", "grad_norm"],
                         "rows": [[round(float(r[c]), 6) for c in ("step", "loss", "mse", "vb", "grad_norm")]
                                  for r in rows[:: max(1, len(rows) // 40)]]},
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
    for old in [wpath, *out_dir.glob(f"{name}.msgpack.[0-9][0-9]")]:
        old.unlink(missing_ok=True)
    if len(blob) <= MAX_WEIGHTS_FILE_BYTES:
        atomic_write_bytes(wpath, blob)
    else:
        parts = [blob[i:i + MAX_WEIGHTS_FILE_BYTES] for i in range(0, len(blob), MAX_WEIGHTS_FILE_BYTES)]
        provenance["parts"] = [{"file": f"{name}.msgpack.{i:02d}", "bytes": len(p)} for i, p in enumerate(parts)]
        for i, part in enumerate(parts):
            atomic_write_bytes(out_dir / f"{name}.msgpack.{i:02d}", part)
        wpath = out_dir / f"{name}.msgpack.00"
    atomic_write_text(jpath, json.dumps(provenance, indent=1))
    return wpath, jpath


# -----------------------------------------------------------------------------------
# Command line
# -----------------------------------------------------------------------------------

_EPILOG = """\
examples (`python -m jaxeit.priors.train` is the same command):
  # the default prior (shapes64), in runs of at most 2 hours each, in the background:
  nohup jaxeit train-prior --workdir runs/shapes64 --export shapes64 --max-seconds 7200 --no-progress \\
      > train.log 2>&1 &
  # the first shipped prior (about 75 min on one core of a 2-core Xeon):
  jaxeit train-prior --preset shapes32 --workdir runs/shapes32 --export shapes32
  # resume after a kill, Ctrl-C or SIGTERM (the last completed step is saved):
  jaxeit train-prior --workdir runs/shapes64 --resume
  # shorten (or extend) a run that is too slow: resume with another --steps
  jaxeit train-prior --workdir runs/shapes32 --export shapes32 --steps 2500 --reschedule
  # a smoke run (well under a minute on a CPU):
  jaxeit train-prior --workdir /tmp/tiny --steps 4 --warmup-steps 1 --image-size 8 --base-channels 8 \\
      --channel-mult 1 --num-res-blocks 1 --num-heads 2 --num-groups 4 --batch-size 2 --no-progress
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
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a named config (default shapes64); "
                   "the options below override it")
    g = p.add_argument_group("model and data (defaults: the shapes64 preset)")
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
    g.add_argument("--max-seconds", type=float,
                   help="wall-clock budget of this run; stops at a step boundary with a checkpoint (chain runs)")
    g.add_argument("--resume", action="store_true",
                   help="require a checkpoint in --workdir and continue from it (the default resumes if one exists)")
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
    """``jaxeit train-prior``: train / resume / export the shapes prior. Returns the exit code.

    Exit codes: 0 done (or the time budget reached, with a checkpoint), 2 bad input
    (one line on stderr), 130 / 143 stopped by SIGINT / SIGTERM after saving the last
    completed step.
    """
    args = _parser().parse_args(argv)
    workdir = Path(args.workdir)
    given = {k: getattr(args, k) for k in _ARG_FIELDS if getattr(args, k) is not None}
    try:
        if workdir.exists() and not workdir.is_dir():
            raise ValueError(f"--workdir {workdir} is a file, not a folder; pass a folder for the checkpoints")
        if args.export_only:
            if not args.export:
                raise ValueError("--export-only needs --export NAME")
            w, j = export_weights(workdir, args.export, out_dir=args.export_dir)
            print(f"[train] wrote {w} and {j}")
            return 0
        if args.resume and args.fresh:
            raise ValueError("--resume and --fresh exclude each other")
        saved = None if args.fresh else _saved_config(workdir)
        if args.resume and saved is None:
            raise ValueError(f"--resume: no {CHECKPOINT_NAME} in {workdir}; drop --resume to start a new run")
        base = saved if saved is not None else PRESETS[args.preset or "shapes64"]
        config = TrainConfig.from_dict({**base.to_dict(), **given})
        result = train(config, workdir, resume=not args.fresh, until=args.until, max_seconds=args.max_seconds,
                       progress=not args.no_progress, log=lambda msg: print(msg, flush=True),
                       allow_steps_change=args.reschedule)
        done = int(result.state.step) >= config.steps
        print(f"[train] stopped: {result.stop_reason.value} at step {int(result.state.step)}/{config.steps} "
              f"({result.wall_time / 60:.1f} min in all)", flush=True)
        if args.export and (done or args.until is not None):
            w, j = export_weights(workdir, args.export, out_dir=args.export_dir)
            print(f"[train] wrote {w} and {j}")
    except training.TrainingInterrupted as exc:
        print(f"jaxeit train-prior: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        print(f"jaxeit train-prior: error: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
