"""Where the time of the hot paths goes: the Diff-INR update step and the forward solve, part by part.

1. **Diff-INR step** (the set-up of ``diffinr_step.py``: 28 cm tank, CEM, the
   shipped prior, Adam). Each part is jitted on its own, on the inputs the
   fused step sees: the INR MLP on all evaluation points (forward + backward),
   the FEM data loss (forward solve + adjoint), the SDS term (one diffusion
   network call), the Adam update; then the fused step itself. The gap between
   the sum of the parts and the fused step is what one XLA program saves.
2. **Forward solve** per backend and mesh size: assembling A(σ), factorising
   it, solving for the L unit-current fields, and turning them into the 208
   voltages — so the backend crossover of ``solver="auto"`` can be read off
   the part that grows.

With ``--trace DIR`` a ``jax.profiler`` trace of a few fused steps is written
too (open it in Perfetto or TensorBoard) for an op-level view.

    python benchmarks/gpu/profile_hot_paths.py [--quick] [--trace DIR]  # → results/gpu_profile_<cpu|gpu>.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu import disk_mesh, markdown_table, platform, timed, write_report  # noqa: E402
from diffinr_step import SDS_WEIGHT, build, fused_step  # noqa: E402

from jaxeit import ForwardModel, protocol  # noqa: E402
from jaxeit.forward import model as fm_module  # noqa: E402
from jaxeit.forward import solvers  # noqa: E402
from jaxeit.recon.inr.fit import data_loss  # noqa: E402
from flax import nnx  # noqa: E402

#: backends profiled per platform (the ones ``solver="auto"`` chooses between, and CG everywhere)
BACKENDS = {"cpu": ("dense", "klu", "cg"), "gpu": ("dense", "cg")}
DENSE_MAX_NODES = {"cpu": 5000, "gpu": 25000}


def step_parts(p, repeats: int):
    """Rows [part, ms, share of the fused step] for the Diff-INR step of problem ``p``."""
    prob, model, v = p.prob, p.model, p.v
    key = jax.random.PRNGKey(3)

    def log_sigma(params):              # the MLP on all evaluation points (centroids + grid pixels)
        inr = nnx.merge(p.graphdef, params, p.rest)
        return inr.log_sigma_of_features(prob.features, prob.feature_basis)

    sigma_all = jnp.exp(log_sigma(p.params))
    sigma = sigma_all[: prob.n_centroids]
    inside = sigma_all[prob.n_centroids:] / prob.background
    image = jnp.ones(prob.mask.size, inside.dtype).at[prob.grid_index].set(inside).reshape(prob.grid_shape)
    cot = jnp.ones_like(sigma_all)

    inr_fb = jax.jit(lambda q: jax.vjp(log_sigma, q)[1](cot))
    fem_fb = jax.jit(jax.value_and_grad(lambda s: data_loss(model, s, v, prob.v_norm2)))
    fem_f = jax.jit(lambda s: data_loss(model, s, v, prob.v_norm2))
    sds_fb = jax.jit(jax.value_and_grad(lambda x: SDS_WEIGHT * p.sds(x, key)))
    grads = jax.tree_util.tree_map(jnp.ones_like, p.params)
    opt_state = p.opt.init(p.params)
    adam = jax.jit(lambda g, s, q: p.opt.update(g, s, q))
    step, _ = fused_step(p)

    parts = [("INR: MLP on all points, forward + backward", inr_fb, (p.params,)),
             ("FEM data loss: forward solve + adjoint (value_and_grad in σ)", fem_fb, (sigma,)),
             ("  of which the forward solve alone", fem_f, (sigma,)),
             ("SDS: diffusion network call (value_and_grad in the image)", sds_fb, (image,)),
             ("Adam update", adam, (grads, opt_state, p.params))]
    times = {name: 1e3 * timed(fn, *args, repeats=repeats) for name, fn, args in parts}
    t_step = 1e3 * timed(step, p.params, opt_state, key, repeats=repeats)
    rows = [[name, f"{t:.3f}", f"{100 * t / t_step:.0f}%"] for name, t in times.items()]
    total = sum(t for name, t in times.items() if not name.startswith("  "))
    rows += [["sum of the parts (separate calls)", f"{total:.3f}", f"{100 * total / t_step:.0f}%"],
             ["**fused step** (one XLA program)", f"{t_step:.3f}", "100%"]]
    return rows


def forward_parts(m, backend: str, repeats: int):
    """ms of assembly, factorisation, L-field solve and measurement for one mesh and backend."""
    model = ForwardModel(m, protocol.adjacent(16), solver=backend)
    disc, z = model.disc, model.contact_impedance
    sigma = jnp.asarray(1.0 + np.random.default_rng(0).random(m.n_elements))
    assemble = jax.jit(lambda s: fm_module._matrix_values(disc, s, z))
    values = assemble(sigma)
    rhs = jnp.asarray(disc.electrode_rhs, values.dtype)
    n = disc.n_unknowns
    if backend == "dense":
        factor = jax.jit(lambda a: solvers._dense_factor(a, disc.rows, disc.cols, n))
        solve = jax.jit(solvers._dense_solve)
    elif backend == "klu":   # KLU factorises and solves in one call: both are the solve
        factor = jax.jit(lambda a: a)
        solve = jax.jit(lambda a, r: solvers._klu_solve(a, disc.rows, disc.cols, r, disc.klu_symbolic))
    else:   # CG has no factorisation: the whole iteration is the solve
        factor = jax.jit(lambda a: a)
        solve = jax.jit(lambda a, r: solvers._cg_solve(a, disc.rows, disc.cols, r, n, model.cg_tol, 10 * n))
    fac = factor(values)
    fields = solve(fac, rhs)
    measure = jax.jit(lambda f: fm_module.measure(disc, f))

    # the parts must add up to the library call, or the profile is of something else
    v_parts, v_lib = np.asarray(measure(fields)), np.asarray(model.voltages(sigma))
    rel = np.linalg.norm(v_parts - v_lib) / np.linalg.norm(v_lib)
    if not rel < 1e-6:
        raise SystemExit(f"{backend} on {m.n_nodes} nodes: parts give other voltages than the library "
                         f"(relative difference {rel:.1e})")
    t = [1e3 * timed(assemble, sigma, repeats=repeats), 1e3 * timed(factor, values, repeats=repeats),
         1e3 * timed(solve, fac, rhs, repeats=repeats), 1e3 * timed(measure, fields, repeats=repeats),
         1e3 * timed(model.voltages, sigma, repeats=repeats)]
    return [m.n_nodes, backend] + [f"{x:.2f}" for x in t] + [f"{100 * t[1] / t[4]:.0f}%"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="coarse meshes, few repeats (CPU smoke run)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--trace", type=Path, default=None, help="also write a jax.profiler trace here")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 10)
    plat = platform()
    p = build(0.2 if args.quick else 0.1)
    srows = step_parts(p, repeats)
    for r in srows:
        print(" | ".join(r), flush=True)
    if args.trace:
        step, _ = fused_step(p)
        params, state = p.params, p.opt.init(p.params)
        params, state, _ = step(params, state, jax.random.PRNGKey(0))
        with jax.profiler.trace(str(args.trace)):
            for i in range(5):
                params, state, loss = step(params, state, jax.random.PRNGKey(i))
            jax.block_until_ready(loss)
        print(f"trace written under {args.trace}")
    hs = (0.1, 0.05) if args.quick else (0.1, 0.05, 0.025, 0.014)
    frows = []
    for h in hs:
        m = disk_mesh(h)
        for b in BACKENDS[plat]:
            if b == "dense" and m.n_nodes > DENSE_MAX_NODES[plat]:
                continue
            frows.append(forward_parts(m, b, repeats))
            print(frows[-1], flush=True)
    top = max((r for r in srows[:-2] if not r[0].startswith("  ")), key=lambda r: float(r[1]))
    body = (f"Median ms after compilation ({repeats} repeats), each part jitted on its own.\n\n"
            f"## 1. Diff-INR update step\n\nMesh of {p.model.mesh.n_elements} elements ({p.model.mesh.n_nodes} "
            f"nodes, solver `{p.model.solver}`), INR {p.config.n_features} features "
            f"({'factored' if p.prob.feature_basis is not None else 'dense'}), {p.config.depth}×{p.config.width} "
            f"MLP on {p.prob.points.shape[0]} points, prior {p.sds.mask.shape[0]}×{p.sds.mask.shape[1]} px.\n\n"
            + markdown_table(["part", "ms", "share of the fused step"], srows)
            + f"\n\nLargest part: {top[0]} ({top[2]} of the fused step)."
            + "\n\n## 2. Forward solve, part by part (16 electrodes, adjacent drive, 208 voltages)\n\n"
              "`fields` = the L = 16 unit-current solves with the factor (CG: the whole iteration); "
              "`measure` = electrode potentials → 208 voltages; `voltages` = the library call, all parts in "
              "one program.\n\n"
            + markdown_table(["nodes", "backend", "assemble A(σ)", "factorise", "fields (16 solves)",
                              "measure", "voltages (all)", "factorise / all"], frows) + "\n")
    write_report("profile", "Hot paths, part by part", body, args.out)


if __name__ == "__main__":
    main()
