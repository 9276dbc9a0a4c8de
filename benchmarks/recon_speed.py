"""End-to-end reconstruction speed on the protocol's tank, and where an iteration's time goes.

The 28 cm tank of ``benchmarks/_protocol.py`` (inverse mesh h = 0.06 R), thorax cases of the
validation split at 50 dB. Two tables:

1. **Per case**, every method at its defaults: the first call (tracing and compilation included)
   and the median of the warm calls on the other cases, the iterations and the ms per iteration.
2. **Per iteration**, each part jitted on its own at a realistic σ (the TV result of a case):
   the forward solve, the Jacobian, the line search's five trial solves, the GN / TV normal
   equations by Woodbury (``jaxeit.recon.normal``) next to forming JᵀJ + a dense Cholesky; and
   for the INR fits the MLP at the nodes (value and gradient), the FEM data loss with its
   gradient, one call of the diffusion prior (SDS), against the whole fused step.

    python benchmarks/recon_speed.py [--cases 4] [--repeats 5]   # → results/recon_speed.md
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
import _protocol as P  # noqa: E402
from _common import RESULTS, machine_header, markdown_table, median_time  # noqa: E402

from flax import nnx  # noqa: E402

from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.priors import load_pretrained  # noqa: E402
from jaxeit.recon import reconstruct  # noqa: E402
from jaxeit.recon.diffinr import SDSRegularizer  # noqa: E402
from jaxeit.recon.inr.bandwidth import DEFAULT_KAPPA, bandwidth_for_mesh  # noqa: E402
from jaxeit.recon.inr.fit import data_loss, domain_grid, make_problem  # noqa: E402
from jaxeit.recon.inr.model import INR  # noqa: E402
from jaxeit.recon.linear import prior_triplets  # noqa: E402
from jaxeit.recon.normal import SparsePattern, solve_normal  # noqa: E402
from jaxeit.grid import domain_mask  # noqa: E402

METHODS = ("one-step", "gn", "tv", "inr+tv", "diff-inr")


def per_case(problem, cases, log):
    rows = []
    for method in METHODS:
        times, iters = [], []
        for i, case in enumerate(cases):
            v = P.noisy(case, 50.0, "val")
            t0 = time.perf_counter()
            res = reconstruct(problem.inv, v, method, grid=problem.grid)
            times.append(time.perf_counter() - t0)
            iters.append(res.n_iter)
            log(f"{method} case {i}: {times[-1]:.2f} s, {res.n_iter} iterations")
        warm = float(np.median(times[1:]))
        rows.append([method, f"{times[0]:.2f}", f"{warm:.2f}", f"{np.median(iters[1:]):.0f}",
                     f"{1e3 * warm / max(np.median(iters[1:]), 1):.1f}"])
    return rows


def per_iteration(problem, case, repeats, log):
    fm = problem.inv
    v = jnp.asarray(P.noisy(case, 50.0, "val"))
    sigma = jnp.asarray(reconstruct(fm, v, "tv").sigma)
    rng = np.random.default_rng(0)
    fresh = lambda i: (sigma * (1 + 0.01 * rng.standard_normal(sigma.shape[0])),)  # noqa: E731
    rows = []

    def add(name, fn, args_for=fresh):
        ms = 1e3 * median_time(jax.jit(fn), repeats=repeats, args_for=args_for)
        rows.append([name, f"{ms:.2f}"])
        log(f"{name}: {ms:.2f} ms")

    add("forward solve (all 208 voltages)", fm.voltages)
    add("Jacobian (208 × E, reciprocity)", fm.jacobian)
    add("line search: 5 trial forward solves", lambda s: jax.vmap(fm.voltages)(s[None] * jnp.linspace(0.9, 1.1, 5)[:, None]))
    jac = fm.jacobian(sigma)
    g = jac.T @ (fm.voltages(sigma) - v)
    rows_, cols_, vals_ = prior_triplets(fm.mesh, "laplace")
    pattern = SparsePattern.from_triplets(rows_, cols_, fm.n_elements, fm.solver)
    r = pattern.values(jnp.asarray(vals_)) * float(jnp.mean(jnp.sum(jac**2, 0)))
    dense_r = jnp.zeros((fm.n_elements, fm.n_elements)).at[pattern.rows, pattern.cols].add(r)
    jac_args = lambda i: (jac * (1 + 1e-3 * i), g)  # noqa: E731
    add("normal equations, Woodbury + refinement (GN)", lambda j, b: solve_normal(j, pattern, r, b), jac_args)
    add("normal equations, JᵀJ + dense Cholesky (before)",
        lambda j, b: jax.scipy.linalg.solve(j.T @ j + dense_r, b, assume_a="pos"), jac_args)

    # the INR fit's parts, at the shipped prior's grid
    prior = load_pretrained()
    prob, _ = make_problem(fm, v, prior.image_size)
    inr = INR(bandwidth=bandwidth_for_mesh(fm.mesh, DEFAULT_KAPPA), background=prob.background, rngs=nnx.Rngs(0))
    prob = prob.with_features(inr.features)
    graphdef, params, rest = nnx.split(inr, nnx.Param, ...)
    mlp = lambda p: jnp.sum(nnx.merge(graphdef, p, rest).log_sigma_of_features(prob.features, prob.feature_basis))  # noqa: E731
    add(f"INR MLP at the {fm.mesh.n_nodes} nodes, value and gradient", jax.value_and_grad(mlp),
        lambda i: (jax.tree.map(lambda x: x * (1 + 1e-4 * i), params),))
    loss = lambda s: data_loss(fm.with_checks(False), s, v, prob.v_norm2)  # noqa: E731
    add("FEM data loss, value and gradient", jax.value_and_grad(loss))
    sds = SDSRegularizer(prior, domain_mask(domain_grid(fm.mesh, prior.image_size), fm.mesh))
    image = jnp.ones((prior.image_size, prior.image_size), jnp.float32)
    add(f"SDS: one call of the {prior.image_size}×{prior.image_size} prior", lambda x, k: sds(x, k),
        lambda i: (image * (1 + 1e-3 * i), jax.random.PRNGKey(i + 10)))
    res = reconstruct(fm, v, "diff-inr")   # warm: the fused step over all iterations
    t0 = time.perf_counter()
    res = reconstruct(fm, v, "diff-inr")
    rows.append(["Diff-INR fused step (whole reconstruction / iterations)",
                 f"{1e3 * (time.perf_counter() - t0) / res.n_iter:.2f}"])
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=4, help="thorax validation cases (the first is the cold call)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS / "recon_speed.md")
    args = ap.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    problem = P.tank_problem()
    cases = P.make_cases(problem, "val", "thorax", args.cases)
    case_rows = per_case(problem, cases, log)
    part_rows = per_iteration(problem, cases[-1], args.repeats, log)
    text = "\n".join([
        machine_header("Reconstruction speed: per case and per iteration"),
        f"28 cm tank, 16 electrodes, CEM, inverse mesh h = {P.H_INVERSE} R: {problem.coarse.n_nodes} nodes, "
        f"{problem.coarse.n_elements} elements; thorax cases of the validation split at 50 dB; every method at "
        "its defaults, rendered on the 128 × 128 grid. `first call` includes tracing and XLA compilation "
        "(no persistent cache); `warm` is the median over the other cases.", "",
        "## Per case", "",
        markdown_table(["method", "first call s", "warm s", "iterations", "ms / iteration"], case_rows), "",
        "## Per iteration: the parts, each jitted alone (median ms, fresh inputs per call)", "",
        markdown_table(["part", "ms"], part_rows), "",
        "GN and LM solve the normal equations once per iteration, TV (PD-IPM) once per iteration with "
        "its edge weights; the INR fits run the MLP, the FEM loss and (Diff-INR) the prior once per Adam "
        "step, fused in one XLA program.", ""])
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
