"""Diff-INR against TV, INR and INR+TV: thorax at three SNRs, held-out shape phantoms, time-step study, speed.

Data: CEM on a fine gmsh mesh of the 28 cm tank; reconstruction on a coarser,
different mesh; images compared on a 128×128 grid inside the tank (INRs are
sampled there directly, mesh methods by element lookup). Diff-INR uses the
shipped prior (``jaxeit.priors.load_pretrained()``).

1. Thorax (Diff-INR §4.1) at 60/50/40 dB, ``--seeds`` noise seeds each:
   mean ± std SSIM and PSNR per method.
2. Held-out shape phantoms: ``--shapes`` random images of the prior's shapes
   distribution (a key never used in training), rendered at 128×128 on the
   tank, scaled to a 0.2 S/m background, averaged onto the fine mesh; 50 dB.
3. Time-step study (§5.3): Diff-INR SSIM on the thorax at 50 dB for three
   t-ranges and two fixed t (the first three noise seeds).
4. Speed: one Diff-INR iteration on a ~1k-element mesh (prior grid), from the
   difference of two compiled runs of different lengths; whole reconstruction.

Writes benchmarks/results/diff_inr.md, diff_inr_thorax.png, diff_inr_shapes.png
and diff_inr_timesteps.png (time-step analysis, paper Fig. 5).

    python benchmarks/diff_inr.py [--quick] [--seeds 5] [--shapes 20]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_header, markdown_table  # noqa: E402
from inr import R, WIDTH, Z, image_of, mean_std, scores, tank_problem  # noqa: E402

from jaxeit import ForwardModel, grid, mesh, metrics, noise, phantoms, plot  # noqa: E402
from jaxeit.recon.diffinr import timestep_analysis  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.priors import load_pretrained  # noqa: E402
from jaxeit.priors.shapes import sample_conductivity  # noqa: E402
from jaxeit.recon import reconstruct  # noqa: E402

SHAPES_KEY = 20261125  # held-out phantoms: the prior was trained on fold_in(PRNGKey(0), step) batches
SHAPES_BACKGROUND = 0.2  # S/m, the thorax phantom's background
T_RANGES = [(20, 200), (50, 400), (200, 800)]
FIXED_T = [100, 500]


def shape_phantoms(n: int, g: grid.Grid, fine: mesh.Mesh):
    """``n`` held-out shape images (n, 128, 128) on grid ``g`` and their element averages on ``fine``."""
    sigma, _ = sample_conductivity(jax.random.PRNGKey(SHAPES_KEY), n, size=g.nx)
    sigma = np.asarray(sigma, np.float64)
    # the shapes' background is the value at the box corner (outside every shape)
    sigma *= SHAPES_BACKGROUND / sigma[:, :1, :1]
    to_mesh = grid.grid_to_mesh(fine, g, samples=16)
    return sigma, np.stack([np.asarray(to_mesh(jnp.asarray(s))) for s in sigma])


def run_methods(methods, inv, v, g, key):
    """{name: (image (128, 128), background)} for every method on voltages ``v``."""
    out = {}
    for name, (method, opts) in methods.items():
        extra = {"key": key} if "inr" in method else {}
        res = reconstruct(inv, v, method, **opts, **extra)
        out[name] = (image_of(res, inv, g), res.background)
    return out


def time_per_iteration(model, v, prior, iterations):
    """(ms per Diff-INR iteration, s for a whole reconstruction of ``iterations``), compiled."""
    run = lambda n: reconstruct(model, v, "diff-inr", prior=prior, max_iter=n, chunk=50)  # noqa: E731
    run(50)  # compile
    t0 = time.perf_counter()
    run(50)
    t_short = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(250)
    t_long = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(iterations)
    return 1e3 * (t_long - t_short) / 200, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, 50 dB, 2 shapes, 100 iterations (smoke run)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--shapes", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--out", type=Path, default=RESULTS / "diff_inr.md")
    args = ap.parse_args(argv)
    seeds = list(range(1 if args.quick else args.seeds))
    snrs = [50.0] if args.quick else [60.0, 50.0, 40.0]
    n_shapes = 2 if args.quick else args.shapes
    iters = 100 if args.quick else args.iterations
    t_start = time.perf_counter()

    prior = load_pretrained()
    prot, fine, coarse, fwd, inv, g, mask = tank_problem()
    m = jnp.asarray(mask)
    fig_metrics = {"SSIM": lambda x, r: metrics.ssim(x, r, mask=m), "PSNR": lambda x, r: metrics.psnr(x, r, mask=m)}
    methods = {"TV": ("tv", {}), "INR": ("inr", dict(max_iter=iters)),
               "INR+TV": ("inr+tv", dict(max_iter=iters)),
               "Diff-INR": ("diff-inr", dict(max_iter=iters, prior=prior))}

    # 1. thorax at three SNRs
    phantom = phantoms.thorax(R)
    truth = np.asarray(phantoms.on_grid(phantom, g))
    v_clean = fwd.voltages(phantoms.on_mesh(phantom, fine))
    thorax = {snr: {name: [] for name in methods} for snr in snrs}
    thorax_images = {}
    for snr, seed in tqdm(list(itertools.product(snrs, seeds)), desc="thorax"):
        v = noise.add_noise(v_clean, snr, jax.random.PRNGKey(1000 + seed))
        out = run_methods(methods, inv, v, g, jax.random.PRNGKey(seed))
        for name, (img, bg) in out.items():
            thorax[snr][name].append(scores(img, truth, mask, bg))
        if snr == 50.0 and seed == 0:
            thorax_images = {name: img for name, (img, _) in out.items()}
            diff_inr_50 = reconstruct(inv, v, "diff-inr", max_iter=iters, prior=prior, key=jax.random.PRNGKey(0))
        tqdm.write(f"thorax {snr:g} dB seed {seed}: " +
                   ", ".join(f"{n} {thorax[snr][n][-1]['SSIM']:.3f}" for n in methods))
    plot.compare(thorax_images, truth=truth, grid=g, mask=mask, path=args.out.with_name("diff_inr_thorax.png"),
                 title="Thorax phantom, 50 dB", metrics=fig_metrics)
    timestep_analysis(diff_inr_50, prior, key=jax.random.PRNGKey(5),
                      path=args.out.with_name("diff_inr_timesteps.png"))

    # 2. held-out shape phantoms at 50 dB
    shape_truths, shape_sigmas = shape_phantoms(n_shapes, g, fine)
    shapes = {name: [] for name in methods}
    shape_images = {}
    for i in tqdm(range(n_shapes), desc="shapes"):
        v = noise.add_noise(fwd.voltages(jnp.asarray(shape_sigmas[i])), 50.0, jax.random.PRNGKey(2000 + i))
        out = run_methods(methods, inv, v, g, jax.random.PRNGKey(i))
        for name, (img, bg) in out.items():
            shapes[name].append(scores(img, shape_truths[i], mask, bg))
        if i == 0:
            shape_images = {name: img for name, (img, _) in out.items()}
        tqdm.write(f"shape {i}: " + ", ".join(f"{n} {shapes[n][-1]['SSIM']:.3f}" for n in methods))
    plot.compare(shape_images, truth=shape_truths[0], grid=g, mask=mask,
                 path=args.out.with_name("diff_inr_shapes.png"), title="Held-out shape phantom 0, 50 dB",
                 metrics=fig_metrics)

    # 3. time-step study, thorax 50 dB (seeds as section 1)
    settings = [(f"t ∈ [{a}, {b}]", dict(t_range=(a, b))) for a, b in T_RANGES]
    settings += [(f"t = {t}", dict(fixed_t=t)) for t in FIXED_T]
    steps_rows = []
    for label, opts in settings:
        vals = []
        for seed in seeds[:3]:
            v = noise.add_noise(v_clean, 50.0, jax.random.PRNGKey(1000 + seed))
            res = reconstruct(inv, v, "diff-inr", max_iter=iters, prior=prior, key=jax.random.PRNGKey(seed),
                              **opts)
            vals.append(scores(image_of(res, inv, g), truth, mask, res.background)["SSIM"])
        steps_rows.append([label, mean_std(vals)])
        print("time steps", label, steps_rows[-1][1], flush=True)

    # 4. speed on a ~1k-element mesh
    m1k = mesh.disk(radius=R, electrode_width=WIDTH, h=0.15 * R)
    f1k = ForwardModel(m1k, prot, contact_impedance=Z)
    v1k = noise.add_noise(v_clean, 50.0, jax.random.PRNGKey(1000))
    ms_iter, whole = time_per_iteration(f1k, v1k, prior, iters)

    # report
    n = prior.image_size
    header = machine_header("Diff-INR: INR + diffusion prior through score distillation")
    header += (f"Forward: CEM on a fine mesh of the 28 cm tank ({fine.n_nodes} nodes); inverse: a different mesh "
               f"({coarse.n_elements} elements). INR: 256 Fourier features, 4×128 MLP, Adam lr 0.01 with cosine "
               f"decay, {iters} iterations; INR+TV: TV weight 1e-4; Diff-INR: shipped prior `{prior.name}` "
               f"({n}×{n}), SDS weight 3e-3, t ∈ [50, 400], constant w(t). TV: PD-IPM with its defaults. Metrics "
               "on 128×128 inside the tank.\n\n")
    rows = [[f"{snr:g} dB", name, mean_std([r["SSIM"] for r in recs]), mean_std([r["PSNR"] for r in recs])]
            for snr in snrs for name, recs in thorax[snr].items()]
    text = header + f"## 1. Thorax phantom, {len(seeds)} noise seeds per SNR (mean ± std)\n\n"
    text += markdown_table(["SNR", "method", "SSIM", "PSNR"], rows)
    best = {snr: max(methods, key=lambda k: np.mean([r["SSIM"] for r in thorax[snr][k]])) for snr in snrs}
    text += "\n\nBest mean SSIM: " + ", ".join(f"{snr:g} dB: {best[snr]}" for snr in snrs) + "\n\n"
    text += "![thorax](diff_inr_thorax.png)\n\n"
    text += (f"## 2. Held-out shape phantoms, 50 dB ({n_shapes} images of the prior's distribution, key "
             f"{SHAPES_KEY}, background {SHAPES_BACKGROUND} S/m)\n\n")
    text += markdown_table(["method", "SSIM", "PSNR"], [[name, mean_std([r["SSIM"] for r in recs]),
                                                         mean_std([r["PSNR"] for r in recs])]
                                                        for name, recs in shapes.items()])
    best_s = max(methods, key=lambda k: np.mean([r["SSIM"] for r in shapes[k]]))
    text += f"\n\nBest mean SSIM: {best_s}\n\n![shapes](diff_inr_shapes.png)\n\n"
    text += f"## 3. Time-step study (Diff-INR, thorax, 50 dB, {len(seeds[:3])} seeds): SSIM\n\n"
    text += markdown_table(["SDS time steps", "SSIM"], steps_rows)
    text += "\n\nTime-step analysis of the 50 dB reconstruction (rows: x_t, ε̂, ε̂ − ε):\n\n"
    text += "![time steps](diff_inr_timesteps.png)\n\n"
    text += "## 4. Speed (compiled)\n\n"
    text += markdown_table(["mesh elements", "prior grid", "ms / Diff-INR iteration", "iterations",
                            "whole reconstruction (s)"], [[m1k.n_elements, f"{n}×{n}", ms_iter, iters, whole]])
    text += f"\n\nTotal wall time of this run: {(time.perf_counter() - t_start) / 60:.1f} min.\n"
    atomic_write_text(args.out, text)
    print(text)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
