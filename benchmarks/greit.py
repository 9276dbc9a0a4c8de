"""GREIT vs one-step GN: the GREIT figures of merit (Adler et al. 2009) on small targets along a radius.

Data: CEM on a fine gmsh unit disk (16 electrodes, adjacent), a small
conductive target (radius 0.05, σ 1 → 1.1) at radial positions 0 … 0.8 on the
x axis, noise-free; reconstruction (difference against the empty disk) on a
coarser, different mesh, both methods through ``jaxeit.recon.reconstruct``,
compared on the same 32 × 32 grid (one-step GN rendered by element lookup).

Figures of merit of an image x̂ (change from the background, pixels inside the
disk), with x_q the pixels ≥ max(x̂)/4 ("1/4-amplitude set"):

* AR, amplitude response: Σ x̂·pixel area / (target area·Δσ) (GREIT wants it constant: low CV);
* PE, position error: r_target − r(centre of gravity of x_q) (want ≈ 0 and uniform);
* RES, resolution: √(area of x_q / area of the disk) (want small, uniform);
* SD, shape deformation: fraction of x_q outside the circle of the same area about its centre of gravity;
* RNG, ringing: opposite-sign amplitude outside that circle / amplitude inside it.

Writes benchmarks/results/greit.md.

    python benchmarks/greit.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_header, markdown_table  # noqa: E402

from jaxeit import ForwardModel, grid, mesh, phantoms, protocol  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.recon import GREIT, OneStep, reconstruct  # noqa: E402

FOMS = ("AR", "PE", "RES", "SD", "RNG")


def figures_of_merit(image, mask, g, target, radius, delta):
    """AR, PE, RES, SD, RNG (module notes) of a change image (H, W) for a target at ``target`` (x, y)."""
    x = np.where(mask, image, 0.0)
    pix = (g.x[1] - g.x[0]) * (g.y[1] - g.y[0])
    q = mask & (x >= x.max() / 4)
    pts = g.centres()
    cog = (pts[q] * x[q][:, None]).sum(0) / x[q].sum()
    ar = x[mask].sum() * pix / (np.pi * radius ** 2 * delta)
    pe = np.hypot(*target) - np.hypot(*cog)
    res = np.sqrt(q.sum() / mask.sum())
    circle = mask & (np.hypot(pts[..., 0] - cog[0], pts[..., 1] - cog[1]) <= np.sqrt(q.sum() * pix / np.pi))
    sd = (q & ~circle).sum() / q.sum()
    rng = -x[~circle & mask & (x < 0)].sum() / x[circle].sum()
    return dict(AR=ar, PE=pe, RES=res, SD=sd, RNG=rng)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="coarser meshes, fewer training targets (smoke run)")
    ap.add_argument("--out", type=Path, default=RESULTS / "greit.md")
    args = ap.parse_args(argv)
    fine_h, coarse_h, n_train = (0.08, 0.13, 200) if args.quick else (0.05, 0.1, 500)
    prot = protocol.adjacent(16)
    fwd = ForwardModel(mesh.disk(h=fine_h), prot)
    inv = ForwardModel(mesh.disk(h=coarse_h, offset=0.0), prot)
    g = grid.Grid.square(1.0, 32)
    mask = np.asarray(grid.domain_mask(g, inv.mesh))
    render = grid.mesh_to_grid_elements(inv.mesh, g)
    ref = fwd.voltages(jnp.ones(fwd.mesh.n_elements))
    radius, delta = 0.05, 0.1
    methods = {"GREIT": GREIT(n_targets=n_train, target_radius=radius, grid_size=32), "one-step GN (NOSER)": OneStep()}
    positions = np.linspace(0.0, 0.8, 9)
    rows, per_pos, t_method = [], {n: [] for n in methods}, {n: 0.0 for n in methods}
    for r in positions:
        ph = phantoms.Phantom.of(1.0, circles=[((float(r), 0.0), radius, 1.0 + delta)])
        v = fwd.voltages(phantoms.on_mesh(ph, fwd.mesh))
        for name, method in methods.items():
            t0 = time.perf_counter()
            res = reconstruct(inv, v, method, reference=ref)
            t_method[name] += time.perf_counter() - t0
            img = (res.image if name == "GREIT" else np.asarray(render(res.sigma))) - res.background
            per_pos[name].append(figures_of_merit(np.nan_to_num(img), mask, g, (r, 0.0), radius, delta))
        print(f"r = {r:.1f}: " + "; ".join(f"{n} " + ", ".join(f"{k} {per_pos[n][-1][k]:.3g}" for k in FOMS)
                                           for n in methods), flush=True)
    for name in methods:
        vals = {k: np.array([f[k] for f in per_pos[name]]) for k in FOMS}
        rows.append([name, f"{vals['AR'].mean():.3g} (CV {vals['AR'].std() / vals['AR'].mean():.2f})",
                     f"{vals['PE'].mean():.3g} ± {vals['PE'].std():.2g}",
                     f"{vals['RES'].mean():.3g} ± {vals['RES'].std():.2g}", f"{vals['SD'].mean():.3g}",
                     f"{vals['RNG'].mean():.3g}", f"{t_method[name]:.1f}"])
    detail = [[name, f"{r:.1f}"] + [f"{f[k]:.3g}" for k in FOMS]
              for name in methods for r, f in zip(positions, per_pos[name])]
    text = machine_header("GREIT vs one-step GN: figures of merit")
    text += (f"Forward: CEM on a gmsh unit disk (h = {fine_h}, {fwd.mesh.n_nodes} nodes); inverse: a different disk "
             f"(h = {coarse_h}, {inv.mesh.n_elements} elements); 16 electrodes, adjacent drive; target radius "
             f"{radius}, σ 1 → {1 + delta}, noise-free, at r = 0 … 0.8 on the x axis; images on a 32 × 32 grid. "
             f"GREIT trained on {n_train} random targets of the same radius (jaxeit.recon.greit); one-step GN with "
             "its defaults (NOSER, alpha 1). Figures of merit as in Adler et al. 2009 (see the script's notes). "
             "Time: all 9 reconstructions, including GREIT's training on the first call.\n\n")
    text += "## Mean over positions\n\n" + markdown_table(
        ["method", "AR (CV)", "PE", "RES", "SD", "RNG", "time (s)"], rows)
    text += "\n\n## Per position\n\n" + markdown_table(["method", "r"] + list(FOMS), detail) + "\n"
    atomic_write_text(args.out, text)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
