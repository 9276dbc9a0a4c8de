"""Diff-INR's SDS settings, one factor at a time, on the validation split of the protocol.

Every variant changes one setting of a base configuration (the defaults, with λ_sds = 3e-3: the
ablation ran before the main-weight sweep of `diff_inr.py` moved it to 9e-4) and runs on the same
validation cases of ``benchmarks/_protocol.py`` (all four families, 50 and 40 dB; never the test
split). The table gives each variant's mean SSIM and CC and its paired difference to the base with a
95 % CI, and the number of diverged cases (non-finite image or RE > 1), so that the defaults can be
chosen from it. Factors: the t range, the weighting w(t), noise draws per step, λ_sds and its
schedule, annealed t, κ, the learning rate and the iteration count.

Resumable like ``diff_inr.py`` (one JSON line per reconstruction in ``--records``).

    python benchmarks/sds_ablation.py [--n-val 5] [--max-minutes 120] [--prior NAME]
    python benchmarks/sds_ablation.py --quick        # 1 case per family, 60 iterations (smoke run)
    # the iteration count at the swept λ_sds (-> sds_ablation_iterations.md), and the thorax alone
    python benchmarks/sds_ablation.py --n-val 3 --sds-weight 9e-4 --variants 0,19 \
        --out benchmarks/results/sds_ablation_iterations.md
    python benchmarks/sds_ablation.py --families thorax --n-val 3 --sds-weight 9e-4 \
        --variants 0,6,7,11,20,21,19,1,4 --out benchmarks/results/sds_ablation_thorax.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _common import RESULTS, machine_header, markdown_table  # noqa: E402
from diff_inr import INR_METHODS, Cache, chosen_weights, iterations_of  # noqa: E402

from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.priors import load_pretrained  # noqa: E402
from jaxeit.recon import reconstruct  # noqa: E402

SNRS = (50.0, 40.0)
#: (variant name, changed options) — one factor at a time from the base (the defaults)
VARIANTS = (
    ("base (defaults)", {}),
    ("t ∈ [20, 200]", {"t_range": (20, 200)}),
    ("t ∈ [100, 600]", {"t_range": (100, 600)}),
    ("t annealed", {"t_schedule": "anneal"}),
    ("w(t) = SNR weight", {"weighting": "snr"}),
    ("4 noise draws", {"n_draws": 4}),
    ("λ_sds × 1/3", {"sds_weight": "×0.333"}),
    ("λ_sds × 3", {"sds_weight": "×3"}),
    ("λ_sds warm-up", {"weight_schedule": "warmup"}),
    ("λ_sds linear decay", {"weight_schedule": "linear"}),
    ("no TV term", {"tv_weight": 0.0}),
    ("TV weight × 3", {"tv_weight": "×3"}),
    ("no range floor (min_range 0)", {"min_range": 0.0}),
    ("x̂₀ not clipped", {"clip_denoised": False}),
    ("none of the three (earlier defaults)", {"tv_weight": 0.0, "min_range": 0.0, "clip_denoised": False}),
    ("κ = 0.05", {"kappa": 0.05}),
    ("κ = 0.3", {"kappa": 0.3}),
    ("lr × 1/2", {"learning_rate": "×0.5"}),
    ("iterations × 1/2", {"max_iter": "×0.5"}),
    ("iterations × 2", {"max_iter": "×2"}),
    ("TV weight × 10", {"tv_weight": "×10"}),
    ("κ = 0.1", {"kappa": 0.1}),
)
#: the base's Adam iterations: the count the ablation ran at ("iterations × 2" made 1,200 Diff-INR's default)
ABLATION_ITERATIONS = 600
#: λ_sds of the records made before the main-weight sweep of diff_inr.py (their keys do not hold it)
LEGACY_SDS_WEIGHT = 3e-3
#: rows of other methods on the same cases, read from the protocol's sweep records at their chosen weights
REFERENCES = ("TV", "INR+TV")


def reference_rows(case_ids: set, iterations: int) -> dict:
    """{'<method> (reference)': {(family, index, snr): record}}: the protocol's validation sweep records of
    :data:`REFERENCES` at their chosen weights, on ``case_ids`` (empty where the sweep has not run)."""
    path = RESULTS / "diff_inr_records.jsonl"
    if not path.exists():
        return {}
    cache = Cache(path)
    chosen = chosen_weights(cache, list(REFERENCES))
    out = {}
    for r in cache.rows.values():
        name = r.get("method")
        if (r.get("stage") == "sweep" and name in chosen and math.isclose(r["weight"], chosen[name], rel_tol=1e-6)
                and (r["family"], r["index"]) in case_ids
                and iterations_of(r) == (iterations if name in INR_METHODS else 0)):
            out.setdefault(f"{name} (reference)", {})[(r["family"], r["index"], r["snr"])] = r
    return out


def options(base: dict, change: dict) -> dict:
    """The base options with ``change`` applied; ``"×f"`` multiplies the base value."""
    out = dict(base)
    for k, v in change.items():
        out[k] = base[k] * float(v[1:]) if isinstance(v, str) and v.startswith("×") else v
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-val", type=int, default=5, help="validation cases per family")
    ap.add_argument("--prior", default=None, help="a shipped prior's name (default: the default prior)")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--quick", action="store_true", help="1 case per family, 60 iterations, own records")
    ap.add_argument("--variants", default=None,
                    help="run and show only these variants (comma-separated numbers of the list, 0 = base); "
                         "without it the table shows every variant with records on these cases")
    ap.add_argument("--families", default=",".join(P.FAMILIES),
                    help="comma-separated phantom families of the validation split (default: all four)")
    ap.add_argument("--sds-weight", type=float, default=LEGACY_SDS_WEIGHT,
                    help="λ_sds of the base (default 3e-3, the base of the first ablation; the package "
                         "default since the main-weight sweep is 9e-4)")
    ap.add_argument("--records", type=Path, default=RESULTS / "sds_ablation_records.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS / "sds_ablation.md")
    args = ap.parse_args(argv)
    from jaxeit.recon.diffinr import DiffINR

    prior = load_pretrained(args.prior) if args.prior else load_pretrained()
    d = DiffINR()
    base = {"t_range": d.t_range, "t_schedule": d.t_schedule, "weighting": d.weighting, "n_draws": d.n_draws,
            "sds_weight": args.sds_weight,
            "weight_schedule": d.weight_schedule, "kappa": d.kappa,
            "tv_weight": d.tv_weight, "min_range": d.min_range, "clip_denoised": d.clip_denoised,
            "learning_rate": d.learning_rate, "max_iter": 60 if args.quick else ABLATION_ITERATIONS}
    n_val = 1 if args.quick else args.n_val
    cache = Cache(P.cache_dir() / "sds_ablation_quick.jsonl" if args.quick else args.records)
    problem = P.tank_problem()
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(P.FAMILIES))
    if unknown:
        ap.error(f"unknown families {unknown}; choose from {', '.join(P.FAMILIES)}")
    cases = [c for fam in families for c in P.make_cases(problem, "val", fam, n_val)]
    case_ids = {(c.family, c.index) for c in cases}
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes is not None else math.inf
    # the prior's name and training steps: a later export of the same run gets its own records
    prior_name = f"{prior.name}@{prior.provenance.get('steps', '?')}"
    chosen = VARIANTS if args.variants is None else [VARIANTS[int(i)] for i in args.variants.split(",")]
    todo = [(name, change, c, snr) for c in cases for snr in SNRS for name, change in chosen]
    # the key holds λ_sds only where it differs from the first ablation's, so those records stay valid
    suffix = f"|{base['max_iter']}" + ("" if base["sds_weight"] == LEGACY_SDS_WEIGHT
                                       else f"|sds{base['sds_weight']:g}")
    t0, done = time.perf_counter(), 0
    for name, change, case, snr in todo:
        key = f"{prior_name}|{name}|{case.family}|{case.index}|{snr:g}{suffix}"
        if cache.get(key) is not None:
            continue
        if time.time() > deadline:
            print("time budget reached; run again to continue", flush=True)
            break
        opts = options(base, change)
        opts["max_iter"] = int(round(opts["max_iter"]))
        t = time.perf_counter()
        res = reconstruct(problem.inv, P.noisy(case, snr, "val"), "diff-inr", grid=problem.grid, prior=prior,
                          key=jax.random.PRNGKey(case.index), **opts)
        sc = P.score(np.asarray(res.image), case.truth, problem.mask)
        cache.put(key, dict(sc, prior=prior_name, variant=name, family=case.family, index=case.index, snr=snr,
                            seconds=time.perf_counter() - t, status=res.status))
        done += 1
        print(f"{name} {case.family}#{case.index} {snr:g} dB: SSIM {sc['SSIM']:.3f} CC {sc['CC']:.3f} "
              f"({time.perf_counter() - t:.1f} s, {done} done in {(time.perf_counter() - t0) / 60:.1f} min)",
              flush=True)
    rows = []
    by = {}
    for r in cache.rows.values():   # this prior's runs at this base and iteration count, on these cases only
        if (r["key"].startswith(f"{prior_name}|") and r["key"].endswith(suffix)
                and (r["family"], r["index"]) in case_ids):
            by.setdefault(r["variant"], {})[(r["family"], r["index"], r["snr"])] = r
    by.update(reference_rows(case_ids, base["max_iter"]))
    base_rows = by.get(VARIANTS[0][0], {})
    shown = [v[0] for v in (VARIANTS if args.variants is None else chosen)]
    for name in shown + [n for n in by if n not in {v[0] for v in VARIANTS}]:   # + the references
        recs = by.get(name, {})
        if not recs:
            continue
        pairs = [(recs[k], base_rows[k]) for k in recs if k in base_rows]
        rows.append([name, len(recs), P.fmt_ci([r["SSIM"] for r in recs.values()]),
                     P.fmt_ci([r["CC"] for r in recs.values()]),
                     P.fmt_ci([a["SSIM"] - b["SSIM"] for a, b in pairs]) if name != VARIANTS[0][0] else "–",
                     P.fmt_ci([a["CC"] - b["CC"] for a, b in pairs]) if name != VARIANTS[0][0] else "–",
                     sum(r["diverged"] for r in recs.values()),
                     f"{np.median([r['seconds'] for r in recs.values()]):.1f}"])
    text = "\n".join([
        machine_header("Diff-INR: SDS settings, one factor at a time (validation split)"),
        f"Prior `{prior_name}`; base = {base}; {len(cases)} validation cases "
        f"({', '.join(families)}) × {len(SNRS)} SNRs per variant; Δ = paired difference to the base, mean ± 95 % "
        "CI. Rows marked 'reference' are other methods on the same cases at the weights chosen by the "
        "protocol's sweep (`diff_inr.py`, read from its records).", "",
        markdown_table(["variant", "runs", "SSIM", "CC", "ΔSSIM", "ΔCC", "diverged", "median s"], rows), ""])
    atomic_write_text(args.out if not args.quick else args.out.with_name("sds_ablation_quick.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
