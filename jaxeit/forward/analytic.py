"""Semi-analytic CEM solution on a homogeneous disk (reference for validating the FEM).

On a disk of radius R with constant σ, every harmonic u is
u = a₀ + Σ_{n≤N} (r/R)ⁿ (a_n cos nθ + b_n sin nθ). The CEM solution minimises

    ½σ∫|∇u|² + ½Σ_l z_l⁻¹ ∫_{e_l} (u − U_l)² ds − Σ_l I_l U_l,  Σ_l U_l = 0,

(Somersalo, Cheney, Isaacson 1992). Over the truncated basis this is a
quadratic problem: the interior energy is diagonal (σπ n) and the electrode
terms are integrals of products of cos/sin over arcs, in closed form. The
ground is a Lagrange multiplier. Edge singularities make the electrode
potentials converge algebraically in N (about N⁻²); a few thousand modes
give ~1e-6 relative accuracy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["disk_cem_potentials"]


def _arc_cos_sin_integrals(k: np.ndarray, alpha: np.ndarray, beta: np.ndarray, weight: np.ndarray):
    """Σ_l w_l ∫_{α_l}^{β_l} cos(kθ) dθ and the same for sin, for integer k ≥ 0: two (len(k),) arrays."""
    k = k[:, None].astype(np.float64)
    safe = np.where(k == 0, 1.0, k)
    c = np.where(k == 0, beta - alpha, (np.sin(k * beta) - np.sin(k * alpha)) / safe)
    s = np.where(k == 0, 0.0, (np.cos(k * alpha) - np.cos(k * beta)) / safe)
    return c @ weight, s @ weight


def disk_cem_potentials(currents, *, radius: float = 1.0, sigma: float = 1.0, contact_impedance=0.01,
                        electrode_width: float = 0.2, offset: float = 0.0, n_modes: int = 2000) -> np.ndarray:
    """Electrode potentials of the CEM on a homogeneous disk, by a Fourier Ritz–Galerkin method.

    Args:
        currents: (P, L) float64 injected currents (rows sum to zero).
        radius, sigma: disk radius and conductivity.
        contact_impedance: z, scalar or (L,).
        electrode_width: electrode arc length (units of ``radius``); electrode l
            is centred at angle ``offset + 2πl/L``.
        n_modes: Fourier modes N.

    Returns:
        (P, L) float64 electrode potentials, each row summing to zero.
    """
    currents = np.atleast_2d(np.asarray(currents, np.float64))
    n_el = currents.shape[1]
    z = np.broadcast_to(np.asarray(contact_impedance, np.float64), (n_el,))
    centres = offset + 2 * np.pi * np.arange(n_el) / n_el
    half = 0.5 * electrode_width / radius
    alpha, beta = centres - half, centres + half
    w = radius / z  # ds = R dθ

    n = np.arange(n_modes + 1)
    ck, sk = _arc_cos_sin_integrals(np.arange(2 * n_modes + 1), alpha, beta, w)
    diff, summ = np.abs(n[:, None] - n[None, :]), n[:, None] + n[None, :]
    sign = np.sign(n[:, None] - n[None, :])
    g_cc = 0.5 * (ck[diff] + ck[summ])
    g_ss = 0.5 * (ck[diff] - ck[summ])[1:, 1:]
    g_cs = 0.5 * (sk[summ] - sign * sk[diff])[:, 1:]  # ∫ cos(nθ) sin(mθ), m ≥ 1
    # ∫_{e_l} cos(nθ) and sin(nθ) per electrode (unweighted), for the u–U coupling
    kk = n[:, None].astype(np.float64)
    safe = np.where(kk == 0, 1.0, kk)
    int_c = np.where(kk == 0, beta - alpha, (np.sin(kk * beta) - np.sin(kk * alpha)) / safe)
    int_s = ((np.cos(kk * alpha) - np.cos(kk * beta)) / safe)[1:]

    n_c, n_s = n_modes + 1, n_modes
    size = n_c + n_s + n_el + 1
    h = np.zeros((size, size))
    h[:n_c, :n_c] = g_cc + np.diag(sigma * np.pi * n)
    h[n_c:n_c + n_s, n_c:n_c + n_s] = g_ss + np.diag(sigma * np.pi * n[1:])
    h[:n_c, n_c:n_c + n_s] = g_cs
    h[n_c:n_c + n_s, :n_c] = g_cs.T
    iu = slice(n_c + n_s, n_c + n_s + n_el)
    h[:n_c, iu] = -int_c * w
    h[n_c:n_c + n_s, iu] = -int_s * w
    h[iu, :n_c] = h[:n_c, iu].T
    h[iu, n_c:n_c + n_s] = h[n_c:n_c + n_s, iu].T
    h[iu, iu] = np.diag(w * (beta - alpha))
    h[iu, -1] = 1.0  # Lagrange multiplier of the ground Σ U = 0
    h[-1, iu] = 1.0
    rhs = np.zeros((size, len(currents)))
    rhs[iu] = currents.T
    sol = np.linalg.solve(h, rhs)
    return sol[iu].T
