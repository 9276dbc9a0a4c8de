"""One Diff-INR update step: fused (one jitted step, adjoint gradient) vs unfused (explicit Jacobian).

Same maths both ways — loss = ‖F(σ_θ) − v‖²/‖v‖² + λ·SDS(θ) on the 28 cm tank
(CEM, ~1.1k elements), the shipped diffusion prior, Adam:

* **fused** (jaxeit): ``jax.value_and_grad`` of the whole loss and the Adam
  update in one XLA program; the FEM gradient comes from the adjoint solve.
  Also the library's scanned loop (``jaxeit.recon.inr.fit``: 50 steps per call).
* **unfused** (the way the Diff-INR paper's code is organised): separate calls
  for the INR on the mesh, the forward solve *and the explicit (208, E)
  Jacobian*, Jᵀr, the INR on the grid, the diffusion network (SDS), the
  back-propagation of both gradients through the INR, and the optimiser —
  all on one device, and (with an accelerator) also with the paper's
  placement: Jacobian and diffusion network on the accelerator, everything
  else on the CPU (its §IV), transfers included.

The script first checks that both give the same gradient (relative difference
printed in the report), then times ms/step (medians over repeated blocks).

    python benchmarks/gpu/diffinr_step.py [--quick]     # → results/gpu_diffinr_step_<cpu|gpu>.md
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu import disk_mesh, markdown_table, write_report  # noqa: E402

from jaxeit import ForwardModel, phantoms, protocol  # noqa: E402
from jaxeit.recon.diffinr import SDSRegularizer  # noqa: E402
from jaxeit.recon.inr.bandwidth import bandwidth_for_mesh  # noqa: E402
from jaxeit.recon.driver import _run_chunk  # noqa: E402
from jaxeit.recon.inr.fit import INRConfig, _INRStep, _loss, _optimizer, make_problem  # noqa: E402
from jaxeit.recon.inr.model import INR  # noqa: E402
from jaxeit.priors import load_pretrained  # noqa: E402

R, WIDTH, Z = 0.14, 0.025, 6e-3   # the tank of benchmarks/inr.py and diff_inr.py
SDS_WEIGHT = 3e-3                  # jaxeit.recon.diffinr default


@dataclasses.dataclass
class StepProblem:
    model: ForwardModel
    v: jax.Array
    prob: object
    sds: SDSRegularizer
    graphdef: object
    params: object
    rest: object
    opt: optax.GradientTransformation
    config: INRConfig


def build(h: float) -> StepProblem:
    mesh = disk_mesh(h * R, radius=R, electrode_width=WIDTH)
    model = ForwardModel(mesh, protocol.adjacent(16), contact_impedance=Z)
    v = model.voltages(phantoms.on_mesh(phantoms.thorax(R), mesh))
    prior = load_pretrained()
    cfg = INRConfig(grid_size=prior.image_size)
    prob, _ = make_problem(model, v, cfg.grid_size)
    sds = SDSRegularizer(prior, np.asarray(prob.mask))
    inr = INR(bandwidth=bandwidth_for_mesh(mesh, cfg.kappa), background=prob.background, n_features=cfg.n_features,
              width=cfg.width, depth=cfg.depth, rngs=nnx.Rngs(params=jax.random.PRNGKey(0)))
    prob = prob.with_features(inr.features)      # as jaxeit.inr.fit does: B is fixed, features computed once
    graphdef, params, rest = nnx.split(inr, nnx.Param, ...)
    return StepProblem(model, v, prob, sds, graphdef, params, rest, _optimizer(cfg, 600.0), cfg)


def fused_step(p: StepProblem):
    """``step(params, opt_state, key) -> (params, opt_state, loss)``: one XLA program."""
    loss_fn = functools.partial(_loss, graphdef=p.graphdef, rest=p.rest, model=p.model, v=p.v, prob=p.prob,
                                regs=(p.sds,), weights=jnp.asarray([SDS_WEIGHT], jnp.float32))

    @jax.jit
    def step(params, opt_state, key):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, key)
        updates, opt_state = p.opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    grad = jax.jit(lambda params, key: jax.grad(lambda q: loss_fn(q, key)[0])(params))
    return step, grad


def unfused_step(p: StepProblem, host=None):
    """The same update as separate calls with an explicit Jacobian; returns ``(step, grad, place)``.

    With ``host`` (a CPU device) the calls are placed as the Diff-INR paper places them (§IV: "the
    diffusion model and computing Jacobian on [the] GPU … all other computations … on [the] CPU"):
    the INR, Jᵀr, back-propagation and Adam run on ``host``; the forward solve with the Jacobian and
    the diffusion network on the default device, with the transfers that implies. ``place(params)``
    puts the parameters where the step expects them.
    """
    prob, sds = p.prob, p.sds
    accel = jax.devices()[0]
    to_accel = (lambda x: x) if host is None else (lambda x: jax.device_put(x, accel))
    to_host = (lambda x: x) if host is None else (lambda x: jax.device_put(x, host))

    def inr(params):
        return nnx.merge(p.graphdef, params, p.rest)

    def sigma_of(params):                                   # (E,) float32, from the nodal values
        return jnp.exp(prob.element_log_sigma(inr(params).log_sigma(prob.points)))

    def x_of(params):                                       # the prior's normalised image (n, n)
        log_nodes = inr(params).log_sigma(prob.points)
        return sds.normalise(prob.relative_image(log_nodes).astype(log_nodes.dtype))

    sigma_call = jax.jit(sigma_of)
    x_call = jax.jit(x_of)
    fwd_and_jacobian = jax.jit(lambda s: (p.model.voltages(s.astype(jnp.float64)),
                                          p.model.jacobian(s.astype(jnp.float64))))
    data_grad = jax.jit(lambda vp, J: (2.0 / prob.v_norm2) * (J.T @ (vp - p.v)))

    @jax.jit
    def sds_grad(x, key):                                   # the diffusion network call
        k = jax.random.split(key, 1)[0]                     # the fused loss's per-regulariser key
        t, eps, _, eps_hat = sds.sample(x, k)
        a = sds.alphas_cumprod[t]
        w = 1.0 if sds.weighting == "constant" else jnp.sqrt(1 - a) / jnp.sqrt(a)
        return SDS_WEIGHT * w * (eps_hat - eps) / x.size

    @jax.jit
    def backprop(params, g_sigma, g_x):
        _, vjp_s = jax.vjp(sigma_of, params)
        _, vjp_x = jax.vjp(x_of, params)
        return jax.tree_util.tree_map(jnp.add, vjp_s(g_sigma.astype(jnp.float32))[0], vjp_x(g_x)[0])

    @jax.jit
    def update(params, opt_state, grads):
        updates, opt_state = p.opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def grad(params, key):
        vp, J = fwd_and_jacobian(to_accel(sigma_call(params)))
        g_x = to_host(sds_grad(to_accel(x_call(params)), to_accel(key)))
        return backprop(params, data_grad(to_host(vp), to_host(J)), g_x)

    def step(params, opt_state, key):
        params, opt_state = update(params, opt_state, grad(params, key))
        return params, opt_state, None

    return step, grad, to_host


def relative_difference(a, b) -> float:
    """‖a − b‖ / ‖a‖ over all leaves of two gradient pytrees (compared on the host)."""
    la, lb = (jax.tree_util.tree_leaves(jax.device_get(t)) for t in (a, b))
    num = sum(float(np.sum((np.asarray(x) - np.asarray(y)) ** 2)) for x, y in zip(la, lb))
    return (num / sum(float(np.sum(np.asarray(x) ** 2)) for x in la)) ** 0.5


def per_step_ms(step, p: StepProblem, n_steps: int, blocks: int, place=lambda x: x) -> float:
    params = place(p.params)
    opt_state = p.opt.init(params)
    params, opt_state, _ = step(params, opt_state, jax.random.PRNGKey(0))          # compile
    jax.block_until_ready(params)
    times = []
    for b in range(blocks):
        t0 = time.perf_counter()
        for i in range(n_steps):
            params, opt_state, _ = step(params, opt_state, jax.random.PRNGKey(1000 * b + i))
        jax.block_until_ready(params)
        times.append((time.perf_counter() - t0) / n_steps)
    return 1e3 * float(np.median(times))


def scanned_ms(p: StepProblem, blocks: int) -> float:
    """ms/iteration of the library's own loop (the driver's ``_run_chunk``: ``config.chunk`` steps per call)."""
    cfg = dataclasses.replace(p.config, max_iter=1, divergence_factor=1e30)  # timing only: never stop early
    step = _INRStep(p.graphdef, cfg)
    state = _INRStep.initial_state(p.params, p.opt.init(p.params))
    args = (p.rest, p.model, p.v, p.prob, (p.sds,), jnp.asarray([SDS_WEIGHT], jnp.float32),
            jnp.asarray(600.0, jnp.float32), jax.random.PRNGKey(0))
    n = jnp.asarray(cfg.chunk, jnp.int32)
    out = _run_chunk(step, state, args, n, chunk=cfg.chunk)
    jax.block_until_ready(out)
    state = out[0]
    times = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        state = _run_chunk(step, state, args, n, chunk=cfg.chunk)[0]
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t0) / cfg.chunk)
    return 1e3 * float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="coarse mesh, few steps (CPU smoke run)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    h = 0.2 if args.quick else 0.1             # element size as a fraction of R (0.1: ~1.1k elements)
    n_steps, blocks = (5, 2) if args.quick else (50, 5)
    p = build(h)
    f_step, f_grad = fused_step(p)
    u_step, u_grad, _ = unfused_step(p)
    # the paper's placement needs an accelerator beside the CPU; on a CPU-only machine it is the row above
    accelerated = jax.default_backend() != "cpu"
    p_step, p_grad, p_place = unfused_step(p, host=jax.devices("cpu")[0]) if accelerated else (None, None, None)
    key = jax.random.PRNGKey(7)
    gf = f_grad(p.params, key)
    rel = relative_difference(gf, u_grad(p.params, key))
    print(f"relative gradient difference fused vs unfused: {rel:.2e}", flush=True)
    if accelerated:
        rel = max(rel, relative_difference(gf, p_grad(p_place(p.params), key)))
    if not rel < 1e-3:
        raise SystemExit(f"fused and unfused gradients differ (relative {rel:.2e}): not the same maths")
    t_fused = per_step_ms(f_step, p, n_steps, blocks)
    t_unfused = per_step_ms(u_step, p, n_steps, blocks)
    t_scan = scanned_ms(p, 2 if args.quick else blocks)
    rows = [["fused: one jitted step (value_and_grad + Adam), adjoint gradient", f"{t_fused:.3f}", "1.0"],
            ["fused, library loop (`jaxeit.recon.inr.fit`, 50 steps per call)", f"{t_scan:.3f}",
             f"{t_fused / t_scan:.2f}"],
            ["unfused: 7 calls, explicit (208, E) Jacobian", f"{t_unfused:.3f}", f"{t_fused / t_unfused:.2f}"]]
    if accelerated:
        t_paper = per_step_ms(p_step, p, n_steps, blocks, place=p_place)
        rows.append(["unfused, the paper's placement (Jacobian + diffusion on the accelerator, INR, Jᵀr and "
                     "Adam on the CPU)", f"{t_paper:.3f}", f"{t_fused / t_paper:.2f}"])
    else:
        rows.append(["unfused, the paper's placement (Jacobian + diffusion on the accelerator, the rest on "
                     "the CPU)", "not run: no accelerator", "–"])
    body = (f"Tank of radius {R} m, CEM mesh with {p.model.mesh.n_elements} elements "
            f"({p.model.mesh.n_nodes} nodes, solver `{p.model.solver}`), shipped prior "
            f"({p.sds.mask.shape[0]}×{p.sds.mask.shape[1]} px), INR {p.config.n_features} features, "
            f"{p.config.depth}×{p.config.width} MLP; λ_SDS = {SDS_WEIGHT}. Median over {blocks} blocks of "
            f"{n_steps} steps, after compilation.\n\n"
            f"Relative difference of the fused and unfused gradients (same key): {rel:.1e}.\n\n"
            + markdown_table(["step", "ms/step", "speed vs fused step"], rows)
            + f"\n\n**fused / unfused speed-up: {t_unfused / t_fused:.1f}×** (library loop: "
              f"{t_unfused / t_scan:.1f}×)"
            + (f"; against the paper's placement: **{t_paper / t_fused:.1f}×**.\n" if accelerated else ".\n"))
    write_report("diffinr_step", "Diff-INR update step: fused vs unfused", body, args.out)


if __name__ == "__main__":
    main()
