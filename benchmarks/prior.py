"""A diffusion prior's model card: samples, held-out denoising MSE against a Gaussian blur, sharp vs blurred, speed.

1. 16 samples (ancestral, 100 respaced steps, learned variances) next to 16
   training images → prior_<name>_samples.png; mean total variation and the fraction
   of pixels at the extremes, for samples and data.
2. Denoising on fresh shapes images (a key never used in training): x_t from
   q(x_t | x_0) at t = 100, 300, 500; MSE of the prior's x̂₀ (from ε̂, raw and
   clipped to [-1, 1]) against a Gaussian-blur denoiser of x_t/√ᾱ_t whose width
   is chosen per t on a separate tuning set, and against x̂₀ = 0.
3. Sharp vs blurred: the denoising loss ‖ε̂(x_t, t) − ε‖² on fresh sharp
   shapes images and on Gaussian-blurred copies (1.5 px, renormalised to
   [-1, 1]) with the same ε, per t: a prior of sharp shapes should denoise
   sharp images better (ratio blurred/sharp > 1) at every t ≤ 300.
4. Speed on this machine: shapes generation (images/s), one ε̂ evaluation
   (batch 1 and 32), sampling 16 images.

Checks (acceptance): the samples' extreme-pixel fraction within 0.1 of the
data's; the blurred/sharp loss ratio > 1 at every t ≤ 300.

Writes benchmarks/results/prior_<name>.md and prior_<name>_samples.png, and the
model card jaxeit/priors/weights/<name>.md beside the weights (the same text).

    python benchmarks/prior.py [--name shapes64] [--quick] [--weights PATH.msgpack] [--n-test 512]
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

TIMESTEPS = (50, 100, 200, 300, 500)
SHARP_BLUR_PX = 1.5
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


def sharp_vs_blurred(prior, key, n_test, batch=64):
    """Rows (t, loss on sharp, loss on blurred, ratio) of the ε-prediction loss, the same ε for both."""
    n = prior.image_size
    mask = prior.disk_mask()
    sharp = np.asarray(shapes.sample_images(key, n_test, size=n))
    blurred = blur(sharp, SHARP_BLUR_PX * n / 64)
    blurred = np.stack([np.asarray(prior.to_prior(jnp.asarray(b), jnp.asarray(mask))[0]) for b in blurred])
    rows, ok = [], True
    for t in TIMESTEPS:
        eps = np.asarray(jax.random.normal(jax.random.fold_in(key, t), sharp.shape, jnp.float32))
        losses = []
        for x0 in (sharp, blurred):
            xt = prior.q_sample(jnp.asarray(x0), t, jnp.asarray(eps))
            eps_hat = np.concatenate([np.asarray(prior.apply(xt[i:i + batch], t)) for i in range(0, n_test, batch)])
            losses.append(float(np.mean((eps_hat - eps) ** 2)))
        ratio = losses[1] / losses[0]
        ok &= ratio > 1.0 or t > 300
        rows.append([t, losses[0], losses[1], f"{ratio:.3f}"])
    return rows, ok


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
    ap.add_argument("--name", help="a shipped prior (default: the package's default prior)")
    ap.add_argument("--weights", help="a .msgpack file instead of a shipped prior")
    ap.add_argument("--no-card", action="store_true", help="do not write the model card beside the weights")
    ap.add_argument("--n-test", type=int, default=512)
    ap.add_argument("--seed", type=int, default=20261122, help="held-out key (training uses seed 0)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prior = (load_pretrained(path=args.weights) if args.weights else
             load_pretrained(args.name) if args.name else load_pretrained())
    stem = f"prior_{prior.name}"
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
    sample_figure(prior, data, samples, out / f"{stem}_samples.png", steps)
    ext = lambda x: float(np.mean(np.abs(x) > 0.9))  # noqa: E731
    stats_rows = [["training data", len(ref), float(total_variation(ref).mean()), ext(ref),
                   float(ref.mean()), float(ref.std())],
                  [f"prior samples ({steps} steps)", len(more), float(total_variation(more).mean()), ext(more),
                   float(more.mean()), float(more.std())]]

    # 2. denoising; 3. sharp vs blurred
    den_rows = denoising_table(prior, k_den, n_test, n_test // 2)
    sharp_rows, sharp_ok = sharp_vs_blurred(prior, jax.random.fold_in(k_den, 7), n_test)
    ext_ok = abs(stats_rows[1][3] - stats_rows[0][3]) <= 0.1

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
             f"(streamed shapes, {meta.get('images_seen', '?')} images seen) in {meta.get('wall_time_s', 0) / 60:.0f} min "
             f"on {meta.get('hardware', {}).get('cpu')} ({meta.get('hardware', {}).get('devices')}); final training loss {fl.get('loss', float('nan')):.4f} (L_simple "
             f"{fl.get('mse', float('nan')):.4f}, L_vlb term {fl.get('vb_bits_per_pixel', float('nan')):.4f} "
             f"bits/pixel). Weights: EMA.",
             "",
             "## Samples",
             "",
             f"![samples]({stem}_samples.png)",
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
             f"**Check: extreme fraction within 0.1 of the data's: {'PASS' if ext_ok else 'FAIL'}** "
             f"({stats_rows[1][3]:.3f} vs {stats_rows[0][3]:.3f}).",
             "",
             "## Sharp vs blurred",
             "",
             f"ε-prediction loss ‖ε̂(x_t, t) − ε‖² (mean per pixel) on {n_test} fresh sharp shapes images and on "
             f"the same images blurred by a Gaussian of {SHARP_BLUR_PX * n / 64:g} px (renormalised to [-1, 1]), "
             "with the same noise ε. Ratio > 1: the denoiser prefers sharp shapes.",
             "",
             markdown_table(["t", "loss, sharp", "loss, blurred", "blurred / sharp"], sharp_rows),
             "",
             f"**Check: prefers sharp at every t ≤ 300: {'PASS' if sharp_ok else 'FAIL'}**",
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
    text = "\n".join(lines)
    wrote = [out / f"{stem}.md", out / f"{stem}_samples.png"]
    atomic_write_text(out / f"{stem}.md", text)
    if not args.weights and not args.no_card and not args.quick:   # the model card beside the shipped weights
        from jaxeit.priors.pretrained import WEIGHTS_DIR

        card = text.replace(f"({stem}_samples.png)", f"(../../../benchmarks/results/{stem}_samples.png)")
        atomic_write_text(WEIGHTS_DIR / f"{prior.name}.md", card)
        wrote.append(WEIGHTS_DIR / f"{prior.name}.md")
    print(text)
    print(json.dumps({"wrote": [str(p) for p in wrote]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
