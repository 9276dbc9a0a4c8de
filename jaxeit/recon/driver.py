"""The one iterative driver of every iterative reconstruction (GN, LM, TV, TV of log σ, MAP-GN, INR fits).

A method supplies its starting state (a pytree) and a pure ``step``
(optax style: ``init`` is the caller's, ``step`` the update)::

    step(state, *args) -> (state, info, status)

``info`` is a dict of scalars recorded per iteration into ``history`` (at least
``"objective"``; ``"residual"`` is the relative data misfit ‖F(σ) − v‖/‖v‖ by
convention), ``status`` an int32 scalar: :data:`CONTINUE` or a reason to stop
(:data:`CONVERGED`, :data:`LINE_SEARCH_FAILED`, :data:`DIVERGED`). The driver
runs up to ``chunk`` iterations per compiled call in a ``lax.while_loop`` that
stops early on a status, updates a progress bar between calls, and stops for
good on a status or at ``max_iter``. A non-finite objective is ``"diverged"``:
the driver then keeps the state from before that step, so the result is the
last finite iterate (a step may instead return DIVERGED with a state it
recovered itself, as the INR fit does). ``step`` must be hashable (a module-level function or a
frozen dataclass), so repeated runs of same-sized problems reuse the compiled
loop; ``args`` are traced pytrees (the model, the data, constant matrices).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

__all__ = ["iterate", "Iteration", "CONTINUE", "CONVERGED", "LINE_SEARCH_FAILED", "DIVERGED", "STATUS",
           "line_search_status", "check_max_iter"]

CONTINUE, CONVERGED, LINE_SEARCH_FAILED, DIVERGED = 0, 1, 2, 3
#: status code → ``Result.status`` text; a run that ends with CONTINUE stopped at ``max_iter``
STATUS = {CONTINUE: "max_iter", CONVERGED: "converged", LINE_SEARCH_FAILED: "line_search_failed",
          DIVERGED: "diverged"}


class Iteration(NamedTuple):
    """What :func:`iterate` returns: the final state, per-iteration history lists, iterations run, status text."""

    state: Any
    history: dict
    n_iter: int
    status: str


def check_max_iter(max_iter, name: str = "max_iter") -> int:
    """``max_iter`` as an int ≥ 1, or a ValueError naming the bad value."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {max_iter!r}")
    return int(max_iter)


def line_search_status(f0, f_new, tol):
    """The usual stop rule of a descent step: LINE_SEARCH_FAILED when no trial step lowered the
    objective (f_new ≥ f0 or NaN: at a minimum, or a poor direction), CONVERGED when the relative
    decrease (f0 − f_new)/f0 is below ``tol``, else CONTINUE."""
    return jnp.where(~(f_new < f0), LINE_SEARCH_FAILED,
                     jnp.where(f0 - f_new < tol * f0, CONVERGED, CONTINUE)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("step", "chunk"))
def _run_chunk(step: Callable, state, args, n, *, chunk: int):
    """Up to ``n`` ≤ ``chunk`` iterations in one ``lax.while_loop``; history buffers of length ``chunk``."""
    info_shape = jax.eval_shape(lambda s: step(s, *args)[1], state)
    hist0 = jax.tree.map(lambda x: jnp.full((chunk,) + x.shape, jnp.nan, x.dtype), info_shape)

    def cond(carry):
        _, i, status, _ = carry
        return (i < n) & (status == CONTINUE)

    def body(carry):
        old, i, _, hist = carry
        new, info, status = step(old, *args)
        # a non-finite objective the step did not handle itself (by returning DIVERGED with a recovered state)
        bad = ~jnp.isfinite(info["objective"]) & (status != DIVERGED)
        status = jnp.where(bad, DIVERGED, status).astype(jnp.int32)
        new = jax.tree.map(lambda a, b: jnp.where(bad, a, b), old, new)
        hist = jax.tree.map(lambda h, x: h.at[i].set(x), hist, info)
        return new, i + 1, status, hist

    init = (state, jnp.asarray(0, jnp.int32), jnp.asarray(CONTINUE, jnp.int32), hist0)
    return jax.lax.while_loop(cond, body, init)


def iterate(step: Callable, state, args: tuple = (), *, max_iter: int, chunk: int = 16, progress: bool = False,
            desc: str | None = None) -> Iteration:
    """Run ``step`` from ``state`` until it reports a status or ``max_iter`` iterations ran.

    Args:
        step: ``step(state, *args) -> (state, info: dict of scalars, status: int32)``, hashable.
        state: the starting pytree (the method's ``init``).
        args: traced arguments of ``step``.
        max_iter: iterations at most (an int ≥ 1).
        chunk: iterations per compiled call (a static size; a fixed value means
            any ``max_iter`` reuses the same compiled loop).
        progress: show a tqdm bar, updated after each chunk.
        desc: the bar's label.

    Returns:
        :class:`Iteration` (state, history lists per ``info`` key, n_iter, status text).
    """
    max_iter = check_max_iter(max_iter)
    chunk = check_max_iter(chunk, "chunk")
    history: dict = {}
    it, status = 0, CONTINUE
    with tqdm(total=max_iter, desc=desc, disable=not progress, leave=False) as bar:
        while it < max_iter and status == CONTINUE:
            n = min(chunk, max_iter - it)
            state, k, status, hist = _run_chunk(step, state, args, jnp.asarray(n, jnp.int32), chunk=chunk)
            k, status = int(k), int(status)
            for name, values in hist.items():
                history.setdefault(name, []).extend(np.asarray(values[:k], np.float64).tolist())
            it += k
            bar.update(k)
            if "objective" in history:
                bar.set_postfix(objective=f"{history['objective'][-1]:.4g}")
    return Iteration(state, history, it, STATUS[status])


def relative_norm(r, v_norm):
    """‖r‖/‖v‖ as a float64 scalar (the relative data misfit)."""
    return jnp.linalg.norm(r) / v_norm

