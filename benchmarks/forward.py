"""Forward-model speed: jaxeit (every solver backend) next to pyEIT, in the same run.

For meshes of ~400, ~1k, ~2.3k and ~4k nodes:
* point-electrode model on pyEIT's own meshes (identical problem for both packages);
* complete electrode model on gmsh disks of similar size (pyEIT has no CEM).
Times are medians over fresh conductivities (no cache can serve a repeat), in
milliseconds, for all 16 adjacent patterns (208 measurements) and for the full
(208, E) Jacobian. Writes benchmarks/results/forward.md (or forward_<device>.md
on an accelerator).

    python benchmarks/forward.py [--quick] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_header, markdown_table, median_time  # noqa: E402

import jaxeit  # noqa: E402
from jaxeit import ForwardModel, mesh, protocol  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402

PYEIT_H0 = {400: 0.1, 1000: 0.06, 2300: 0.04, 4000: 0.03}
GMSH_H = {400: 0.22, 1000: 0.1, 2300: 0.05, 4000: 0.037}


def sigmas(n_elements: int):
    rng = np.random.default_rng(0)
    return lambda i: (jnp.asarray(1.0 + rng.random(n_elements)),)


def time_jaxeit(m, model, solvers, repeats):
    out = {}
    prot = protocol.adjacent(16)
    for solver in solvers:
        fm = ForwardModel(m, prot, electrode_model=model, solver=solver)
        out[solver] = (median_time(fm.voltages, repeats=repeats, args_for=sigmas(m.n_elements)),
                       median_time(fm.jacobian, repeats=repeats, args_for=sigmas(m.n_elements)))
    return out


def time_pyeit(mo, repeats):
    from pyeit.eit import protocol as pp
    from pyeit.eit.fem import EITForward

    fwd = EITForward(mo, pp.create(16, dist_exc=1, step_meas=1, parser_meas="std"))
    rng = np.random.default_rng(0)
    perm = lambda i: (1.0 + rng.random(mo.element.shape[0]),)  # noqa: E731
    return (median_time(fwd.solve_eit, repeats=repeats, args_for=perm),
            median_time(lambda p: fwd.compute_jac(p), repeats=max(2, repeats // 2), args_for=perm))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two smallest sizes, 2 repeats (a smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = list(PYEIT_H0)[:2] if args.quick else list(PYEIT_H0)
    repeats = 2 if args.quick else args.repeats
    on_cpu = jax.default_backend() == "cpu"
    solvers = ["dense", "banded", "scipy", "cg"]
    try:
        import pyeit.mesh as pm
    except ImportError:
        pm = None
        print("pyEIT not installed: point-model rows use gmsh meshes and no pyEIT column", file=sys.stderr)

    rows_point, rows_cem = [], []
    for size in sizes:
        if pm is not None:
            mo = pm.create(16, h0=PYEIT_H0[size])
            m = mesh.from_pyeit(mo.node, mo.element, mo.el_pos)
            ref = time_pyeit(mo, repeats) if on_cpu else (np.nan, np.nan)
        else:
            m, ref = mesh.disk(h=GMSH_H[size]).with_electrode_nodes(None), (np.nan, np.nan)
        t = time_jaxeit(m, "point", solvers, repeats)
        best_f = min(t, key=lambda s: t[s][0])
        best_j = min(t, key=lambda s: t[s][1])
        rows_point.append([m.n_nodes, m.n_elements, 1e3 * ref[0], 1e3 * ref[1],
                           *[1e3 * t[s][0] for s in solvers], *[1e3 * t[s][1] for s in solvers],
                           f"{ref[0] / t[best_f][0]:.1f}× ({best_f})", f"{ref[1] / t[best_j][1]:.1f}× ({best_j})"])
        print("point", rows_point[-1], flush=True)
        mc = mesh.disk(h=GMSH_H[size])
        t = time_jaxeit(mc, "cem", solvers, repeats)
        rows_cem.append([mc.n_nodes, mc.n_elements, *[1e3 * t[s][0] for s in solvers],
                         *[1e3 * t[s][1] for s in solvers]])
        print("cem", rows_cem[-1], flush=True)

    dev = jax.devices()[0]
    text = machine_header("Forward model speed")
    text += ("Median wall time in ms (fresh σ each call, after compilation); 16 electrodes, adjacent drive, "
             "208 measurements. `fwd` = all voltages, `jac` = full (208, E) Jacobian.\n"
             f"Device: {dev.platform} ({dev.device_kind}). Ratios: pyEIT time / fastest jaxeit backend.\n\n")
    text += "## Point electrodes on pyEIT's meshes (same problem in both packages)\n\n"
    text += markdown_table(["nodes", "elements", "pyEIT fwd", "pyEIT jac",
                            *[f"{s} fwd" for s in solvers], *[f"{s} jac" for s in solvers],
                            "speed-up fwd", "speed-up jac"], rows_point)
    text += "\n\n## Complete electrode model on gmsh disks (pyEIT has no CEM)\n\n"
    text += markdown_table(["nodes", "elements", *[f"{s} fwd" for s in solvers], *[f"{s} jac" for s in solvers]],
                           rows_cem)
    text += ("\n\n`solver=\"auto\"` uses dense Cholesky up to "
             f"{jaxeit.forward.solvers.DENSE_MAX_UNKNOWNS_CPU} unknowns on a CPU and the banded (pure-XLA block Cholesky) backend above; "
             f"on a GPU dense up to {jaxeit.forward.solvers.DENSE_MAX_UNKNOWNS_GPU} and CG above.\n")
    name = "forward.md" if on_cpu else f"forward_{dev.platform}.md"
    path = args.out or RESULTS / name
    atomic_write_text(path, text)
    print(text)
    print(f"written {path}")


if __name__ == "__main__":
    main()
