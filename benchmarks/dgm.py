"""DGM study: GN, CVAE, CNF, CSD* and DPS on the paper's Tests 1–3 → benchmarks/results/dgm.md.

Reproduces the layout of Tables 1–6 of the DGM comparison paper (Wang, Xu &
Zhou; §4.3) with the paper's numbers printed beside ours:

* Table 1 / 2 — Test 1: trained and tested on 2 / 4 anomalies at 40 dB;
* Table 3 / 4 — Test 2: trained and tested on 2 / 4 anomalies at 25 dB
  (the paper's CSD* rows use its 40 dB model);
* Table 5 / 6 — Test 3: trained on 4 anomalies at 40 dB, tested on 2
  anomalies at 40 / 25 dB.

Every table also has the "constant background" floor row and the Pearson
correlation r of σ̂ − σ_bg with σ − σ_bg inside the domain (METHODS.md).

Methods are registered in :data:`METHODS`: a builder ``builder(ctx) ->
method`` gets a :class:`Context` (which training set, folders, options) and
returns ``method(batch) -> images`` mapping a dict of test-sample arrays
(``image``, ``gn_image``, ``voltages``, ``sigma``, ``index``, …; see
:mod:`jaxeit.data.store`) to (B, H, W) images, or to a dict with ``"image"``
and optionally ``"std"`` (uncertainty map) and ``"samples"`` (S, B, H, W)
(then a "per sample" row — metrics averaged over single samples, the DGM
code's convention — is added). Add a method with ``@register("name")``.

Sizes. The paper trains at 128 × 128 on 21,600 pairs for hundreds of epochs
on a GPU; here (2 shared CPU cores) the default run is scaled down: 64 × 64,
4,000 training / 200 validation / 300 test samples per setting, a few epochs
(see the defaults of the ``--*-epochs`` flags and the run record in the
report). ``--full`` restores the paper's sizes and epochs; ``--quick`` is a
smoke test (32 × 32, a few hundred samples, one epoch; writes dgm_quick.md).

    python benchmarks/dgm.py                 # the scaled run (hours on 1 CPU core)
    python benchmarks/dgm.py --quick         # minutes
    python benchmarks/dgm.py --full          # the paper's sizes (GPU recommended)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxeit  # noqa: E402,F401  (float64 for the FEM)
from jaxeit import metrics  # noqa: E402
from jaxeit.data import PAPER_SPLITS, SimulationConfig, load_geometry, load_split, read_metadata, simulate  # noqa: E402
from jaxeit.dgm.training import checkpoint_summary  # noqa: E402
from jaxeit.dgm import (CNF, CVAE, CNFConfig, CVAEConfig, FitConfig, ScoreConfig, ScoreModel, train_cnf,  # noqa: E402
                        train_cvae, train_score)

from _common import RESULTS, machine_header  # noqa: E402

# -----------------------------------------------------------------------------------
# The paper's tables (§4.3; mean ± std; read from the paper's text)
# -----------------------------------------------------------------------------------

METRICS = ("MSE", "PSNR", "SSIM", "RE", "AE", "DR")

#: PAPER[table][method] = ((mean, std) for MSE, PSNR, SSIM, RE, AE, DR)
PAPER = {
    1: {"GN": ((0.0032, 0.0004), (28.850, 0.675), (0.874, 0.011), (0.034, 0.003), (0.026, 0.002), (1.045, 0.066)),
        "CVAE": ((0.0014, 0.0005), (32.804, 1.631), (0.969, 0.008), (0.009, 0.002), (0.007, 0.001), (1.058, 0.022)),
        "CNF": ((0.0011, 0.0005), (33.789, 2.715), (0.969, 0.007), (0.008, 0.001), (0.006, 0.001), (0.920, 0.020)),
        "CSD*": ((0.0015, 0.0006), (32.673, 4.670), (0.976, 0.009), (0.006, 0.002), (0.005, 0.001), (1.001, 0.002))},
    2: {"GN": ((0.0140, 0.006), (26.317, 1.034), (0.794, 0.047), (0.061, 0.015), (0.078, 0.019), (1.199, 0.107)),
        "CVAE": ((0.0121, 0.004), (26.282, 1.507), (0.882, 0.019), (0.033, 0.006), (0.042, 0.008), (1.110, 0.068)),
        "CNF": ((0.0040, 0.003), (30.981, 2.764), (0.962, 0.021), (0.014, 0.006), (0.011, 0.005), (0.752, 0.044)),
        "CSD*": ((0.0070, 0.004), (28.217, 2.499), (0.952, 0.025), (0.014, 0.007), (0.011, 0.006), (1.000, 0.004))},
    3: {"GN": ((0.0067, 0.0009), (24.271, 0.992), (0.804, 0.018), (0.059, 0.004), (0.046, 0.003), (0.891, 0.068)),
        "CVAE": ((0.0035, 0.0015), (28.996, 1.812), (0.945, 0.014), (0.014, 0.004), (0.011, 0.003), (1.062, 0.025)),
        "CNF": ((0.0063, 0.0014), (25.652, 2.807), (0.932, 0.019), (0.018, 0.006), (0.014, 0.005), (0.933, 0.131)),
        "CSD*": ((0.0060, 0.0025), (25.453, 2.807), (0.932, 0.019), (0.018, 0.006), (0.014, 0.005), (0.933, 0.132))},
    4: {"GN": ((0.0164, 0.003), (24.752, 1.018), (0.747, 0.031), (0.092, 0.012), (0.072, 0.009), (1.108, 0.129)),
        "CVAE": ((0.0134, 0.005), (25.838, 1.416), (0.868, 0.023), (0.044, 0.010), (0.035, 0.007), (1.104, 0.031)),
        "CNF": ((0.0093, 0.004), (26.839, 1.760), (0.922, 0.019), (0.026, 0.007), (0.020, 0.006), (0.631, 0.065)),
        "CSD*": ((0.0100, 0.004), (26.347, 1.768), (0.928, 0.022), (0.020, 0.009), (0.016, 0.007), (0.999, 0.002))},
    5: {"CVAE": ((0.0061, 0.0028), (27.965, 1.209), (0.919, 0.013), (0.027, 0.007), (0.021, 0.005), (1.262, 0.192)),
        "CNF": ((0.0008, 0.0004), (35.031, 2.691), (0.973, 0.006), (0.008, 0.001), (0.006, 0.001), (0.805, 0.041)),
        "CSD*": ((0.0015, 0.0009), (34.082, 7.267), (0.966, 0.023), (0.008, 0.004), (0.006, 0.003), (1.003, 0.005))},
    6: {"CVAE": ((0.0149, 0.006), (24.459, 1.628), (0.870, 0.030), (0.048, 0.014), (0.038, 0.011), (1.313, 0.198)),
        "CNF": ((0.0074, 0.0023), (25.067, 1.388), (0.903, 0.018), (0.024, 0.005), (0.019, 0.004), (0.596, 0.094)),
        "CSD*": ((0.0064, 0.0024), (24.747, 2.809), (0.918, 0.024), (0.021, 0.007), (0.016, 0.005), (0.903, 0.153))},
}

#: (table, title, training set, test set)
TABLES = [
    (1, "Test 1 — 2 anomalies, 40 dB", "c2_40db", "c2_40db"),
    (2, "Test 1 — 4 anomalies, 40 dB", "c4_40db", "c4_40db"),
    (3, "Test 2 — 2 anomalies, 25 dB", "c2_25db", "c2_25db"),
    (4, "Test 2 — 4 anomalies, 25 dB", "c4_25db", "c4_25db"),
    (5, "Test 3 — trained on 4 anomalies at 40 dB, tested on 2 anomalies at 40 dB", "c4_40db", "c2_40db"),
    (6, "Test 3 — trained on 4 anomalies at 40 dB, tested on 2 anomalies at 25 dB", "c4_40db", "c2_25db"),
]

SETTINGS = {"c2_40db": (2, 40.0), "c4_40db": (4, 40.0), "c2_25db": (2, 25.0), "c4_25db": (4, 25.0)}

#: seed offset of the --pretrained validation and test sets (the shipped models trained on seed = circles)
PRETRAINED_SEED_OFFSET = 1000


# -----------------------------------------------------------------------------------
# Run configuration
# -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Context:
    """What a method builder needs.

    Attributes:
        train_set: name of the training setting (a key of :data:`SETTINGS`).
        test_set: name of the test setting.
        data: ``{setting: data set folder}``.
        workdir: root folder for models (``<workdir>/models/<method>_<train_set>``).
        args: the parsed command line.
        mask: (H, W) bool domain mask of the images.
        background: σ_bg.
        cache: shared dict for trained models across tables.
    """

    train_set: str
    test_set: str
    data: dict
    workdir: Path
    args: argparse.Namespace
    mask: np.ndarray
    background: float
    cache: dict


Method = Callable[[dict], object]
METHODS: dict[str, Callable[[Context], Method]] = {}


def register(name: str):
    """Decorator: register ``builder(ctx) -> method`` under ``name`` (the table's row label)."""
    def deco(builder):
        METHODS[name] = builder
        return builder
    return deco


@register("Background (floor)")
def _background(ctx: Context) -> Method:
    exterior = 0.0

    def method(batch):
        img = np.where(ctx.mask, ctx.background, exterior).astype(np.float32)
        return np.broadcast_to(img, batch["image"].shape).copy()
    return method


@register("GN")
def _gn(ctx: Context) -> Method:
    return lambda batch: batch["gn_image"]


def _budget(args, share: float = 1.0):
    """Per-stage wall-time budget (s) from ``--train-seconds`` (None: train all epochs)."""
    return None if args.train_seconds is None else args.train_seconds * share


def cvae_config(args) -> CVAEConfig:
    """The DGM code's CVAE. Its VAE loss sums the squared error over the pixels, so at n px the data
    term is (n/128)² of the paper's and the KL term would dominate (posterior collapse, blurry
    decoder): the KL weight is scaled by (n/128)² to keep the paper's balance (1 at 128 px)."""
    b = args.batch_size or 8
    return CVAEConfig(image_size=args.size, kl_weight=(args.size / 128) ** 2,
                      vae=FitConfig(epochs=args.vae_epochs, batch_size=b, lr=7e-4, seed=0, log_every=100,
                                    max_seconds=_budget(args, 0.5)),
                      mlp=FitConfig(epochs=args.mlp_epochs, batch_size=b, lr=3e-4, seed=1, log_every=500,
                                    max_seconds=_budget(args, 0.5)))


def cnf_config(args) -> CNFConfig:
    return CNFConfig(image_size=args.size,
                     fit=FitConfig(epochs=args.cnf_epochs, batch_size=args.batch_size or 8, lr=1e-3,
                                   weight_decay=1e-5, grad_clip=1.0, seed=0, log_every=100,
                                   max_seconds=_budget(args)))


def _train_data(ctx: Context, fields):
    key = ("train", ctx.train_set, fields)
    if key not in ctx.cache:
        ctx.cache[key] = load_split(ctx.data[ctx.train_set], "train", fields=fields)
    return ctx.cache[key]


def _trained(path: Path, cls, config):
    """The finished model saved at ``path`` if it was trained with ``config``, else None."""
    if path.exists():
        model = cls.load(path)
        if model.config == config:
            return model
    return None


def operators(ctx: Context):
    """The :class:`jaxeit.data.Operators` of the study's physics (the same for every setting: the circles and
    the SNR change the phantoms and the noise, not the mesh, protocol or GN)."""
    if "operators" not in ctx.cache:
        from jaxeit.data import Operators
        from jaxeit.data.simulate import make_mesh

        config = data_config(ctx.args, ctx.train_set)
        ctx.cache["operators"] = Operators.build(config, make_mesh(config)[0])
    return ctx.cache["operators"]


def shipped(ctx: Context, name: str):
    """The shipped model ``name`` (:func:`jaxeit.dgm.load_pretrained`), refused when its geometry or image
    size differs from the study's data."""
    key = ("shipped", name)
    if key not in ctx.cache:
        from jaxeit.dgm import load_pretrained

        pm = load_pretrained(name)
        pm.check_geometry(operators(ctx).model)
        if pm.image_size != ctx.args.size:
            raise ValueError(f"shipped model {name!r} is for {pm.image_size} px images, the study's are "
                             f"{ctx.args.size} px")
        ctx.cache[key] = pm
    return ctx.cache[key]


def lm_images(ctx: Context, voltages, alpha: float) -> np.ndarray:
    """(B, M) voltages → (B, H, W) iterative LM images (:meth:`jaxeit.data.Operators.lm_image`), 0 outside the
    disk; cached on disk under ``<workdir>/lm`` by the voltages' digest (they cost ~0.2 s per sample)."""
    import hashlib

    from jaxeit.io_utils import atomic_path

    v = np.ascontiguousarray(voltages, np.float64)
    digest = hashlib.sha256(v.tobytes()).hexdigest()[:16]
    path = ctx.workdir / "lm" / f"alpha{alpha:g}_it{ctx.args.lm_iterations}_{digest}.npy"
    if path.exists():
        return np.load(path)
    images = operators(ctx).lm_image(v, alpha=alpha, max_iter=ctx.args.lm_iterations,
                                     progress=not ctx.args.no_progress)
    images = np.where(ctx.mask, images, 0.0).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images)
    return images


def lm_alpha(ctx: Context) -> float:
    """The LM weight with the best mean SSIM on the first ``--lm-val`` validation samples of the *test* setting
    (from ``--lm-alphas``; chosen once per setting, never on test samples; the rows go to the report). The LM
    learns nothing, so it is tuned to the noise level of the data it is given, as a user would."""
    key = ("lm_alpha", ctx.test_set)
    if key not in ctx.cache:
        val = load_split(ctx.data[ctx.test_set], "val", fields=("image", "voltages"), limit=ctx.args.lm_val)
        rows = []
        for alpha in [float(a) for a in ctx.args.lm_alphas.split(",")]:
            s = score(lm_images(ctx, val["voltages"], alpha), val["image"], ctx.mask, ctx.background)
            rows.append({"train": ctx.test_set, "alpha": alpha, "n": len(val["image"]),
                         **{k: (float(np.mean(s[k])), float(np.std(s[k]))) for k in ("SSIM", "MSE")}})
            print(f"    LM ({ctx.test_set}) alpha = {alpha:g}: validation SSIM {rows[-1]['SSIM'][0]:.3f}", flush=True)
        ctx.cache[key] = max(rows, key=lambda r: r["SSIM"][0])["alpha"]
        ctx.cache.setdefault("lm_sweep", []).extend(rows)
    return ctx.cache[key]


@register("GN (LM)")
def _lm(ctx: Context) -> Method:
    """The paper's GN: iterative Levenberg–Marquardt (eqs. 5–9), its weight chosen on validation samples."""
    alpha = lm_alpha(ctx)
    return lambda batch: lm_images(ctx, batch["voltages"], alpha)


def shipped_score(ctx: Context):
    """The shipped score model of the training set's anomaly count (its 40 dB model serves both noise levels)."""
    return shipped(ctx, f"score_c{SETTINGS[ctx.train_set][0]}_40db")


def csd_input(ctx: Context, batch) -> np.ndarray:
    """CSD*'s (and CSD*+DPS's) input images of ``batch``: the one-step GN or the iterative LM of the "GN (LM)"
    row (``--csd-input``; its weight tuned to the data's noise level, as the paper's GN input)."""
    if ctx.args.csd_input != "lm":
        return batch["gn_image"]
    return lm_images(ctx, batch["voltages"], lm_alpha(ctx))


@register("CVAE")
def _cvae(ctx: Context) -> Method:
    key = ("cvae", ctx.train_set)
    if ctx.args.pretrained:
        ctx.cache[key] = shipped(ctx, f"cvae_{ctx.train_set}").model
    if key not in ctx.cache:
        wd = ctx.workdir / "models" / f"cvae_{ctx.train_set}"
        config = cvae_config(ctx.args)
        ctx.cache[key] = _trained(wd / "cvae.npz", CVAE, config) or train_cvae(
            config, _train_data(ctx, ("image", "voltages")), workdir=wd, data_tag=str(ctx.data[ctx.train_set]),
            progress=not ctx.args.no_progress)
    model = ctx.cache[key]
    return lambda batch: np.where(ctx.mask, model.reconstruct(batch["voltages"]).image, 0.0).astype(np.float32)


@register("CNF")
def _cnf(ctx: Context) -> Method:
    key = ("cnf", ctx.train_set)
    if ctx.args.pretrained:
        ctx.cache[key] = shipped(ctx, f"cnf_{ctx.train_set}").model
    if key not in ctx.cache:
        wd = ctx.workdir / "models" / f"cnf_{ctx.train_set}"
        config = cnf_config(ctx.args)
        ctx.cache[key] = _trained(wd / "cnf.npz", CNF, config) or train_cnf(
            config, _train_data(ctx, ("image", "gn_image")), workdir=wd, data_tag=str(ctx.data[ctx.train_set]),
            progress=not ctx.args.no_progress)
    model = ctx.cache[key]

    def method(batch):
        xs = model.sample(batch["gn_image"], jax.random.PRNGKey(1234))
        xs = np.where(ctx.mask, xs, 0.0).astype(np.float32)
        return {"image": xs.mean(0), "std": xs.std(0), "samples": xs}
    return method


def score_config(args) -> ScoreConfig:
    """The paper code's VE score model at 128 px; scaled-down U-Net and schedule below that."""
    if args.size >= 128:
        return ScoreConfig(image_size=args.size, fit=dataclasses.replace(
            ScoreConfig.fit, epochs=args.score_epochs, max_seconds=_budget(args),
            batch_size=args.batch_size or ScoreConfig.fit.batch_size))
    return ScoreConfig(image_size=args.size, base_channels=32, channel_mult=(1, 2, 2) if args.size <= 32 else
                       (1, 2, 2, 2), num_res_blocks=1, warmup=200,
                       fit=FitConfig(epochs=args.score_epochs, batch_size=max(32, args.batch_size or 32), lr=1e-3,
                                     grad_clip=1.0, seed=0, checkpoint_every=500, log_every=100,
                                     max_seconds=_budget(args)))


def score_model(ctx: Context) -> ScoreModel:
    """The score model of the training set's images. It is a prior on images alone, and the 40 and
    25 dB sets of one anomaly count share their phantoms (seed = number of circles), so one model per
    anomaly count serves both noise levels (as the paper's CSD* rows of Test 2 use its 40 dB model)."""
    n_circles = SETTINGS[ctx.train_set][0]
    source = next(s for s in ctx.data if SETTINGS[s][0] == n_circles)   # the first set with these phantoms
    key = ("score", n_circles)
    if ctx.args.pretrained:   # the shipped 40 dB model (the same images as the 25 dB set)
        ctx.cache[key] = shipped_score(ctx).model
    if key not in ctx.cache:
        wd = ctx.workdir / "models" / f"score_c{n_circles}"
        config = score_config(ctx.args)
        images = ctx.cache.get(("train", source, ("image",))) or load_split(ctx.data[source], "train",
                                                                         fields=("image",))
        ctx.cache[key] = _trained(wd / "score.npz", ScoreModel, config) or train_score(
            images["image"], config, wd, key=jax.random.PRNGKey(0),
            data_tag=f"{n_circles} circles: {ctx.data[source]}", progress=not ctx.args.no_progress)
    return ctx.cache[key]


@register("CSD*")
def _csd_star(ctx: Context) -> Method:
    """Score model trained on the training images; GN image diffused to t0 and denoised (§3.3.2)."""
    model = score_model(ctx)

    t0 = csd_t0(ctx)

    def method(batch):
        res = model.reconstruct(csd_input(ctx, batch), jax.random.PRNGKey(4321), t0=t0,
                                n_samples=ctx.args.csd_samples, n_steps=ctx.args.csd_steps)
        mean, std = res.image, res.extras["std"]
        return {"image": np.where(ctx.mask, mean, 0.0).astype(np.float32), "std": np.where(ctx.mask, std, 0.0)}
    method.limit = ctx.args.csd_n_test
    return method


def csd_t0(ctx: Context) -> float:
    """CSD*'s start time: ``--csd-t0`` when given; otherwise the ``--csd-sweep`` value with the best mean SSIM
    on the first ``--csd-sweep-n`` validation samples of the training set (chosen once per training set,
    never on test samples; the rows go to the report)."""
    args = ctx.args
    if args.pretrained and args.csd_t0 is None and "t0" in shipped_score(ctx).card:
        return float(shipped_score(ctx).card["t0"])   # chosen on validation when the model was shipped
    if args.csd_t0 is not None or not args.csd_sweep:
        return 0.55 if args.csd_t0 is None else args.csd_t0
    key = ("csd_t0", ctx.train_set)
    if key not in ctx.cache:
        model = score_model(ctx)
        val = load_split(ctx.data[ctx.train_set], "val", fields=("image", "gn_image", "voltages"),
                         limit=args.csd_sweep_n)
        rows = []
        for t0 in [float(x) for x in args.csd_sweep.split(",")]:
            res = model.reconstruct(csd_input(ctx, val), jax.random.PRNGKey(99), t0=t0, n_samples=args.csd_samples,
                                    n_steps=args.csd_steps)
            s = score(np.where(ctx.mask, res.image, 0.0), val["image"], ctx.mask, ctx.background)
            rows.append({"train": ctx.train_set, "t0": t0, "n": len(val["image"]),
                         **{k: (float(np.mean(s[k])), float(np.std(s[k]))) for k in ("SSIM", "MSE")}})
            print(f"    CSD* ({ctx.train_set}) t0 = {t0:g}: validation SSIM {rows[-1]['SSIM'][0]:.3f}", flush=True)
        ctx.cache[key] = max(rows, key=lambda r: r["SSIM"][0])["t0"]
        ctx.cache.setdefault("csd_sweep", []).extend(rows)
    return ctx.cache[key]


def dps_measurement(ctx: Context, model: ScoreModel):
    """``F(x) -> (208,)`` of one normalised image x (n, n) through the study's forward model, scaled by
    1/‖v_bg‖ (:func:`jaxeit.dgm.image_measurement`, floored at 1e-3 σ_bg). Returns ``(F, v_scale)``."""
    from jaxeit.dgm import image_measurement

    return image_measurement(model, operators(ctx), floor=1e-3 * ctx.background)


def _posterior_sampler(ctx: Context, start_from_gn: bool) -> Method:
    """DPS with the exact forward model, from noise at T (``start_from_gn=False``) or from the GN
    image diffused to ``--csd-t0`` (CSD* with the likelihood step). ζ is chosen on validation
    samples of the training set, separately for each variant."""
    from jaxeit.dgm.sampling import dps_sample

    model = score_model(ctx)
    key = ("dps", ctx.train_set, start_from_gn)
    if key not in ctx.cache:
        measure, v_scale = dps_measurement(ctx, model)
        n, S = ctx.args.size, ctx.args.dps_samples
        t0 = csd_t0(ctx) if start_from_gn else None
        steps = ctx.args.csd_steps if start_from_gn else ctx.args.dps_steps
        # x̂₀ and the samples are clipped to the range of the training images (in model units)
        seen = load_split(ctx.data[ctx.train_set], "val" if ctx.args.pretrained else "train", fields=("image",),
                          limit=1024)["image"]
        data_range = tuple(float(model.normalize(np.float32(f(seen)))) for f in (np.min, np.max))

        @jax.jit
        def run(v, gn, keys, zeta):
            def one(vv, gg, kk):
                return dps_sample(model.score_fn(), model.sde, measure, vv / v_scale, kk, zeta=zeta, shape=(n, n),
                                  n_samples=S, n_steps=steps, data_range=data_range,
                                  x_start=gg if start_from_gn else None, start_time=t0)
            return jax.vmap(one)(v, gn, keys)

        def images(batch, zeta, seed):
            v = jnp.asarray(batch["voltages"], jnp.float64)
            gn = model.normalize(jnp.asarray(csd_input(ctx, batch), jnp.float32))
            keys = jax.random.split(jax.random.PRNGKey(seed), len(v))
            outs = [run(v[i:i + 16], gn[i:i + 16], keys[i:i + 16], jnp.asarray(zeta, jnp.float32))
                    for i in range(0, len(v), 16)]
            return np.asarray(model.denormalize(jnp.concatenate(outs)), np.float32)   # (B, S, n, n)

        val = load_split(ctx.data[ctx.train_set], "val", fields=("image", "voltages", "gn_image"),
                         limit=ctx.args.dps_val)
        best = None
        for zeta in [float(z) for z in ctx.args.dps_zetas.split(",")]:
            x = images(val, zeta, 99).mean(1)
            ssim = float(np.mean(score(np.where(ctx.mask, x, 0.0), val["image"], ctx.mask, ctx.background)["SSIM"]))
            print(f"    {'CSD*+DPS' if start_from_gn else 'DPS'} zeta {zeta:g}: validation SSIM {ssim:.3f}",
                  flush=True)
            if best is None or ssim > best[1]:
                best = (zeta, ssim)
        ctx.cache[key] = (images, best[0])
        ctx.cache.setdefault("dps_zeta", {})[(ctx.train_set, "CSD*+DPS" if start_from_gn else "DPS")] = best
    images, zeta = ctx.cache[key]

    def method(batch):
        xs = np.where(ctx.mask, images(batch, zeta, 4321), 0.0).astype(np.float32)
        return {"image": xs.mean(1), "std": xs.std(1)}
    method.limit = ctx.args.dps_n_test
    return method


@register("DPS")
def _dps(ctx: Context) -> Method:
    """Diffusion posterior sampling with the exact forward model (beyond the paper): the unconditional
    score model of CSD*, no paired data, chains from noise at T."""
    return _posterior_sampler(ctx, start_from_gn=False)


@register("CSD*+DPS")
def _csd_dps(ctx: Context) -> Method:
    """CSD* with the DPS likelihood step (beyond the paper): chains start from the GN image diffused to
    ``--csd-t0`` like CSD*, and every reverse step also descends ‖v − F(x̂₀)‖ through the exact forward
    model, so the refinement stays consistent with the measured voltages."""
    return _posterior_sampler(ctx, start_from_gn=True)


# -----------------------------------------------------------------------------------
# Metrics
# -----------------------------------------------------------------------------------

def pearson(x, ref, mask, background):
    """(B,) Pearson r of x − σ_bg with ref − σ_bg over the mask (0 where x is constant)."""
    m = np.asarray(mask, bool)
    a = np.asarray(x, np.float64)[..., m] - background
    b = np.asarray(ref, np.float64)[..., m] - background
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1.0), 0.0)


def score(images, truth, mask, background) -> dict[str, np.ndarray]:
    """Per-sample metrics: the paper's six in its convention (:func:`jaxeit.metrics.paper_metrics`: whole
    square, 0 outside the disk, scikit-image's SSIM window), then SSIM and RE inside the domain
    (Gaussian window) and the Pearson r of the contrasts."""
    x, ref, m = jnp.asarray(images, jnp.float64), jnp.asarray(truth, jnp.float64), jnp.asarray(mask)
    out = {k: np.asarray(v) for k, v in metrics.paper_metrics(x, ref, m).items()}
    out["SSIM◯"] = np.asarray(metrics.ssim(x, ref, mask=m))
    out["RE◯"] = np.asarray(metrics.relative_error(x, ref, mask=m))
    out["r"] = pearson(images, truth, mask, background)
    return out


def coverage(mean, std, truth, mask) -> np.ndarray:
    """(B,) fraction of the domain's true pixels within ±2 posterior std of the mean (0.954 for a calibrated
    Gaussian posterior)."""
    inside = np.asarray(mask, bool)
    ok = np.abs(np.asarray(truth) - np.asarray(mean)) <= 2 * np.asarray(std)
    return ok[..., inside].mean(-1)


EXTRA_COLUMNS = ("SSIM◯", "RE◯", "r", "cover±2σ")
COLUMNS = METRICS + EXTRA_COLUMNS
_FMT = {"MSE": "{:.4f}", "PSNR": "{:.2f}", "SSIM": "{:.3f}", "RE": "{:.3f}", "AE": "{:.3f}", "DR": "{:.3f}",
        "SSIM◯": "{:.3f}", "RE◯": "{:.3f}", "r": "{:.3f}", "cover±2σ": "{:.3f}"}


def _cell(name, mean, std):
    f = _FMT[name]
    return f"{f.format(mean)} ± {f.format(std)}"


# -----------------------------------------------------------------------------------
# Figures
# -----------------------------------------------------------------------------------

def figure(path, table, title, batch, outputs, n_show=4):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("truth", batch["image"], "viridis")]
    for name, out in outputs.items():
        if name.startswith("Background"):
            continue
        cols.append((name, out["image"], "viridis"))
        if out.get("std") is not None:
            cols.append((f"{name} std", out["std"], "magma"))
    n = min(n_show, len(batch["image"]))
    fig, axes = plt.subplots(n, len(cols), figsize=(2.2 * len(cols), 2.2 * n), squeeze=False)
    vmax = max(1.6, float(np.max(batch["image"])))
    for i in range(n):
        for j, (name, imgs, cmap) in enumerate(cols):
            ax = axes[i, j]
            is_std = name.endswith("std")
            ax.imshow(imgs[i], origin="lower", cmap=cmap, vmin=0, vmax=0.5 if is_std else vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
        axes[i, 0].set_ylabel(f"test {int(batch['index'][i])}", fontsize=8)
    fig.suptitle(f"Table {table}: {title}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def uncertainty_figure(path, table, title, batch, outputs, mask, sample: int = 0) -> bool:
    """Posterior mean, std and |error| of one test sample for each method with a std map, and the calibration
    of all test samples: the fraction of the domain's true pixels within ±k std against k, next to the ideal
    Gaussian erf(k/√2). Returns False (and draws nothing) when no method has a std map."""
    import math

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_std = {n: o for n, o in outputs.items() if o.get("std") is not None}
    if not with_std:
        return False
    inside = np.asarray(mask, bool)
    ks = np.linspace(0.0, 3.0, 31)
    fig, axes = plt.subplots(len(with_std), 5, figsize=(12.5, 2.4 * len(with_std)), squeeze=False)
    truth = batch["image"]
    vmax = max(1.6, float(truth.max()))
    for i, (name, out) in enumerate(with_std.items()):
        n = len(out["image"])
        err = np.abs(out["image"] - truth[:n])
        panels = [(truth[sample], "viridis", (0, vmax), "truth"), (out["image"][sample], "viridis", (0, vmax), f"{name} mean"),
                  (out["std"][sample], "magma", (0, 0.5), "std"),
                  (err[sample], "magma", (0, 0.5), "|error|")]
        for j, (img, cmap, (lo, hi), label) in enumerate(panels):
            im = axes[i, j].imshow(img, origin="lower", cmap=cmap, vmin=lo, vmax=hi)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            axes[i, j].set_title(label, fontsize=9)
            fig.colorbar(im, ax=axes[i, j], fraction=0.046)
        e, sd = err[..., inside], np.asarray(out["std"])[..., inside]
        frac = [float(np.mean(e <= k * sd)) for k in ks]
        ax = axes[i, 4]
        ax.plot(ks, frac, label=name)
        ax.plot(ks, [math.erf(k / math.sqrt(2)) for k in ks], "k--", lw=1, label="calibrated Gaussian")
        ax.axvline(2.0, color="grey", lw=0.5)
        ax.set_xlabel("k (posterior std)", fontsize=8)
        ax.set_ylabel("fraction within ±k std", fontsize=8)
        ax.set_title(f"calibration ({n} test samples)", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Table {table}: {title}: uncertainty (test {int(batch['index'][sample])})", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


# -----------------------------------------------------------------------------------
# Main
# -----------------------------------------------------------------------------------

def measure_throughput(sizes=(64, 128), n: int = 256, n_iterative: int = 4) -> list[tuple]:
    """Samples/s of :class:`jaxeit.data.Simulator` (after compilation) per image size, and the iterative GN.

    Uses the 4-anomaly, 40 dB physics; sample indices far outside any data set.
    Returns rows ``(what, size, samples_per_s)``.
    """
    from jaxeit.data import Simulator

    rows = []
    sim = None
    for size in sizes:
        cfg = SimulationConfig(n_circles=4, snr_db=40.0, image_size=size, n_train=n, n_val=0, n_test=0,
                               shard_size=n, chunk_size=64)
        sim = Simulator.build(cfg)
        sim(np.arange(10**6, 10**6 + 64))                       # compile
        t0 = time.perf_counter()
        sim(np.arange(2 * 10**6, 2 * 10**6 + n))
        rows.append(("linearised GN (default)", size, n / (time.perf_counter() - t0)))
    v = sim(np.arange(3 * 10**6, 3 * 10**6 + 64))["voltages"]
    sim.gn.iterative(v[:1], max_iter=5)                        # compile
    t0 = time.perf_counter()
    sim.gn.iterative(v[1:1 + n_iterative], max_iter=5)
    rows.append(("iterative GN, 5 iterations: GN alone", "-", n_iterative / (time.perf_counter() - t0)))
    return rows


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n  python benchmarks/dgm.py --quick\n"
                                        "  python benchmarks/dgm.py --tables 1,2 --methods GN,CNF\n"
                                        "  python benchmarks/dgm.py --full --workdir /scratch/dgm")
    ap.add_argument("--quick", action="store_true", help="smoke test: 32 px, tiny data, 1 epoch (dgm_quick.md)")
    ap.add_argument("--full", action="store_true", help="the paper's sizes: 128 px, 21,600/2,160/50, paper epochs")
    ap.add_argument("--pretrained", action="store_true",
                    help="the shipped models (jaxeit.dgm.load_pretrained), nothing trained: fresh validation and test "
                         "sets at their size with an independent seed (dgm_pretrained.md)")
    ap.add_argument("--workdir", type=Path, default=None, help="data and models (default out/dgm[_quick|_full])")
    ap.add_argument("--size", type=int, default=None, help="image size (default 64; quick 32; full 128)")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-val", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--vae-epochs", type=int, default=None, help="CVAE stage 1 epochs (default 8)")
    ap.add_argument("--mlp-epochs", type=int, default=None, help="CVAE stage 2 epochs (default 40)")
    ap.add_argument("--cnf-epochs", type=int, default=None, help="CNF epochs (default 6)")
    ap.add_argument("--score-epochs", type=int, default=None, help="score model epochs (default 20)")
    ap.add_argument("--csd-t0", type=float, default=None,
                    help="CSD* start time in (0, 1] (default: chosen from --csd-sweep on validation samples; "
                         "the paper code starts at step 550 of 1000)")
    ap.add_argument("--csd-samples", type=int, default=None, help="CSD* samples per image (default 20; quick 2)")
    ap.add_argument("--csd-steps", type=int, default=None, help="CSD* reverse steps (default: the SDE's N·t0)")
    ap.add_argument("--csd-sweep", default=None,
                    help="t0 values tried on validation samples of each training set (empty: 0.55, or with "
                         "--pretrained the model card's; default 0.3,0.45,0.55,0.7,0.85)")
    ap.add_argument("--csd-input", choices=("gn", "lm"), default=None,
                    help="CSD*'s input: the data set's one-step GN image, or the iterative LM image (the paper's; "
                         "default with --pretrained)")
    ap.add_argument("--lm-alphas", default="0.1,0.3,1,3",
                    help="weights of the iterative LM baseline tried on validation samples of each training set")
    ap.add_argument("--lm-val", type=int, default=32, help="validation samples for choosing the LM weight")
    ap.add_argument("--lm-iterations", type=int, default=10, help="LM iterations at most (relative decrease 1e-4 stops)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="training batch of CVAE/CNF (default 8, the paper code's) and the score model (>= 32)")
    ap.add_argument("--train-seconds", type=float, default=None,
                    help="wall-time budget per model (CVAE: half per stage); epochs are then upper bounds")
    ap.add_argument("--dps-samples", type=int, default=None, help="DPS chains per image (default 8; quick 2)")
    ap.add_argument("--dps-steps", type=int, default=None, help="DPS reverse steps (default 500; quick 50)")
    ap.add_argument("--dps-zetas", default="0.3,1,3", help="DPS step sizes tried on validation samples")
    ap.add_argument("--dps-val", type=int, default=16, help="validation samples for choosing zeta")
    ap.add_argument("--dps-n-test", type=int, default=None, help="DPS test samples (default 100; quick 16)")
    ap.add_argument("--skip-sampler-speed", action="store_true", help="do not time the score samplers")
    ap.add_argument("--csd-sweep-n", type=int, default=None, help="validation samples of the t0 sweep (default 100; "
                    "pretrained 32)")
    ap.add_argument("--csd-n-test", type=int, default=None, help="CSD* test samples (default: all)")
    ap.add_argument("--rerender", action="store_true",
                    help="rewrite the report from the JSON of an earlier run with the same arguments (runs nothing)")
    ap.add_argument("--speed-steps", type=int, default=None, help="sampler-speed steps (default 500; quick 100)")
    ap.add_argument("--speed-chains", type=int, default=16, help="sampler-speed chains per call")
    ap.add_argument("--tables", default="1,2,3,4,5,6", help="comma-separated table numbers, run in this order")
    ap.add_argument("--methods", default=None, help=f"comma-separated subset of {list(METHODS)}")
    ap.add_argument("--n-show", type=int, default=4, help="test samples per figure")
    ap.add_argument("--out", type=Path, default=None, help="report path (default results/dgm[_quick|_full].md)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true", help="do not measure the generation throughput")
    args = ap.parse_args(argv)
    if args.quick + args.full + args.pretrained > 1:
        ap.error("--quick, --full and --pretrained exclude each other")
    mode = "quick" if args.quick else "full" if args.full else "pretrained" if args.pretrained else "default"
    defaults = {"quick": dict(size=32, n_train=256, n_val=32, n_test=64, vae_epochs=1, mlp_epochs=2, cnf_epochs=1,
                              score_epochs=2, csd_samples=2, csd_steps=50, dps_samples=2, dps_steps=50, dps_n_test=16),
                "default": dict(size=64, n_train=4000, n_val=200, n_test=300, vae_epochs=8, mlp_epochs=40,
                                cnf_epochs=6, score_epochs=20, csd_samples=20, dps_samples=8, dps_steps=500,
                                dps_n_test=100),
                "full": dict(size=128, n_train=PAPER_SPLITS[0], n_val=PAPER_SPLITS[1], n_test=PAPER_SPLITS[2],
                             vae_epochs=350, mlp_epochs=800, cnf_epochs=320, score_epochs=1482, csd_samples=20,
                             dps_samples=8, dps_steps=1000, dps_n_test=50),
                # the shipped models' size; CSD* and DPS at a CPU budget (chains × steps are the cost)
                "pretrained": dict(size=32, n_train=0, n_val=64, n_test=300, csd_samples=10, csd_steps=50,
                                   csd_n_test=50, csd_sweep="", csd_sweep_n=32, csd_input="lm",
                                   dps_samples=4, dps_steps=200, dps_n_test=30)}[mode]
    defaults = {"csd_sweep": "0.3,0.45,0.55,0.7,0.85", "csd_sweep_n": 100, "csd_input": "gn", **defaults}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    suffix = {"quick": "_quick", "full": "_full", "default": "", "pretrained": "_pretrained"}[mode]
    args.mode = mode
    args.workdir = args.workdir or Path("out") / f"dgm{suffix}"
    args.out = args.out or RESULTS / f"dgm{suffix}.md"
    args.tables = [int(t) for t in args.tables.split(",")]
    args.methods = list(METHODS) if args.methods is None else [m.strip() for m in args.methods.split(",")]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; registered: {list(METHODS)}")
    return args


def data_config(args, setting: str) -> SimulationConfig:
    n_circles, snr = SETTINGS[setting]
    # seed = number of circles: the 40 and 25 dB sets share phantoms and noise directions. The shipped
    # models were trained on seed = number of circles: their test sets take another seed (1000 + it).
    seed = n_circles + (PRETRAINED_SEED_OFFSET if args.pretrained else 0)
    return SimulationConfig(n_circles=n_circles, snr_db=snr, image_size=args.size, seed=seed,
                            n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, shard_size=512)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rerender:
        return rerender(args)
    t_start = time.perf_counter()
    tables = [t for n in args.tables for t in TABLES if t[0] == n]   # in the order asked for
    needed = sorted({s for _, _, a, b in tables for s in (a, b)})
    data, gen_info, gn_info = {}, {}, {}
    for s in needed:
        data[s] = simulate(data_config(args, s), args.workdir / "data" / s, progress=not args.no_progress)
        meta = read_metadata(data[s])
        gen_info[s] = meta.get("throughput", {})
        gn_info = meta["gn"]
    throughput = [] if args.skip_throughput else measure_throughput(
        sizes=(args.size,) if args.quick else (64, 128), n=64 if args.quick else 256)
    geometry = load_geometry(data[needed[0]])
    mask = geometry["mask"].astype(bool)
    background = 1.0
    cache: dict = {}
    results, figures, sweep, failures = {}, {}, [], []
    speed = []
    for table, title, train_set, test_set in tables:
        print(f"\n== Table {table}: {title} ==", flush=True)
        ctx = Context(train_set, test_set, data, args.workdir, args, mask, background, cache)
        test = load_split(data[test_set], "test")
        rows, outputs = {}, {}
        for name in args.methods:
            try:
                method = METHODS[name](ctx)
            except Exception as e:   # one failing method must not lose the others' rows
                print(f"  {name}: FAILED to build: {type(e).__name__}: {e}", flush=True)
                failures.append(f"Table {table}, {name}: {type(e).__name__}: {e}")
                continue
            limit = getattr(method, "limit", None)
            sub = test if limit is None else {k: v[:limit] for k, v in test.items()}
            if limit is not None and limit < len(test["image"]):
                name = f"{name} (first {limit})"
            t0 = time.perf_counter()
            out = method(sub)
            dt = time.perf_counter() - t0
            out = out if isinstance(out, dict) else {"image": np.asarray(out)}
            if limit is None:
                outputs[name] = out
            else:
                outputs[name] = {k: v for k, v in out.items() if k in ("image", "std")}
            s = score(out["image"], sub["image"], mask, background)
            if out.get("std") is not None:
                s["cover±2σ"] = coverage(out["image"], out["std"], sub["image"], mask)
            rows[name] = {k: (float(np.mean(v)), float(np.std(v))) for k, v in s.items()}
            if limit is not None and limit < len(test["image"]) and "GN" in args.methods:
                add_gn_subset(rows, sub, mask, background)
            if limit is not None and limit < len(test["image"]) and "GN (LM)" in args.methods:
                lm_name = f"GN (LM) (first {len(sub['image'])})"
                if lm_name not in rows:
                    s_lm = score(METHODS["GN (LM)"](ctx)(sub), sub["image"], mask, background)
                    rows[lm_name] = {k: (float(np.mean(v)), float(np.std(v))) for k, v in s_lm.items()}
            rows[name]["time_per_sample_s"] = dt / len(sub["image"])
            if out.get("samples") is not None:
                per = [score(x, test["image"], mask, background) for x in out["samples"]]
                rows[f"{name} (per sample)"] = {
                    k: (float(np.mean([np.mean(p[k]) for p in per])),
                        float(np.mean([np.std(p[k]) for p in per]))) for k in per[0]}
            print(f"  {name:<20} SSIM {rows[name]['SSIM'][0]:.3f}  MSE {rows[name]['MSE'][0]:.4f}  "
                  f"r {rows[name]['r'][0]:.3f}  ({dt:.1f} s)", flush=True)
        results[table] = {"title": title, "train": train_set, "test": test_set, "n_test": len(test["image"]),
                          "rows": rows}
        sweep = cache.get("csd_sweep", [])
        path = args.out.parent / f"{args.out.stem}_table{table}.png"
        figure(path, table, title, test, {k: v for k, v in outputs.items() if len(v["image"]) >= min(args.n_show, len(test["image"]))},
               n_show=args.n_show)
        figures[table] = [path.name]
        upath = args.out.parent / f"{args.out.stem}_table{table}_uncertainty.png"
        if uncertainty_figure(upath, table, title, test, outputs, mask):
            figures[table].append(upath.name)
        score_models = [v for k, v in cache.items() if k[0] == "score"]
        if score_models and not speed and not args.skip_sampler_speed:
            speed = sampler_speed(score_models[0], args)
        write_report(args, results, figures, gen_info, time.perf_counter() - t_start, throughput, gn_info,
                     sweep, speed, cache, failures)
    write_report(args, results, figures, gen_info, time.perf_counter() - t_start, throughput, gn_info, sweep,
                 speed, cache, failures)
    print(f"\nreport written to {args.out}")
    return 0


def sampler_speed(model: ScoreModel, args) -> list[tuple]:
    """Samples/s of each sampler of a trained score model (after compilation; ``--speed-chains`` per call)."""
    from jaxeit.dgm.sampling import ode_sample, pc_sample, sde_sample

    size, sde, fn, n = args.size, model.sde, model.score_fn(), args.speed_chains
    steps = args.speed_steps or (100 if args.quick else 500)
    gn = np.zeros((n, size, size), np.float32) + 1.0
    t0_speed = 0.55 if args.csd_t0 is None else args.csd_t0   # a timing: the paper code's start
    runs = [
        (f"PC (reverse diffusion + Langevin), {steps} steps",
         lambda k: pc_sample(fn, sde, k, shape=(n, size, size), n_steps=steps, corrector="ald", snr=0.056)),
        (f"diffrax reverse SDE (Euler–Maruyama), {steps} steps",
         lambda k: sde_sample(fn, sde, k, shape=(n, size, size), n_steps=steps)),
        ("diffrax probability-flow ODE (Tsit5, rtol = atol = 1e-5)",
         lambda k: ode_sample(fn, sde, k, shape=(n, size, size))),
        (f"CSD* (PC from t0 = {t0_speed}), {int(steps * t0_speed)} steps",
         lambda k: model.reconstruct(gn, k, t0=t0_speed, n_samples=1, n_steps=int(steps * t0_speed)).image),
    ]
    rows = []
    for name, run in runs:
        try:
            jax.block_until_ready(run(jax.random.PRNGKey(0)))            # compile
            t0 = time.perf_counter()
            jax.block_until_ready(run(jax.random.PRNGKey(1)))
            rows.append((name, n, n / (time.perf_counter() - t0)))
        except Exception as e:   # e.g. the ODE's step budget on an untrained model
            rows.append((name, n, f"failed: {type(e).__name__}: {str(e)[:80]}"))
        print(f"  sampler speed: {rows[-1]}", flush=True)
    return rows


def subset_size(name: str) -> int | None:
    """k of a row named "<method> (first k)" (a method evaluated on the first k test samples), else None."""
    m = re.search(r"\(first (\d+)\)$", name)
    return int(m.group(1)) if m else None


def add_gn_subset(rows: dict, sub: dict, mask, background) -> None:
    """Add the row "GN (first k)": GN on the same k test samples as a method evaluated on a subset, so
    that the verdicts compare like with like."""
    name = f"GN (first {len(sub['image'])})"
    if name not in rows:
        s = score(sub["gn_image"], sub["image"], mask, background)
        rows[name] = {k: (float(np.mean(v)), float(np.std(v))) for k, v in s.items()}
        rows[name]["time_per_sample_s"] = 0.0


def rerender(args) -> int:
    """Rewrite the report from ``<out>.json`` with the current rendering (e.g. after adding the same-
    subset GN rows) without running any method again."""
    saved = json.loads(args.out.with_suffix(".json").read_text())
    results = {int(k): v for k, v in saved["results"].items()}
    for res in results.values():
        folder = args.workdir / "data" / res["test"]
        mask = load_geometry(folder)["mask"].astype(bool)
        test = load_split(folder, "test")
        for name in list(res["rows"]):
            k = subset_size(name)
            if k and not name.startswith("GN"):
                add_gn_subset(res["rows"], {f: v[:k] for f, v in test.items()}, mask, 1.0)
    old = args.out.read_text() if args.out.exists() else ""
    wall = re.search(r"[Tt]otal wall time of (?:this invocation|that run): ([\d.]+) min", old)   # also after a rerender
    cache = {"dps_zeta": {tuple(k.split("/")): v for k, v in saved.get("dps_zeta", {}).items()}}
    figures = {t: [f"{args.out.stem}_table{t}{x}.png" for x in ("", "_uncertainty")
                   if (args.out.parent / f"{args.out.stem}_table{t}{x}.png").exists()] for t in results}
    cache["lm_sweep"] = saved.get("lm_sweep", [])
    cache["shipped_cards"] = saved.get("shipped", {})
    write_report(args, results, figures, saved["generation"],
                 None if wall is None else float(wall.group(1)) * 60, saved["throughput"], saved["gn"],
                 saved["csd_sweep"], saved["sampler_speed"], cache, saved["failures"])
    print(f"report re-rendered from {args.out.with_suffix('.json')}")
    return 0


def write_report(args, results, figures, gen_info, wall, throughput, gn_info, sweep, speed, cache, failures):
    """Render and atomically write the Markdown report and its JSON (after every table: nothing is
    lost if a long run stops)."""
    training = {}
    for wd in sorted((args.workdir / "models").glob("*")):
        ckpts = {p.stem.split(".")[0]: checkpoint_summary(p) for p in wd.glob("*.ckpt.npz")}
        if ckpts:
            training[wd.name] = ckpts
    report = render(args, results, figures, gen_info, training, wall, throughput,
                    gn_info)
    cards = ({k[1]: v.card for k, v in cache.items() if isinstance(k, tuple) and k[0] == "shipped"}
             or cache.get("shipped_cards", {}))   # the latter: a --rerender
    if cards:
        report += ("\n## Shipped models used (`jaxeit.dgm.load_pretrained`; their cards in `jaxeit/dgm/weights`)\n\n"
                   "| model | parameters | steps | images seen | epochs | of the paper's training | wall (min) | "
                   "device | stop |\n|---|---|---|---|---|---|---|---|---|\n" +
                   "".join(f"| `{n}` | {t['parameters']:,} | {t['steps']} | {t['images_seen']:,} | {t['epochs']:.1f} | "
                           f"{100 * t['paper_fraction']:.2f} % | {t['wall_minutes']:.0f} | {t['device']} | "
                           f"{t['stop_reason']} |\n" for n, t in ((n, c['training']) for n, c in cards.items())))
    lm_sweep = cache.get("lm_sweep", [])
    if lm_sweep:
        best = {r["train"]: max((q for q in lm_sweep if q["train"] == r["train"]), key=lambda q: q["SSIM"][0])["alpha"]
                for r in lm_sweep}
        report += ("\n## GN (LM) weight, chosen on validation samples of each test setting (its noise level)\n\n"
                   "| setting | validation samples | alpha | SSIM | MSE | chosen |\n|---|---|---|---|---|---|\n" +
                   "".join(f"| {r['train']} | {r['n']} | {r['alpha']:g} | {_cell('SSIM', *r['SSIM'])} | "
                           f"{_cell('MSE', *r['MSE'])} | {'yes' if best[r['train']] == r['alpha'] else ''} |\n"
                           for r in lm_sweep))
    if sweep:
        chosen = {r.get("train"): max((q for q in sweep if q.get("train") == r.get("train")),
                                      key=lambda q: q["SSIM"][0])["t0"] for r in sweep}
        report += ("\n## CSD* start time, chosen on validation samples of each training set\n\n"
                   "| training set | validation samples | t0 | SSIM | MSE | chosen |\n|---|---|---|---|---|---|\n" +
                   "".join(f"| {r.get('train', '?')} | {r.get('n', '?')} | {r['t0']:g} | {_cell('SSIM', *r['SSIM'])} | "
                           f"{_cell('MSE', *r['MSE'])} | {'yes' if chosen[r.get('train')] == r['t0'] else ''} |\n"
                           for r in sweep))
    if speed:
        dev = jax.devices()[0]
        report += (f"\n## Sampler speed ({dev.platform}: {dev.device_kind}; {args.size} px, after compilation)\n\n"
                   "| sampler | chains per call | samples/s |\n|---|---|---|\n" +
                   "".join(f"| {a} | {b} | {c if isinstance(c, str) else f'{c:.2f}'} |\n" for a, b, c in speed))
    zetas = cache.get("dps_zeta", {})
    if zetas:
        report += ("\n## DPS step size (chosen on validation samples of the training set)\n\n"
                   "| training set | sampler | zeta | validation SSIM |\n|---|---|---|---|\n" +
                   "".join(f"| {k[0]} | {k[1]} | {z:g} | {v:.3f} |\n" for k, (z, v) in zetas.items()))
    if failures:
        report += "\n## Failures\n\n" + "".join(f"- {f}\n" for f in failures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from jaxeit.io_utils import atomic_write_text
    atomic_write_text(args.out, report)
    atomic_write_text(args.out.with_suffix(".json"),
                      json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                  "generation": gen_info, "throughput": throughput, "gn": gn_info,
                                  "training_wall_s": training, "csd_sweep": sweep, "sampler_speed": speed,
                                  "dps_zeta": {"/".join(k): v for k, v in zetas.items()}, "failures": failures,
                                  "lm_sweep": lm_sweep, "shipped": cards},
                                 indent=1, default=str))


def verdicts(rows: dict) -> str:
    """One sentence per learned method: does it beat the GN baseline (the iterative LM when it ran, on the same
    test samples) in SSIM (higher) and RE (lower)?"""
    base = "GN (LM)" if "GN (LM)" in rows else "GN" if "GN" in rows else None
    if base is None:
        return ""
    out = []
    for m in rows:
        if m.startswith(("GN", "Background")) or "per sample" in m:
            continue
        k = subset_size(m)
        ref = f"{base} (first {k})" if k and f"{base} (first {k})" in rows else base
        wins = [rows[m]["SSIM"][0] > rows[ref]["SSIM"][0], rows[m]["RE"][0] < rows[ref]["RE"][0]]
        word = "beats" if all(wins) else "does NOT beat" if not any(wins) else "partly beats"
        out.append(f"{m} {word} {base} in SSIM and RE ({rows[m]['SSIM'][0]:.3f} vs {rows[ref]['SSIM'][0]:.3f}; "
                   f"{rows[m]['RE'][0]:.3f} vs {rows[ref]['RE'][0]:.3f}" + (" on the same samples)" if ref != base
                                                                            else ")"))
    return "; ".join(out) + "." if out else ""


def trained_lines(args, t0_text: str) -> list[str]:
    """The report's lines on the models trained by this run."""
    return [
        f"- CVAE: stage 1 VAE {args.vae_epochs} epochs (Adam 7e-4), stage 2 MLP {args.mlp_epochs} epochs "
        "(Adam 3e-4) (paper code: batch 8, 350 / 800 epochs, learning rates 3e-4…7e-4 / 8e-5…3e-4); "
        f"KL weight (n/128)² = {(args.size / 128) ** 2:g} so that the pixel-summed data term keeps the "
        "paper's weight against the KL term at this image size.",
        f"- CNF: {args.cnf_epochs} epochs, Adam 1e-3, weight decay 1e-5, clip 1 (paper code: batch 8, 320 epochs); "
        "reconstruction = mean of 20 samples (T = 1); '(per sample)' rows average the metrics of the single "
        "samples (the DGM code's convention).",
        f"- CSD*: VE SDE (σ 0.01…128, N = 1000), U-Net score model (`score_config`), {args.score_epochs} epochs; "
        f"GN image diffused to t0 = {t0_text} and denoised by the predictor–corrector sampler (annealed "
        f"Langevin, r = 0.056) with {args.csd_steps or 'N·t0'} steps; mean of {args.csd_samples} samples"
        + (f" on the first {args.csd_n_test} test samples" if args.csd_n_test else "") +
        " (paper code: 1482 epochs, start at step 550 of 1000). One score model per anomaly count serves "
        "both noise levels (same phantoms; the paper's Test 2 CSD* rows also use its 40 dB model).",
        f"- DPS (beyond the paper): the same unconditional score model, {args.dps_steps} reverse-diffusion steps "
        f"from T, each followed by ζ·∇‖v − F(x̂₀)‖/‖v_bg‖ through the exact point-electrode FEM (image → "
        f"element averages → voltages), x̂₀ and the samples clipped to the training images' range; mean of "
        f"{args.dps_samples} chains; ζ chosen from {{{args.dps_zetas}}} "
        f"on {args.dps_val} validation samples; evaluated on the first {args.dps_n_test} test samples.",
        f"- CSD*+DPS (beyond the paper): DPS started like CSD* — the GN image diffused to t0 = {t0_text}, "
        f"{args.csd_steps or 'N·t0'} reverse-diffusion steps each followed by the same likelihood step; mean of "
        f"{args.dps_samples} chains, ζ chosen the same way, same test samples as DPS.",
        "- training budget: " + ("all epochs" if args.train_seconds is None else
                                 f"at most {args.train_seconds:g} s of wall time per model (CVAE: half per "
                                 "stage; the steps done are in the training table)") +
        f"; batch {args.batch_size or 8} (CVAE, CNF).",
    ]


def pretrained_lines(args) -> list[str]:
    """The report's lines on the shipped models (``--pretrained``)."""
    t0_text = ("chosen from {" + args.csd_sweep + "} on validation samples (table at the end)" if args.csd_sweep else
               f"{args.csd_t0:g}" if args.csd_t0 is not None else
               "= the model card's (chosen on the training data's validation split when it was shipped)")
    return [
        "- CVAE, CNF: the shipped models `cvae_<setting>` and `cnf_<setting>` (`jaxeit.dgm.load_pretrained`), trained "
        "by `benchmarks/dgm_pretrain.py` on the paper's 21,600 / 2,160 split (table of their training at the end); "
        "CNF = mean and std of 20 samples; a setting with no shipped model is listed under Failures.",
        f"- CSD*: the shipped score model `score_c<n>_40db` (one per anomaly count, both noise levels, as the paper's "
        f"Test 2 rows); its LM input diffused to t0 {t0_text}, {args.csd_steps} predictor–corrector steps (annealed "
        f"Langevin, r = 0.056), mean and std of {args.csd_samples} samples on the first {args.csd_n_test} test "
        "samples (the paper: 20 samples, 550 steps; the cost on 2 CPU cores is chains × steps).",
        f"- DPS: the same score model, {args.dps_steps} reverse steps from T with the likelihood step through the "
        f"exact FEM, {args.dps_samples} chains, ζ from {{{args.dps_zetas}}} chosen on {args.dps_val} validation "
        f"samples, on the first {args.dps_n_test} test samples.",
        "- cover±2σ: the fraction of the domain's true pixels within ±2 posterior std of the mean (0.954 when "
        "calibrated); the uncertainty figures plot it against k.",
    ]


def render(args, results, figures, gen_info, training, wall, throughput, gn_info) -> str:
    t0_text = (f"{args.csd_t0:g}" if args.csd_t0 is not None else
               "the value chosen on validation samples of each training set (table at the end)" if args.csd_sweep
               else "0.55")
    lines = [machine_header("DGM study: GN, CVAE, CNF, CSD*, DPS and CSD*+DPS (paper Tables 1–6)")]
    lines += [
        "Reproduction of the DGM comparison paper's Tests 1–3 (§4.3) for GN, CVAE (Seo et al. 2019, §3.1), "
        "CNF (Denker et al. 2021, §3.2) and CSD* (score SDE post-processing of GN, §3.3.2); methods are "
        "registered in `benchmarks/dgm.py` (`METHODS`).",
        "",
        "## What was run",
        "",
        f"- mode: **{args.mode}**; images {args.size}×{args.size} px over [-1, 1]² (paper: 128×128); "
        f"splits {args.n_train} train / {args.n_val} val / {args.n_test} test per setting "
        f"(paper: 21,600 / 2,160 / 50).",
        "- data: `jaxeit.data.simulate` — pyEIT mesh (`pyeit.mesh.create(16, h0=0.1)`: 686 triangles), point "
        "electrodes, adjacent protocol (208 measurements), circles from `jaxeit.phantoms.random_circles` "
        "(radii U(0.15, 0.25); values {0.5, 1.5} / {0.01, 0.1, 0.5, 1.5}, one per circle), background 1, "
        "white noise at the stated SNR (std ‖v‖/√M·10^(−SNR/20)); ground truth = exact pixel averages, 0 outside "
        "the mesh. Seed = number of circles" + (f" + {PRETRAINED_SEED_OFFSET} (the shipped models were trained on "
                                                "seed = number of circles: these validation and test samples are "
                                                "new to them)" if args.pretrained else "") +
        ", so the 40 and 25 dB sets share phantoms.",
        "- GN: one linearised Levenberg–Marquardt step in log σ from the known background (precomputed, one "
        f"matrix product per batch): `{gn_info.get('formula')}`, R = diag(JᵀJ) (prior `{gn_info.get('prior')}`), "
        f"alpha = {gn_info.get('alpha')} (λ = {gn_info.get('lambda', float('nan')):.3g}); rendered by "
        f"`{gn_info.get('render')}` interpolation. The same images condition the CNF.",
        "- GN (LM), the paper's GN: iterative Levenberg–Marquardt in log σ (`jaxeit.data.Operators.lm_image`: the "
        "same prior, μ·diag(JᵀJ) damping, line search), stopped at a relative decrease < 1e-4 or "
        f"{args.lm_iterations} iterations; its weight chosen from {{{args.lm_alphas}}} on {args.lm_val} validation "
        "samples of the test setting, i.e. tuned to the data's noise level (table at the end). The paper's GN row "
        "is printed beside it. CSD*'s input: "
        + ("this LM image (the paper's)." if args.csd_input == "lm" else "the one-step GN image."),
        *(pretrained_lines(args) if args.pretrained else trained_lines(args, t0_text)),
        "- metrics in the paper's convention (its code scores through dival on the whole image): truth and "
        "reconstruction set to 0 outside the disk, MSE, PSNR (data range = max − min of the truth over the "
        "square), SSIM (scikit-image's default: uniform 7×7 window, sample covariance), RE = Σ|x̂ − x|/Σ|x|, "
        "AE, DR over the whole square; beside them SSIM◯ (Gaussian window, σ = 1.5) and RE◯ **inside the "
        "domain** (pixels whose centre lies in the mesh) and r = Pearson correlation of σ̂ − 1 with σ − 1 in "
        "the domain (0 for a constant image). Mean ± std over the test samples.",
        "- the paper's rows are copied from its Tables 1–6 (128 px, its own data and metric code); compare "
        "trends, not digits.",
        "",
        "### Generation throughput (this machine, one core, after compilation)",
        "",
        "| setting | samples/s | first shard (s, incl. compile) |",
        "|---|---|---|",
    ]
    for s, g in gen_info.items():
        if g.get("samples_per_s"):
            lines.append(f"| {s} | {g['samples_per_s']} | {g.get('first_shard_s')} |")
        else:
            lines.append(f"| {s} | (generated in an earlier run) | |")
    if throughput:
        lines += ["", "Measured in this invocation (256 samples after compilation, 4 anomalies, one core):", "",
                  "| GN | image size | samples/s |", "|---|---|---|"]
        lines += [f"| {what} | {size} | {rate:.1f} |" for what, size, rate in throughput]
    if not args.pretrained:
        lines += ["", "### Training", "", "| model | stage | wall (s) | steps | epochs | last loss |",
                  "|---|---|---|---|---|---|"]
    for k, v in training.items():
        for stage, (w, steps, epochs, loss) in sorted(v.items()):
            lines.append(f"| {k} | {stage} | {w:.0f} | {steps} | {epochs:.2f} | {loss:.4g} |")
    if args.rerender:
        lines += ["", "Re-rendered with `--rerender` from the run's JSON (no method was run again; the run's "
                  "command is the one above without `--rerender`)" +
                  ("." if wall is None else f"; total wall time of that run: {wall / 60:.1f} min."), ""]
    else:
        lines += ["", f"Total wall time of this invocation: {wall / 60:.1f} min.", ""]
    for table, res in results.items():
        lines += [f"## Table {table}: {res['title']}", "",
                  f"Trained on `{res['train']}`, tested on `{res['test']}` ({res['n_test']} test samples).", "",
                  "| Method | source | " + " | ".join(COLUMNS) + " |",
                  "|---|---|" + "---|" * len(COLUMNS)]
        paper = PAPER.get(table, {})
        order = list(res["rows"])
        # the paper's GN is iterative LM: its row goes beside ours when we ran it
        paper_name = {"GN (LM)": "GN", "GN": None} if "GN (LM)" in order else {}
        shown = set()
        for name in order:
            row = res["rows"][name]
            lines.append(f"| {name} | ours | " + " | ".join(_cell(c, *row[c]) if c in row else "–" for c in COLUMNS)
                         + " |")
            p_name = paper_name.get(name, name)
            if p_name in paper:
                shown.add(p_name)
                lines.append(f"| {p_name} | paper | " + " | ".join(_cell(c, *paper[p_name][i]) for i, c in
                                                                 enumerate(METRICS)) + " |" + " – |" * len(EXTRA_COLUMNS))
        for name, vals in paper.items():
            if name not in shown:
                lines.append(f"| {name} | paper | " + " | ".join(_cell(c, *vals[i]) for i, c in
                                                               enumerate(METRICS)) + " |" + " – |" * len(EXTRA_COLUMNS))
        lines += ["", verdicts(res["rows"])] if verdicts(res["rows"]) else []
        names = figures[table] if isinstance(figures[table], list) else [figures[table]]
        lines += [""] + [f"![Table {table}]({n})" for n in names] + [""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
