"""Forward-model speed: jaxeit (every solver backend) next to pyEIT, in the same run.

For meshes of ~400, ~1k, ~2.3k and ~4k nodes:
* point-electrode model on pyEIT's own meshes (identical problem for both packages);
* complete electrode model on gmsh disks of similar size (pyEIT has no CEM).
Times are medians over fresh conductivities (no cache can serve a repeat), in
milliseconds, for all 16 adjacent patterns (208 measurements) and for the full
(208, E) Jacobian. Then the cost of the value checks (``ForwardModel(checks=True)``,
the default) on the forward solve at ~4k nodes: back-to-back pairs, checks on vs
off, median ratio. Writes benchmarks/results/forward.md (or forward_<device>.md
on an accelerator). ``benchmarks/forward_limit.py`` compares the backends with
SuperLU and CHOLMOD up to 20k (80k) nodes.

    python benchmarks/forward.py [--quick] [--repeats 5] [--check-pairs 21] [--checks-only]

(``--checks-only``: only the cost of the checks, written to forward_checks.md.)
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


def check_overhead(m, model, pairs, inner=3):
    """Median over back-to-back pairs of time(checks on) / time(checks off) for ``voltages`` (and a
    jitted VJP, as in a training step). Each pair is on a fresh σ and takes, per variant, the fastest
    of ``inner`` calls made alternately (on, off, on, off, ...): on a shared machine the minimum is
    far less noisy than a single call."""
    prot = protocol.adjacent(16)
    on = ForwardModel(m, prot, electrode_model=model)
    off = on.with_checks(False)
    w = jnp.asarray(np.random.default_rng(1).standard_normal(prot.n_measurements))
    grads = {c: jax.jit(jax.grad(lambda s, f=f: jnp.sum(w * f.voltages(s)))) for c, f in (("on", on), ("off", off))}
    rng = np.random.default_rng(0)
    out = {}
    for name, fns in (("voltages", {"on": on.voltages, "off": off.voltages}), ("grad", grads)):
        for f in fns.values():
            jax.block_until_ready(f(jnp.ones(m.n_elements)))
        ratios, times = [], {"on": [], "off": []}
        for i in range(pairs):
            sigma = jnp.asarray(1.0 + rng.random(m.n_elements))
            best = {"on": np.inf, "off": np.inf}
            for k in range(inner):
                for c in (("on", "off") if (i + k) % 2 == 0 else ("off", "on")):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fns[c](sigma))
                    best[c] = min(best[c], time.perf_counter() - t0)
            for c in best:
                times[c].append(best[c])
            ratios.append(best["on"] / best["off"])
        out[name] = (float(np.median(times["on"])), float(np.median(times["off"])), float(np.median(ratios)),
                     float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75)),
                     float(np.min(times["on"]) / np.min(times["off"])))
    return on.solver, out


def checks_alone(m, calls=2000):
    """Median µs of a jitted call doing only the checks (σ, z, a (16, 16) result), and of the same call
    without them: the checks' own cost, free of the solve's noise."""
    from jaxeit.forward import model as fm_module

    def with_checks(s, z, zm):
        s, z = fm_module._check_values(s, z)
        zm = fm_module.eqx.error_if(zm, ~jnp.all(jnp.isfinite(zm)), fm_module._SINGULAR_MSG)
        return s[0] + z + zm[0, 0]

    args = (jnp.ones(m.n_elements), jnp.asarray(0.01), jnp.ones((16, 16)))
    out = []
    for f in (jax.jit(with_checks), jax.jit(lambda s, z, zm: s[0] + z + zm[0, 0])):
        jax.block_until_ready(f(*args))
        t = []
        for _ in range(calls):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            t.append(time.perf_counter() - t0)
        out.append(1e6 * float(np.median(t)))
    return out


def time_pyeit(mo, repeats):
    from pyeit.eit import protocol as pp
    from pyeit.eit.fem import EITForward

    fwd = EITForward(mo, pp.create(16, dist_exc=1, step_meas=1, parser_meas="std"))
    rng = np.random.default_rng(0)
    perm = lambda i: (1.0 + rng.random(mo.element.shape[0]),)  # noqa: E731
    return (median_time(fwd.solve_eit, repeats=repeats, args_for=perm),
            median_time(lambda p: fwd.compute_jac(p), repeats=max(2, repeats // 2), args_for=perm))


def checks_section(args) -> str:
    """Markdown section: the cost of ``checks=True`` on the forward solve (and a VJP), CEM and point model."""
    check_rows = []
    check_mesh = mesh.disk(h=GMSH_H[4000 if not args.quick else 1000])
    for model in ("cem", "point"):
        m = check_mesh if model == "cem" else check_mesh.with_electrode_nodes(None)
        solver, res = check_overhead(m, model, 5 if args.quick else args.check_pairs)
        for name, (t_on, t_off, ratio, q25, q75, best) in res.items():
            check_rows.append([m.n_nodes, model, solver, name, 1e3 * t_off, 1e3 * t_on,
                               f"{100 * (ratio - 1):+.1f} % ({100 * (q25 - 1):+.1f} … {100 * (q75 - 1):+.1f})",
                               f"{100 * (best - 1):+.1f} %"])
        print("checks", check_rows[-2:], flush=True)

    text = ""
    text += ("## Cost of the value checks (`checks=True`, the default)\n\n"
             f"{args.check_pairs if not args.quick else 5} pairs (fresh σ per pair; per variant the fastest of 3 "
             "calls made alternately on/off), "
             "`solver=\"auto\"`; `voltages` = the forward solve, `grad` = a jitted VJP of a weighted sum of the "
             "voltages (a training step's solve). Overhead = median of the per-pair ratios − 1 (quartiles in "
             "brackets); the last column compares the fastest call of each variant over the whole run, the least "
             "disturbed by the other jobs of the shared 2-core machine (load average ~13 during these runs).\n\n")
    text += markdown_table(["nodes", "model", "solver", "call", "checks off ms", "checks on ms", "overhead",
                            "fastest on / fastest off − 1"], check_rows)
    alone, empty = checks_alone(check_mesh)
    text += (f"\n\nThe checks alone ({check_mesh.n_elements} conductivities, z, the 16×16 transfer matrix) in a "
             f"jitted call: {alone:.1f} µs median against {empty:.1f} µs for the same call without them, i.e. "
             f"{alone - empty:.1f} µs per solve, "
             f"{100 * (alone - empty) * 1e-3 / min(r[4] for r in check_rows):.3f} % of the fastest "
             "forward solve above.\n")
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two smallest sizes, 2 repeats (a smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check-pairs", type=int, default=21, help="back-to-back pairs for the checks' cost")
    ap.add_argument("--checks-only", action="store_true", help="only the checks' cost -> forward_checks.md")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.checks_only:
        text = machine_header("Cost of the forward model's value checks") + "\n" + checks_section(args)
        path = args.out or RESULTS / "forward_checks.md"
        atomic_write_text(path, text)
        print(text)
        print(f"written {path}")
        return
    sizes = list(PYEIT_H0)[:2] if args.quick else list(PYEIT_H0)
    repeats = 2 if args.quick else args.repeats
    on_cpu = jax.default_backend() == "cpu"
    solvers = ["dense", "klu", "scipy", "cg"] if on_cpu else ["dense", "cg"]
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
    text += ("\n\n`solver=\"auto\"` uses KLU (klujax: SuiteSparse KLU inside XLA, no host callback) at every "
             "size on a CPU (it beat dense Cholesky at every size measured); on a GPU dense up to "
             f"{jaxeit.forward.solvers.DENSE_MAX_UNKNOWNS_GPU} unknowns and CG above. "
             "`benchmarks/results/forward_limit.md` compares the backends with SuperLU and CHOLMOD up to 20k nodes.\n")
    text += "\n" + checks_section(args)
    name = "forward.md" if on_cpu else f"forward_{dev.platform}.md"
    path = args.out or RESULTS / name
    atomic_write_text(path, text)
    print(text)
    print(f"written {path}")


if __name__ == "__main__":
    main()
