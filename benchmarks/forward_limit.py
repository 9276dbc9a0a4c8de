"""How far jaxeit's forward solves are from the limit: its backends against scipy's SuperLU and CHOLMOD
on the same matrix, in the same run.

For CEM and point-electrode systems on gmsh disks of about 1k, 4k and 20k nodes (80k with --big),
16 electrodes, adjacent drive, 208 measurements:

* jaxeit, per backend (``klu``, ``scipy``, ``cg`` up to 4k; the earlier rows also time the removed
  ``banded`` block Cholesky up to 20k): the forward
  solve ``voltages``, the (208, E) ``jacobian`` and one VJP (``grad`` of a weighted sum of the
  voltages), each a jitted call with a fresh σ (no cache can serve it): assembly, factorisation,
  solves and measurement all included.
* references on jaxeit's own matrix of the same σ (assembled before the clock starts):
  CHOLMOD (scikit-sparse) numeric refactorisation on a reused symbolic analysis plus the 16
  solves (one more solve for the VJP), and scipy's SuperLU (factorisation with its ordering,
  it cannot reuse one, plus the solves). The Jacobian needs no more linear algebra than the
  forward solve (reciprocity), so its reference is the forward's.

Every repeat times each contestant once, back to back, on the same σ; a ratio is the median of
the per-repeat ratios. Each size runs in its own process, whose peak resident memory (ru_maxrss)
is given after each contestant (it only grows, so a jump belongs to the contestant that caused
it). CHOLMOD needs scikit-sparse 0.4.x built against the system's SuiteSparse (``pip install
"jaxeit[limit]"`` with libsuitesparse-dev installed); without it, its columns are skipped with a
message. Writes benchmarks/results/forward_limit.md.

    python benchmarks/forward_limit.py [--repeats 9] [--big] [--sizes 1000 4000] [--add]

(``--add`` keeps the sizes already in forward_limit.json and adds or replaces the ones run now,
e.g. ``--sizes 80000 --add`` after the default run.)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_header, markdown_table  # noqa: E402

from jaxeit import ForwardModel, mesh, protocol  # noqa: E402
from jaxeit.forward import model as fm_module  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402

#: gmsh target edge length for each nominal size (nodes): 979, ~4.1k, ~20k, ~80k nodes
H = {1000: 0.1, 4000: 0.034, 20000: 0.014, 80000: 0.0068}
#: jaxeit backends timed up to this many nodes (above, they take seconds per call)
LIMITS = {"klu": 10**9, "scipy": 10**9, "cg": 5000}
OPS = ("fwd", "jac", "vjp")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cholmod_or_none():
    try:
        from sksparse.cholmod import analyze
    except ImportError as e:
        return None, f"CHOLMOD skipped: scikit-sparse is not importable ({e}); install libsuitesparse-dev, then `pip install 'scikit-sparse<0.5'`"
    return analyze, ""


class Reference:
    """Host sparse direct solves of a model's matrix: CSC structure built once, values per σ."""

    def __init__(self, fm: ForwardModel, analyze):
        import scipy.sparse as sp

        d = fm.disc
        self.n = d.n_unknowns
        rows, cols = np.asarray(d.rows), np.asarray(d.cols)
        slot = sp.csc_matrix((np.arange(1, len(rows) + 1, dtype=np.float64), (rows, cols)), shape=(self.n, self.n))
        self.indices, self.indptr = slot.indices.copy(), slot.indptr.copy()
        self.perm = slot.data.astype(np.int64) - 1  # CSC position -> jaxeit slot
        self.rhs = np.asarray(d.electrode_rhs)
        self.values = jax.jit(lambda disc, s, z: fm_module._matrix_values(disc, s, z))
        self.fm = fm
        self.analyze = analyze
        self.factor = None

    def matrix(self, sigma):
        import scipy.sparse as sp

        v = np.asarray(self.values(self.fm.disc, sigma, self.fm.contact_impedance))
        return sp.csc_matrix((v[self.perm], self.indices, self.indptr), shape=(self.n, self.n))

    def cholmod(self, a, adjoint: bool):
        if self.factor is None:
            self.factor = self.analyze(a)  # symbolic analysis once
        self.factor.cholesky_inplace(a)
        x = self.factor(self.rhs)
        if adjoint:
            self.factor(x[:, :1])
        return x

    @staticmethod
    def superlu(a, rhs, adjoint: bool):
        import scipy.sparse.linalg as spla

        lu = spla.splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))
        x = lu.solve(rhs)
        if adjoint:
            lu.solve(x[:, :1])
        return x


def contestants(m, model: str, analyze, limits=LIMITS):
    """(name, op) -> callable(sigma) (prepared and compiled) for one mesh and electrode model."""
    prot = protocol.adjacent(16)
    out = {}
    w = jnp.asarray(np.random.default_rng(1).standard_normal(prot.n_measurements))
    for solver in ("klu", "scipy", "cg"):
        if m.n_nodes > limits[solver]:
            continue
        fm = ForwardModel(m, prot, electrode_model=model, solver=solver)
        vjp = jax.jit(jax.grad(lambda s, fm=fm: jnp.sum(w * fm.voltages(s))))
        out[(solver, "fwd")] = fm.voltages
        out[(solver, "jac")] = fm.jacobian
        out[(solver, "vjp")] = vjp
    ref = Reference(ForwardModel(m, prot, electrode_model=model, solver="cg" if m.n_nodes > 1500 else "dense"),
                    analyze)
    # references: the matrix is assembled outside the clock (see run_size)
    out[("SuperLU", "fwd")] = lambda a: ref.superlu(a, ref.rhs, False)
    out[("SuperLU", "vjp")] = lambda a: ref.superlu(a, ref.rhs, True)
    if analyze is not None:
        out[("CHOLMOD", "fwd")] = lambda a: ref.cholmod(a, False)
        out[("CHOLMOD", "vjp")] = lambda a: ref.cholmod(a, True)
    return out, ref


def run_size(size: int, repeats: int) -> dict:
    """All timings for one nominal size, both electrode models (run in a fresh process)."""
    analyze, skip_msg = cholmod_or_none()
    t0 = time.perf_counter()
    m_cem = mesh.disk(h=H[size])
    result = {"size": size, "repeats": repeats, "nodes": m_cem.n_nodes, "elements": m_cem.n_elements, "skip": skip_msg,
              "mesh_s": time.perf_counter() - t0, "models": {}}
    rng = np.random.default_rng(0)
    for model in ("cem", "point"):
        m = m_cem if model == "cem" else m_cem.with_electrode_nodes(None)
        cs, ref = contestants(m, model, analyze)
        rss, compile_s = {}, {}
        warm = jnp.asarray(1.0 + rng.random(m.n_elements))
        for key, fn in cs.items():  # compile / first call, memory after each
            t = time.perf_counter()
            jax.block_until_ready(fn(ref.matrix(warm) if key[0] in ("SuperLU", "CHOLMOD") else warm))
            compile_s[key] = time.perf_counter() - t
            rss[key[0]] = peak_rss_mb()
        times = {key: [] for key in cs}
        keys = list(cs)
        for i in range(repeats):
            sigma = jnp.asarray(1.0 + rng.random(m.n_elements))
            a = ref.matrix(sigma)
            for key in keys[i % len(keys):] + keys[: i % len(keys)]:  # rotate the order per repeat
                arg = a if key[0] in ("SuperLU", "CHOLMOD") else sigma
                t = time.perf_counter()
                jax.block_until_ready(cs[key](arg))
                times[key].append(time.perf_counter() - t)
        result["models"][model] = {
            "unknowns": int(ref.n),
            "times": {f"{k[0]}|{k[1]}": v for k, v in times.items()},
            "compile_s": {f"{k[0]}|{k[1]}": v for k, v in compile_s.items()},
            "rss_mb": rss,
        }
        print(model, size, {f"{k[0]} {k[1]}": round(1e3 * float(np.median(v)), 1) for k, v in times.items()},
              file=sys.stderr, flush=True)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _ratio(times, a, b):
    """Median over repeats of time(a)/time(b) (back-to-back pairs), or None."""
    if a not in times or b not in times:
        return None
    return float(np.median(np.asarray(times[a]) / np.asarray(times[b])))


def render(results: list[dict], repeats: int) -> str:
    skip = next((r["skip"] for r in results if r["skip"]), "")
    text = machine_header("Forward solves against the limit: jaxeit backends vs SuperLU and CHOLMOD")
    per_size = ", ".join(f"{r['nodes']} nodes: {len(next(iter(r['models']['cem']['times'].values())))}"
                         for r in results)
    commands = "".join(f"- {r['nodes']} nodes: `{r['command']}`\n" for r in results if r.get("command"))
    if commands:
        text += "- runs per size:\n" + commands
    text += (f"\nMedian wall time in ms over fresh conductivities ({per_size}), each contestant once per "
             "repeat on the same σ (order rotated per repeat); ratios are medians of the per-repeat "
             "(back-to-back) ratios. 16 electrodes, adjacent drive, 208 measurements; gmsh disks, the point "
             "model on the same mesh. jaxeit times include assembly and measurement (a jitted call per "
             "σ, value checks on); SuperLU and CHOLMOD are only factorisation + the 16 solves (+1 for "
             "the VJP) on jaxeit's matrix. `jac` needs no more solves than `fwd`, so the references' "
             "`fwd` serves as their `jac`. The machine has 2 cores shared with other jobs: expect "
             "noise of ±20 % on single timings.\n")
    if skip:
        text += f"\n**{skip}**\n"
    for model, title in (("cem", "Complete electrode model"), ("point", "Point electrodes (pyEIT's model)")):
        text += f"\n## {title}\n\n"
        rows = []
        for r in results:
            md = r["models"][model]
            t = md["times"]
            names = sorted({k.split("|")[0] for k in t}, key=["klu", "banded", "scipy", "cg", "dense",
                                                              "SuperLU", "CHOLMOD"].index)
            for name in names:
                ms = [1e3 * float(np.median(t[f"{name}|{op}"])) if f"{name}|{op}" in t else None for op in OPS]
                if name in ("SuperLU", "CHOLMOD"):
                    ms[1] = ms[0]
                ref = "CHOLMOD" if "CHOLMOD|fwd" in t else "SuperLU"
                ratios = [_ratio(t, f"{name}|{op}", f"{ref}|{'fwd' if op == 'jac' else op}") for op in OPS]
                rows.append([r["nodes"], md["unknowns"], name, *["—" if x is None else x for x in ms],
                             *["—" if x is None else f"{x:.2f}" for x in ratios],
                             f"{md['rss_mb'].get(name, float('nan')):.0f}"])
        text += markdown_table(["nodes", "unknowns", "solver", "fwd ms", "jac ms", "vjp ms",
                                "fwd / ref", "jac / ref", "vjp / ref", "peak RSS MB"], rows)
        text += ("\n\n`ref` = CHOLMOD when available, else SuperLU. Peak RSS: the process's peak resident "
                 "memory after the contestant's first call (cumulative within a size).\n")
    text += "\n## Pairwise (median of back-to-back ratios, forward solve)\n\n"
    rows = []
    for r in results:
        for model in ("cem", "point"):
            t = r["models"][model]["times"]
            rows.append([r["nodes"], model,
                         *[("—" if (x := _ratio(t, a, b)) is None else f"{x:.2f}") for a, b in
                           (("banded|fwd", "klu|fwd"), ("scipy|fwd", "klu|fwd"), ("cg|fwd", "klu|fwd"),
                            ("klu|fwd", "CHOLMOD|fwd"), ("klu|jac", "CHOLMOD|fwd"), ("klu|vjp", "CHOLMOD|vjp"),
                            ("banded|fwd", "CHOLMOD|fwd"), ("klu|fwd", "SuperLU|fwd"))]])
    text += markdown_table(["nodes", "model", "banded/klu", "scipy/klu", "cg/klu", "klu/CHOLMOD fwd",
                            "klu jac/CHOLMOD", "klu vjp/CHOLMOD", "banded/CHOLMOD", "klu/SuperLU"], rows)
    text += "\n\nCompile / first-call seconds and mesh generation times are in the JSON beside this file.\n"
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 20000], choices=sorted(H))
    ap.add_argument("--big", action="store_true", help="add the ~80k-node size (several minutes more)")
    ap.add_argument("--add", action="store_true", help="merge with the sizes already in the JSON beside --out")
    ap.add_argument("--out", type=Path, default=RESULTS / "forward_limit.md")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: one size, JSON out
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_size(args.one, args.repeats)))
        return
    if jax.default_backend() != "cpu":
        print("forward_limit compares CPU solvers: run it with JAX_PLATFORMS=cpu", file=sys.stderr)
    sizes = sorted(set(args.sizes) | ({80000} if args.big else set()))
    _, skip = cholmod_or_none()
    if skip:
        print(skip, file=sys.stderr)
    results = []
    previous = args.out.with_suffix(".json")
    if args.add and previous.exists():
        results = [r for r in json.loads(previous.read_text()) if r["size"] not in sizes]
    for size in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size), "--repeats", str(args.repeats)],
                             stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        results[-1]["command"] = "python benchmarks/forward_limit.py " + " ".join(argv if argv is not None
                                                                                 else sys.argv[1:])
    results.sort(key=lambda r: r["size"])
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(results, indent=1))
    text = render(results, args.repeats)
    atomic_write_text(args.out, text)
    print(text)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
