"""INR and INR+TV against TV and GN on the thorax phantom; mesh robustness; κ sweep; speed.

Data: CEM on a fine gmsh mesh of the 28 cm tank; reconstruction on a coarser,
different mesh; images compared on a 128×128 grid inside the tank (the INR is
sampled there directly; mesh methods by element lookup).

1. Thorax at 60/50/40 dB, 5 noise seeds each: mean ± std SSIM, PSNR and the
   Pearson correlation of σ̂ − σ_bg with σ − σ_bg, with the homogeneous fit as
   the floor row.
2. Mesh robustness (Diff-INR §5.4): INR+TV with one κ on 4 meshes of increasing
   density: SSIM per mesh and pairwise SSIM between the renderings.
3. κ sweep (5 values) on 2 meshes.
4. Speed: one INR+TV iteration on a ~1k-element mesh and a whole reconstruction
   (``--speed-only`` reruns just this section in the existing results file).

Writes benchmarks/results/inr.md and inr_thorax.png.

    python benchmarks/inr.py [--quick] [--speed-only]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_header, markdown_table  # noqa: E402

from jaxeit import ForwardModel, grid, mesh, metrics, noise, phantoms, plot, protocol  # noqa: E402
from jaxeit.recon.inr import INRConfig, render  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.recon import fit_homogeneous, reconstruct  # noqa: E402

R, WIDTH, Z = 0.14, 0.025, 6e-3  # 28 cm tank, 2.5 cm electrodes, z in Ω·m² (as benchmarks/classical.py)


def tank_problem():
    """(protocol, fine mesh, coarse mesh, forward model, inverse model, 128×128 grid, tank mask) of the
    28 cm tank: CEM data on the fine mesh, reconstruction on the coarser, different one."""
    prot = protocol.adjacent(16)
    fine = mesh.disk(radius=R, electrode_width=WIDTH, h=0.05 * R)
    coarse = mesh.disk(radius=R, electrode_width=WIDTH, h=0.1 * R)
    fwd, inv = ForwardModel(fine, prot, contact_impedance=Z), ForwardModel(coarse, prot, contact_impedance=Z)
    g = grid.Grid.square(R, 128)
    return prot, fine, coarse, fwd, inv, g, np.hypot(*np.meshgrid(g.x, g.y)) < R


def image_of(res, inv, g):
    if "inr" in res.extras:
        return render(res.extras["inr"], g, res.extras["frame"])
    return np.asarray(grid.mesh_to_grid_elements(inv.mesh, g)(res.sigma))


def scores(image, truth, mask, background):
    m = metrics.all_metrics(jnp.asarray(image), jnp.asarray(truth), mask=jnp.asarray(mask))
    a, b = (image - background)[mask], (truth - np.median(truth[mask]))[mask]
    corr = float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 else 0.0
    return {"SSIM": float(m["SSIM"]), "PSNR": float(m["PSNR"]), "corr": corr}


def mean_std(vals):
    vals = np.asarray(vals)
    return f"{vals.mean():.3f} ± {vals.std():.3f}"


def speed_rows(prot, v, iters):
    """Section 4: ms per INR+TV iteration (compiled) and a whole reconstruction on a ~1k-element mesh."""
    m1k = mesh.disk(radius=R, electrode_width=WIDTH, h=0.15 * R)
    f1k = ForwardModel(m1k, prot, contact_impedance=Z)
    speed = []
    for gs in (32, 64):
        reconstruct(f1k, v, "inr+tv", max_iter=50, chunk=50, grid_size=gs)  # compile

        def seconds(n):
            t0 = time.perf_counter()
            reconstruct(f1k, v, "inr+tv", max_iter=n, chunk=50, grid_size=gs)
            return time.perf_counter() - t0

        # one iteration = the marginal cost (250 vs 50 iterations, median of 3): the per-fit set-up
        # (background fit, features, final rendering) is reported apart
        t50, t250 = (float(np.median([seconds(n) for _ in range(3)])) for n in (50, 250))
        per_iter = (t250 - t50) / 200
        t0 = time.perf_counter()
        reconstruct(f1k, v, "inr+tv", max_iter=iters, grid_size=gs)
        speed.append([f"{gs}×{gs}", m1k.n_elements, f"{1e3 * per_iter:.1f}", f"{t50 - 50 * per_iter:.2f}", iters,
                      f"{time.perf_counter() - t0:.1f}"])
    return speed


def factorisation_rows(inv, v_clean, g, truth, mask, iters, seeds):
    """INR+TV at 50 dB with the fixed Fourier features factored (default) and dense: same reconstructions?"""
    rows, diffs = {True: [], False: []}, []
    for seed in seeds:
        v = noise.add_noise(v_clean, 50.0, jax.random.PRNGKey(1000 + seed))
        sig = {}
        for factor in (True, False):
            res = reconstruct(inv, v, "inr+tv", max_iter=iters, key=jax.random.PRNGKey(seed),
                              factor_features=factor)
            rows[factor].append(scores(image_of(res, inv, g), truth, mask, res.background))
            sig[factor] = res.sigma
        diffs.append(float(np.max(np.abs(sig[True] - sig[False]) / sig[False])))
    return [["factored (default)" if f else "dense", mean_std([r["SSIM"] for r in rows[f]]),
             mean_std([r["PSNR"] for r in rows[f]])] for f in (True, False)], max(diffs)


def speed_section(speed, factor_rows=None, factor_diff=None, speed_only: bool = False) -> str:
    # the load average tells how far a shared machine was from quiet while timing
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"## 4. Speed ({os.cpu_count()}-core CPU, compiled; {datetime.datetime.now():%Y-%m-%d %H:%M}, "
            f"load average {load})\n\n"
            + "One iteration = INR on centroids and grid, FEM solve and adjoint, TV, Adam (one jitted step, "
              "`lax.scan` of 50); its time is the marginal cost, (t(250 iterations) − t(50))/200, medians of 3 "
              "compiled runs; the per-reconstruction set-up (background fit, Fourier features and their "
              "factorisation, final rendering) is the next column.\n\n"
            + markdown_table(["grid", "elements", "ms / INR+TV iteration", "set-up per reconstruction (s)",
                              "iterations", "whole reconstruction (s)"], speed) + "\n"
            + ("" if factor_rows is None else
               "\nThe fixed Fourier features of the evaluation points are stored as low-rank factors "
               "(`jaxeit.recon.inr.model.factor_features`: truncated SVD at 1e-7 of the largest singular value, equal to "
               "float32 rounding), which makes the first layer cheaper. INR+TV on the thorax at 50 dB with the "
               "seeds of section 1, factored and dense: the two start apart by float32 rounding, which the "
               f"Adam iterations amplify to at most {100 * factor_diff:.0f} % in single "
               "elements; the quality is the same:\n\n"
               + markdown_table(["features", "SSIM", "PSNR"], factor_rows) + "\n"
               + ("" if not speed_only else "\nThis section was rerun alone (`--speed-only`); sections 1–3 come "
                  "from the full run dated in the header, made with dense features.\n")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, 1 SNR, fewer iterations (smoke run)")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--thorax-only", action="store_true", help="only section 1 (writes inr_thorax.md)")
    ap.add_argument("--speed-only", action="store_true",
                    help="only section 4, replacing it in the existing results file")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    args.out = args.out or RESULTS / ("inr_thorax.md" if args.thorax_only else "inr.md")
    seeds = [0] if args.quick else list(range(5))
    snrs = [50.0] if args.quick else [60.0, 50.0, 40.0]
    iters = 100 if args.quick else args.iterations
    prot, fine, coarse, fwd, inv, g, mask = tank_problem()
    phantom = phantoms.thorax(R)
    truth = np.asarray(phantoms.on_grid(phantom, g))
    v_clean = fwd.voltages(phantoms.on_mesh(phantom, fine))
    if args.speed_only:
        text = args.out.read_text()
        head = text[:text.index("## 4. Speed")] if "## 4. Speed" in text else text.rstrip("\n") + "\n\n"
        factor_rows, factor_diff = factorisation_rows(inv, v_clean, g, truth, mask, iters, seeds)
        section = speed_section(speed_rows(prot, noise.add_noise(v_clean, 50.0, jax.random.PRNGKey(1000)), iters),
                                factor_rows, factor_diff, speed_only=True)
        atomic_write_text(args.out, head + section)
        print(section)
        print(f"written {args.out}")
        return
    methods = {"GN": ("gn", {}), "TV": ("tv", {}), "INR": ("inr", dict(max_iter=iters)),
               "INR+TV": ("inr+tv", dict(max_iter=iters))}

    # 1. thorax at three SNRs
    table = {snr: {name: [] for name in ["homogeneous"] + list(methods)} for snr in snrs}
    figure_images = {}
    for snr, seed in itertools.product(snrs, seeds):
        v = noise.add_noise(v_clean, snr, jax.random.PRNGKey(1000 + seed))
        bg = fit_homogeneous(inv, v)
        table[snr]["homogeneous"].append(scores(np.full_like(truth, bg), truth, mask, bg))
        for name, (method, opts) in methods.items():
            extra = {"key": jax.random.PRNGKey(seed)} if method.startswith("inr") else {}
            res = reconstruct(inv, v, method, **opts, **extra)
            img = image_of(res, inv, g)
            table[snr][name].append(scores(img, truth, mask, res.background))
            if snr == 50.0 and seed == 0:
                figure_images[name] = img
        print(f"{snr} dB seed {seed}: " + ", ".join(f"{n} {table[snr][n][-1]['SSIM']:.3f}" for n in table[snr]),
              flush=True)
    fig_path = args.out.with_name("inr_thorax.png")
    m = jnp.asarray(mask)
    plot.compare(figure_images, truth=truth, grid=g, mask=mask, path=fig_path, title="Thorax phantom, 50 dB",
                 metrics={"SSIM": lambda x, r: metrics.ssim(x, r, mask=m), "PSNR": lambda x, r: metrics.psnr(x, r, mask=m)})

    cfg = INRConfig()
    header = machine_header("INR reconstructions (Diff-INR §3.2, §4.3–4.4, without the diffusion prior)")
    header += (f"Forward: CEM on a fine mesh of the 28 cm tank ({fine.n_nodes} nodes); inverse: a different mesh "
               f"({coarse.n_elements} elements). INR: {cfg.n_features} Fourier features, {cfg.depth}×{cfg.width} MLP, "
               f"Adam lr {cfg.learning_rate} (cosine decay to ×{cfg.final_lr_fraction}), {iters} iterations, "
               f"κ = {cfg.kappa}, TV weight 1e-4 on a {cfg.grid_size}×{cfg.grid_size} grid. Metrics on 128×128 inside "
               "the tank (outside the tank every image takes the truth's values, so no method is judged on what it "
               "puts there); `corr` = Pearson correlation of σ̂ − σ_bg with σ − σ_bg. GN and TV: default options.\n\n")
    rows = []
    for snr in snrs:
        for name, recs in table[snr].items():
            rows.append([f"{snr:g} dB", name, mean_std([r["SSIM"] for r in recs]),
                         mean_std([r["PSNR"] for r in recs]), mean_std([r["corr"] for r in recs])])
    section1 = f"## 1. Thorax phantom, {len(seeds)} noise seeds per SNR (mean ± std)\n\n"
    section1 += markdown_table(["SNR", "method", "SSIM", "PSNR", "corr"], rows)
    section1 += f"\n\n![thorax]({fig_path.name})\n\n"
    if args.thorax_only:
        atomic_write_text(args.out, header + section1)
        print(header + section1)
        print(f"written {args.out}")
        return

    # 2. mesh robustness at 50 dB, one κ
    v50 = noise.add_noise(v_clean, 50.0, jax.random.PRNGKey(1000))
    mesh_hs = [0.16, 0.12, 0.09] if args.quick else [0.16, 0.12, 0.09, 0.07]
    robust, renders = [], []
    for h in mesh_hs:
        mm = mesh.disk(radius=R, electrode_width=WIDTH, h=h * R)
        fm = ForwardModel(mm, prot, contact_impedance=Z)
        res = reconstruct(fm, v50, "inr+tv", max_iter=iters, key=jax.random.PRNGKey(0))
        img = image_of(res, fm, g)
        renders.append(img)
        robust.append([f"h = {h}R", mm.n_nodes, mm.n_elements, f"{res.options['kappa']}",
                       scores(img, truth, mask, res.background)["SSIM"]])
        print("mesh", robust[-1], flush=True)
    pair_rows = []
    for i, j in itertools.combinations(range(len(renders)), 2):
        s = float(metrics.ssim(jnp.asarray(renders[i]), jnp.asarray(renders[j]), mask=m))
        pair_rows.append([f"mesh {i + 1} vs mesh {j + 1}", s])

    # 3. κ sweep on two meshes
    kappas = [0.05, 0.1, 0.15, 0.25, 0.4]
    sweep_meshes = {"coarse (h = 0.16R)": 0.16, "fine (h = 0.09R)": 0.09}
    sweep = {k: [] for k in kappas}
    for label, h in sweep_meshes.items():
        mm = mesh.disk(radius=R, electrode_width=WIDTH, h=h * R)
        fm = ForwardModel(mm, prot, contact_impedance=Z)
        for k in kappas:
            res = reconstruct(fm, v50, "inr+tv", max_iter=iters, kappa=k, key=jax.random.PRNGKey(0))
            sweep[k].append(scores(image_of(res, fm, g), truth, mask, res.background)["SSIM"])
            print("kappa", label, k, sweep[k][-1], flush=True)

    speed = speed_rows(prot, v50, iters)
    factor_rows, factor_diff = factorisation_rows(inv, v_clean, g, truth, mask, iters, seeds)

    text = header + section1
    text += "## 2. Mesh robustness (INR+TV, 50 dB, same κ)\n\n"
    text += markdown_table(["mesh", "nodes", "elements", "κ", "SSIM vs truth"], robust)
    text += "\n\nPairwise SSIM between the 128×128 renderings:\n\n" + markdown_table(["pair", "SSIM"], pair_rows)
    text += "\n\n## 3. κ sweep (INR+TV, 50 dB): SSIM vs truth\n\n"
    text += markdown_table(["κ"] + list(sweep_meshes), [[k] + sweep[k] for k in kappas])
    text += "\n\n" + speed_section(speed, factor_rows, factor_diff)
    atomic_write_text(args.out, text)
    print(text)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
