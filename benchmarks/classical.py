"""Classical reconstructions on simulated data: one-step GN, iterative GN / LM, TV (PD-IPM).

Data are simulated with the complete electrode model on a fine gmsh disk and
reconstructed on a coarser, different mesh (no inverse crime). Images are
compared on a 128×128 grid inside the unit disk.

1. 20 random 2-circle phantoms (DGM comparison study §4.1), 40 dB:
   mean ± std of MSE, PSNR, SSIM, RE, AE, DR per method.
2. The Diff-INR thorax phantom (28 cm tank) at 50 dB: metrics and a comparison figure.
3. Timing of a TV reconstruction on a ~1k-element mesh.

Writes benchmarks/results/classical.md and classical_thorax.png.

    python benchmarks/classical.py [--quick] [--n-phantoms 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_header, markdown_table  # noqa: E402

from jaxeit import ForwardModel, grid, mesh, metrics, noise, phantoms, plot, protocol  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.recon import reconstruct  # noqa: E402

METHODS = {
    "one-step GN": ("one-step", {}),
    "GN (iterative)": ("gn", {}),
    "LM": ("lm", {}),
    "TV (PD-IPM)": ("tv", {}),
}
METRIC_NAMES = ["MSE", "PSNR", "SSIM", "RE", "AE", "DR"]


def setup(radius: float, fine_h: float, coarse_h: float, width: float, z: float, size: int = 128):
    """Forward (fine) and inverse (coarse) models, the grid, the domain mask and the renderer."""
    prot = protocol.adjacent(16)
    fine = mesh.disk(radius=radius, electrode_width=width, h=fine_h)
    coarse = mesh.disk(radius=radius, electrode_width=width, h=coarse_h, offset=0.0)
    g = grid.Grid.square(half_width=radius, size=size)
    mask = np.asarray(np.hypot(*np.meshgrid(g.x, g.y)) < radius * (1 - 1e-9))
    return (ForwardModel(fine, prot, contact_impedance=z), ForwardModel(coarse, prot, contact_impedance=z),
            g, mask, grid.mesh_to_grid_elements(coarse, g))


def evaluate(image, truth, mask):
    m = metrics.all_metrics(jnp.asarray(image), jnp.asarray(truth), mask=jnp.asarray(mask))
    return {k: float(m[k]) for k in METRIC_NAMES}


def run_case(fwd, inv, g, mask, render, phantom, snr_db, key, methods):
    sigma_true = phantoms.on_mesh(phantom, fwd.mesh)
    truth = np.asarray(phantoms.on_grid(phantom, g))
    v = noise.add_noise(fwd.voltages(sigma_true), snr_db, key)
    out = {}
    for name, (method, opts) in methods.items():
        t0 = time.perf_counter()
        res = reconstruct(inv, v, method, **opts)
        image = np.asarray(render(res.sigma))
        out[name] = dict(image=image, metrics=evaluate(image, truth, mask), time=time.perf_counter() - t0,
                         n_iter=res.n_iter)
    return truth, out


def masked_metrics(mask):
    """Figure-title metrics computed exactly as in the tables (inside the domain mask)."""
    m = jnp.asarray(mask)
    return {"SSIM": lambda x, r: metrics.ssim(x, r, mask=m), "PSNR": lambda x, r: metrics.psnr(x, r, mask=m)}


def summary_rows(records):
    rows = []
    for name in records:
        vals = {k: np.array([r[k] for r in records[name]]) for k in METRIC_NAMES}
        rows.append([name] + [f"{vals[k].mean():.4g} ± {vals[k].std():.2g}" for k in METRIC_NAMES])
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 phantoms, coarser meshes (smoke run)")
    ap.add_argument("--n-phantoms", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "classical.md")
    args = ap.parse_args(argv)
    n_ph = 3 if args.quick else args.n_phantoms
    fine_h, coarse_h = (0.1, 0.16) if args.quick else (0.05, 0.1)
    key = jax.random.PRNGKey(args.seed)
    k_ph, k_noise, k_th = jax.random.split(key, 3)

    # 1. random 2-circle phantoms, unit disk, 40 dB
    fwd, inv, g, mask, render = setup(1.0, fine_h, coarse_h, 0.2, 0.01)
    batch = phantoms.random_circles(k_ph, n_circles=2, batch=n_ph)
    records = {name: [] for name in METHODS}
    timings = {name: [] for name in METHODS}
    for i in range(n_ph):
        _, out = run_case(fwd, inv, g, mask, render, batch[i], 40.0, jax.random.fold_in(k_noise, i), METHODS)
        for name in METHODS:
            records[name].append(out[name]["metrics"])
            timings[name].append(out[name]["time"])
        print(f"phantom {i + 1}/{n_ph}: " + ", ".join(f"{n} SSIM {out[n]['metrics']['SSIM']:.3f}" for n in METHODS),
              flush=True)

    # 2. thorax, 28 cm tank, 50 dB (σ in S/m; z chosen so z·σ/width matches the unit-disk case)
    fwd_t, inv_t, g_t, mask_t, render_t = setup(0.14, fine_h * 0.14, coarse_h * 0.14, 0.025, 6e-3)
    truth_t, out_t = run_case(fwd_t, inv_t, g_t, mask_t, render_t, phantoms.thorax(0.14), 50.0, k_th, METHODS)
    fig_path = args.out.with_name("classical_thorax.png")
    fig = plot.compare({n: out_t[n]["image"] for n in METHODS}, truth=truth_t, grid=g_t, mask=mask_t,
                       metrics=masked_metrics(mask_t), path=fig_path, title="Thorax phantom, 50 dB")
    del fig

    # 3. TV timing on a ~1k-element mesh (compiled: second call)
    m1k = mesh.disk(h=0.13)
    inv_1k = ForwardModel(m1k, protocol.adjacent(16))
    v1k = noise.add_noise(fwd.voltages(phantoms.on_mesh(batch[0], fwd.mesh)), 40.0, k_noise)
    reconstruct(inv_1k, v1k, "tv", max_iter=2)
    t0 = time.perf_counter()
    res_1k = reconstruct(inv_1k, v1k, "tv")
    t_tv = time.perf_counter() - t0

    text = machine_header("Classical reconstructions")
    text += (f"Forward: CEM on a gmsh disk (h = {fine_h}, {fwd.mesh.n_nodes} nodes); inverse: a different disk mesh "
             f"(h = {coarse_h}, {inv.mesh.n_elements} elements); 16 electrodes, adjacent drive, z = 0.01; "
             f"metrics on a 128×128 grid inside the disk (jaxeit.metrics). Noise: white Gaussian, "
             "σ_n = ‖v‖/√M·10^(−SNR/20). Default options of each method.\n\n")
    text += f"## {n_ph} random 2-circle phantoms, 40 dB (mean ± std)\n\n"
    text += markdown_table(["method"] + METRIC_NAMES, summary_rows(records))
    text += "\n\nMedian wall time per reconstruction (s, incl. first-call compilation): " + ", ".join(
        f"{n} {np.median(timings[n]):.2f}" for n in METHODS) + "\n\n"
    text += "## Thorax phantom (Diff-INR §4.1), 28 cm tank, 50 dB\n\n"
    text += markdown_table(["method"] + METRIC_NAMES + ["iterations", "time (s)"],
                           [[n] + [out_t[n]["metrics"][k] for k in METRIC_NAMES] + [out_t[n]["n_iter"], out_t[n]["time"]]
                            for n in METHODS])
    text += f"\n\n![thorax comparison]({fig_path.name})\n\n"
    text += (f"## TV speed\n\nTV (PD-IPM) on a {m1k.n_elements}-element mesh: {t_tv:.2f} s for {res_1k.n_iter} "
             f"iterations ({1e3 * t_tv / max(res_1k.n_iter, 1):.0f} ms/iteration), compiled.\n")
    atomic_write_text(args.out, text)
    print(text)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
