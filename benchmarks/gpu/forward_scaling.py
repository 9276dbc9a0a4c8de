"""Forward model and Jacobian per solver backend vs mesh size; batched forward throughput.

Complete electrode model on gmsh disks (16 electrodes, adjacent drive, 208
measurements) from ~1k to ~20k nodes. For each backend ("dense" Cholesky,
"klu" SuiteSparse KLU inside XLA — CPU only, "cg" preconditioned conjugate gradients,
"scipy" host sparse LU — CPU only): median ms of all voltages and of the full (208, E)
Jacobian. A backend is skipped above the size where it is known to be
impractical on the device (see ``LIMITS``). Then batched throughput of
``vmap(voltages)`` (conductivities/s) vs batch size on a ~1k-node mesh, and the
crossover ``solver="auto"`` uses.

    python benchmarks/gpu/forward_scaling.py [--quick]     # → results/gpu_forward_<cpu|gpu>.md
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu import disk_mesh, markdown_table, platform, timed, write_report  # noqa: E402

from jaxeit import ForwardModel, protocol  # noqa: E402
from jaxeit.forward import model as fm_module  # noqa: E402
from jaxeit.forward import solvers  # noqa: E402

H_LIST = (0.1, 0.05, 0.025, 0.014)   # ≈ 1k, 2.3k, 6.8k, 19.7k nodes
#: largest node count per backend and platform worth timing (dense is O(n³) on a CPU)
LIMITS = {"cpu": {"dense": 5000, "klu": 25000, "cg": 25000, "scipy": 25000},
          "gpu": {"dense": 25000, "cg": 25000}}
BATCHES = (1, 8, 64, 256, 1024)


def at_fresh_sigma(fn, sigma):
    """``fn`` at a slightly different σ on every call: the ``scipy`` backend caches factors by the matrix
    bytes, so a repeated σ would time a cache hit instead of a factorisation."""
    count = itertools.count(1)
    return lambda: fn(sigma * (1.0 + 1e-9 * next(count)))


def scaling_rows(hs, repeats, rows):
    """Appends one row per mesh to ``rows`` (so a stopped run keeps the finished ones); returns the header."""
    plat = platform()
    backends = list(LIMITS[plat])
    prot = protocol.adjacent(16)
    rng = np.random.default_rng(0)
    for h in hs:
        m = disk_mesh(h)
        sigma = jnp.asarray(1.0 + rng.random(m.n_elements))
        row = [m.n_nodes, m.n_elements]
        fwd, jac = {}, {}
        for b in backends:
            if m.n_nodes > LIMITS[plat][b]:
                fwd[b] = jac[b] = float("nan")
                continue
            fm = ForwardModel(m, prot, solver=b)
            fwd[b] = 1e3 * timed(at_fresh_sigma(fm.voltages, sigma), repeats=repeats)
            jac[b] = 1e3 * timed(at_fresh_sigma(fm.jacobian, sigma), repeats=max(2, repeats // 2))
            print(f"  {m.n_nodes} nodes {b}: fwd {fwd[b]:.2f} ms, jac {jac[b]:.2f} ms", flush=True)
        auto = ForwardModel(m, prot).solver    # what solver="auto" resolves to here
        rows.append(row + [fwd[b] for b in backends] + [jac[b] for b in backends] + [auto])
    return ["nodes", "elements"] + [f"{b} fwd" for b in backends] + [f"{b} jac" for b in backends] + ["auto"]


def throughput_rows(m, batches, repeats, rows):
    """The library's batched call ``model.voltages((B, E))`` and, on a CPU, a plain ``jax.vmap`` of the
    single call (on an accelerator the batched call is that vmap). The model is an argument, not a
    closed-over constant, as in a user's jitted function."""
    fm = ForwardModel(m, protocol.adjacent(16))
    library = jax.jit(lambda model, s: model.voltages(s))
    vmapped = jax.jit(lambda model, s: jax.vmap(model.voltages)(s))
    rng = np.random.default_rng(1)
    for b in batches:
        s = jnp.asarray(1.0 + rng.random((b, m.n_elements)))
        t = timed(library, fm, s, repeats=repeats)
        tv = timed(vmapped, fm, s, repeats=repeats) if platform() == "cpu" else t
        rows.append([b, 1e3 * t, b / t, b / tv])
        print(f"  batch {b}: {b / t:.1f} conductivities/s (vmap {b / tv:.1f})", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two smallest meshes, small batches (CPU smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    hs = H_LIST[:2] if args.quick else H_LIST
    batches = BATCHES[:3] if args.quick else BATCHES
    repeats = 2 if args.quick else args.repeats
    rows, trows, note = [], [], ""
    header = ["nodes", "elements"]
    m = disk_mesh(H_LIST[0])
    try:
        header = scaling_rows(hs, repeats, rows)
        throughput_rows(m, batches, repeats, trows)
    except KeyboardInterrupt:   # stopped at a time limit: report what finished
        note = "\n**Stopped before the end (time limit): the tables hold the finished rows only.**\n"
    body = (note +"Median wall time in ms (after compilation, a new σ every call), complete electrode model, 16 electrodes, adjacent drive, "
            "208 measurements; `fwd` = all voltages, `jac` = full (208, E) Jacobian by the adjoint method; "
            "nan = not timed at that size (impractical for the backend on this device).\n\n"
            + markdown_table(header, rows)
            + f"\n\n## Batched forward throughput ({m.n_nodes} nodes, {m.n_elements} elements, `solver=\"auto\"`)\n\n"
            + markdown_table(["batch", "ms per batch", "conductivities/s", "conductivities/s, jax.vmap"], trows)
            + "\n\nThe batched call `model.voltages((B, E))` is one `vmap` on an accelerator and runs in groups "
              f"of {fm_module.CPU_BATCH_GROUP} (`lax.map`) on a CPU, where a vmapped batch slows down per sample "
              "as it grows."
            + f"\n\n`solver=\"auto\"` on this device: see the `auto` column (CPU: dense up to "
              f"{solvers.DENSE_MAX_UNKNOWNS_CPU} unknowns, then klu; accelerator: dense up to "
              f"{solvers.DENSE_MAX_UNKNOWNS_GPU} unknowns, then CG).\n")
    write_report("forward", "Forward model and Jacobian vs mesh size, per backend", body, args.out)


if __name__ == "__main__":
    main()
