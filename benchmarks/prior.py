"""The shipped diffusion prior: samples, held-out denoising MSE against a Gaussian blur, speed.

1. 16 samples (ancestral, 100 respaced steps, learned variances) next to 16
   training images → prior_samples.png; mean total variation and the fraction
   of pixels at the extremes, for samples and data.
2. Denoising on fresh shapes images (a key never used in training): x_t from
   q(x_t | x_0) at t = 100, 300, 500; MSE of the prior's x̂₀ (from ε̂, raw and
   clipped to [-1, 1]) against a Gaussian-blur denoiser of x_t/√ᾱ_t whose width
   is chosen per t on a separate tuning set, and against x̂₀ = 0.
3. Speed on this machine: shapes generation (images/s), one ε̂ evaluation
   (batch 1 and 32), sampling 16 images.

Writes benchmarks/results/prior.md and prior_samples.png.

    python benchmarks/prior.py [--quick] [--weights PATH.msgpack] [--n-test 512]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_header, markdown_table, median_time  # noqa: E402

import jaxeit  # noqa: E402,F401
from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.priors import load_pretrained, shapes  # noqa: E402

TIMESTEPS = (100, 300, 500)
BLUR_WIDTHS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)   # pixels


def blur(x, width):
    """Gaussian blur of (B, n, n) images, width in pixels (0: identity), edges by reflection."""
    if width == 0:
        return x
    return gaussian_filter(x, sigma=(0, width, width), mode="reflect")


def total_variation(x):
    """(B,) mean absolute forward difference of (B, n, n) images (anisotropic TV per pixel)."""
    return np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))


def denoising_table(prior, key, n_test, n_tune, batch=64):
    k_test, k_tune, k_noise = jax.random.split(key, 3)
    n = prior.image_size
    test = np.asarray(shapes.sample_images(k_test, n_test, size=n))
    tune = np.asarray(shapes.sample_images(k_tune, n_tune, size=n))
    rows = []
    for t in TIMESTEPS:
        ab = float(prior.alphas_cumprod[t])
        kt = jax.random.fold_in(k_noise, t)
        noisy = lambda x0, k: np.asarray(prior.q_sample(  # noqa: E731
            jnp.asarray(x0), t, jax.random.normal(k, x0.shape, jnp.float32)))
        xt_tune, xt_test = noisy(tune, jax.random.fold_in(kt, 0)), noisy(test, jax.random.fold_in(kt, 1))
        # blur width chosen on the tuning set
        mse_w = {w: float(np.mean((blur(xt_tune / np.sqrt(ab), w) - tune) ** 2)) for w in BLUR_WIDTHS}
        best_w = min(mse_w, key=mse_w.get)
        blur_mse = float(np.mean((blur(xt_test / np.sqrt(ab), best_w) - test) ** 2))
        x0_hat = np.concatenate([np.asarray(prior.denoise(jnp.asarray(xt_test[i:i + batch]), t))
                                 for i in range(0, n_test, batch)])
        prior_mse = float(np.mean((x0_hat - test) ** 2))
        prior_clip = float(np.mean((np.clip(x0_hat, -1, 1) - test) ** 2))
        rows.append([t, f"{ab:.4f}", f"{np.sqrt((1 - ab) / ab):.3f}", prior_mse, prior_clip, blur_mse,
                     f"{best_w:g}", float(np.mean(test ** 2)), f"{blur_mse / prior_mse:.1f}×"])
    return rows


def sample_figure(prior, data, samples, path, steps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 9, figsize=(13.5, 6.2), gridspec_kw={"width_ratios": [1] * 4 + [0.25] + [1] * 4})
    for i in range(16):
        r, c = divmod(i, 4)
        for img, col in ((data[i], c), (samples[i], c + 5)):
            ax = axes[r, col]
            ax.imshow(img, origin="lower", cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
            n = img.shape[0]
            ax.add_patch(plt.Circle(((n - 1) / 2, (n - 1) / 2), n / 2, fill=False, color="w", lw=0.4, ls=":"))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 4].axis("off")
    axes[0, 1].set_title("training data (fresh draws)", loc="left", fontsize=11)
    axes[0, 6].set_title(f"prior samples ({prior.name}, {steps} steps)", loc="left", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run (few images, 20 sampling steps)")
    ap.add_argument("--weights", help="a .msgpack file instead of the shipped prior")
    ap.add_argument("--n-test", type=int, default=512)
    ap.add_argument("--seed", type=int, default=20261122, help="held-out key (training uses seed 0)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prior = load_pretrained(path=args.weights) if args.weights else load_pretrained()
    n = prior.image_size
    key = jax.random.PRNGKey(args.seed)
    n_test = 64 if args.quick else args.n_test
    steps = 20 if args.quick else 100
    meta = prior.provenance

    # 1. samples
    k_data, k_samp, k_den, k_stats = jax.random.split(key, 4)
    data = np.asarray(shapes.sample_images(k_data, 16, size=n))
    t0 = time.perf_counter()
    samples = np.asarray(jax.block_until_ready(prior.sample(k_samp, 16, steps=steps)))
    t_sample_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = np.asarray(jax.block_until_ready(prior.sample(jax.random.fold_in(k_samp, 1), 16, steps=steps)))
    t_sample = time.perf_counter() - t0
    more = samples if args.quick else np.concatenate(
        [samples, np.asarray(prior.sample(jax.random.fold_in(k_samp, 2), 48, steps=steps))])
    ref = np.asarray(shapes.sample_images(k_stats, len(more), size=n))
    sample_figure(prior, data, samples, out / "prior_samples.png", steps)
    ext = lambda x: float(np.mean(np.abs(x) > 0.9))  # noqa: E731
    stats_rows = [["training data", len(ref), float(total_variation(ref).mean()), ext(ref),
                   float(ref.mean()), float(ref.std())],
                  [f"prior samples ({steps} steps)", len(more), float(total_variation(more).mean()), ext(more),
                   float(more.mean()), float(more.std())]]

    # 2. denoising
    den_rows = denoising_table(prior, k_den, n_test, n_test // 2)

    # 3. speed
    t_gen = median_time(lambda k: shapes.sample_images(k, 256, size=n), repeats=3,
                        args_for=lambda i: (jax.random.PRNGKey(1000 + i),))
    xs = {b: jax.random.normal(jax.random.PRNGKey(b), (b, n, n), jnp.float32) for b in (1, 32)}
    t_eps = {b: median_time(lambda x, t: prior.apply(x, t), repeats=5,
                            args_for=lambda i, b=b: (xs[b] + 1e-3 * i, jnp.full((b,), 250 + i, jnp.int32)))
             for b in (1, 32)}

    fl = meta.get("final_losses", {})
    tc = meta.get("train_config", {})
    lines = [machine_header("Diffusion prior (shapes, improved DDPM)"),
             f"Prior `{prior.name}`: {n}×{n}, U-Net {meta.get('n_params', '?'):,} parameters "
             f"(channels {tc.get('base_channels')}×{tc.get('channel_mult')}, attention at "
             f"{tc.get('attention_resolutions')}), cosine schedule T = {prior.num_timesteps}, learned-range "
             f"variance, hybrid loss. Trained {meta.get('steps')} steps × batch {tc.get('batch_size')} "
             f"(streamed shapes) in {meta.get('wall_time_s', 0) / 60:.0f} min on {meta.get('hardware', {}).get('cpu')} "
             f"(one core); final training loss {fl.get('loss', float('nan')):.4f} (L_simple "
             f"{fl.get('mse', float('nan')):.4f}, L_vlb term {fl.get('vb_bits_per_pixel', float('nan')):.4f} "
             f"bits/pixel). Weights: EMA.",
             "",
             "## Samples",
             "",
             f"![samples](prior_samples.png)",
             "",
             "Left: fresh training images; right: prior samples (ancestral sampling, "
             f"{steps} respaced steps, learned variances, x̂₀ clipped to [-1, 1]). Image statistics "
             "(TV = mean |forward difference| per pixel, both directions; 'extreme' = fraction of pixels "
             "with |x| > 0.9):",
             "",
             markdown_table(["images", "count", "mean TV", "extreme fraction", "mean", "std"], stats_rows),
             "",
             "## Held-out denoising MSE (normalised [-1, 1] units)",
             "",
             f"{n_test} fresh shapes images (key seed {args.seed}, never seen in training); "
             "x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε. Prior: x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t. Blur: Gaussian filter of "
             "x_t/√ᾱ_t, width (pixels) chosen per t on a separate set of "
             f"{n_test // 2} images from {list(BLUR_WIDTHS)}. 'x̂₀ = 0' is the MSE of the zero image.",
             "",
             markdown_table(["t", "ᾱ_t", "noise std of x_t/√ᾱ_t", "prior MSE", "prior MSE (clipped)",
                             "best blur MSE", "blur width (px)", "x̂₀ = 0 MSE", "blur / prior"], den_rows),
             "",
             f"## Speed (this machine, {len(os.sched_getaffinity(0))} core(s) available to the process)",
             "",
             markdown_table(["operation", "time"], [
                 ["shapes generation, 256 images", f"{t_gen * 1e3:.0f} ms ({256 / t_gen:.0f} images/s)"],
                 ["ε̂ evaluation, batch 1", f"{t_eps[1] * 1e3:.1f} ms"],
                 ["ε̂ evaluation, batch 32", f"{t_eps[32] * 1e3:.1f} ms"],
                 [f"sampling 16 images, {steps} steps", f"{t_sample:.2f} s (first call incl. compile "
                                                         f"{t_sample_first:.1f} s)"],
             ]),
             ""]
    atomic_write_text(out / "prior.md", "\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({"wrote": [str(out / "prior.md"), str(out / "prior_samples.png")]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
