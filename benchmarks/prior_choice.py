"""Which diffusion prior serves Diff-INR: each candidate on the same validation cases, everything else equal.

The question of the Diff-INR issue: a 64×64 prior renders the INR on a finer grid than the inverse mesh
(h = 0.06 R, about 33 elements across the tank) can resolve, and its U-Net costs more per iteration;
does it reconstruct better than the 32×32 one? Every candidate runs Diff-INR at the current defaults
(only the prior changes) on the validation split of ``benchmarks/_protocol.py`` (all four families,
50 and 40 dB; never the test split). The table gives each prior's SSIM, CC and RE with 95 % CIs, the
paired difference to the first candidate, diverged cases, seconds per reconstruction and milliseconds
per iteration.

Resumable like ``diff_inr.py``: one JSON line per reconstruction in ``--records``.

    python benchmarks/prior_choice.py --priors shapes32,shapes64 [--n-val 3] [--max-minutes 60]
    python benchmarks/prior_choice.py --priors shapes32,runs/export/shapes64.msgpack   # an exported run
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _common import RESULTS, machine_header, markdown_table  # noqa: E402
from diff_inr import Cache  # noqa: E402

from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.priors import load_pretrained  # noqa: E402
from jaxeit.recon import reconstruct  # noqa: E402

SNRS = (50.0, 40.0)


def load_candidate(spec: str):
    """A shipped prior's name, or the path of an exported ``.msgpack`` (its ``.json`` beside it)."""
    return load_pretrained(path=spec) if spec.endswith(".msgpack") else load_pretrained(spec)


def label(prior) -> str:
    """The prior's name with the training steps behind its weights (so a later export is a new row)."""
    return f"{prior.name}@{prior.provenance.get('steps', '?')}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--priors", default="shapes32", help="comma-separated names or .msgpack paths; the first "
                                                         "is the reference of the paired differences")
    ap.add_argument("--n-val", type=int, default=3, help="validation cases per family")
    ap.add_argument("--iterations", type=int, default=None, help="Diff-INR iterations (default: its default)")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (resumably) after this long")
    ap.add_argument("--records", type=Path, default=RESULTS / "prior_choice_records.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS / "prior_choice.md")
    args = ap.parse_args(argv)
    from jaxeit.recon.diffinr import DiffINR

    priors = [load_candidate(s.strip()) for s in args.priors.split(",") if s.strip()]
    # the Diff-INR defaults behind the records: a later change of them starts new records
    settings = hashlib.sha1(repr(sorted((k, v) for k, v in dataclasses.asdict(DiffINR()).items()
                                        if k != "prior")).encode()).hexdigest()[:8]
    labels = [label(p) for p in priors]
    iterations = args.iterations or DiffINR().max_iter
    cache = Cache(args.records)
    problem = P.tank_problem()
    cases = [c for fam in P.FAMILIES for c in P.make_cases(problem, "val", fam, args.n_val)]
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes else math.inf
    todo = [(p, lab, c, snr) for c in cases for snr in SNRS for p, lab in zip(priors, labels)]
    t0, done, finished = time.perf_counter(), 0, True
    for prior, lab, case, snr in todo:
        key = f"{lab}|{case.family}|{case.index}|{snr:g}|{iterations}|{settings}"
        if cache.get(key) is not None:
            continue
        if time.time() > deadline:
            print("time budget reached; run again to continue", flush=True)
            finished = False
            break
        t = time.perf_counter()
        res = reconstruct(problem.inv, P.noisy(case, snr, "val"), "diff-inr", grid=problem.grid, prior=prior,
                          key=jax.random.PRNGKey(case.index), max_iter=iterations)
        secs = time.perf_counter() - t
        sc = P.score(np.asarray(res.image), case.truth, problem.mask)
        cache.put(key, dict(sc, prior=lab, family=case.family, index=case.index, snr=snr, seconds=secs,
                            iterations=int(res.n_iter), status=str(res.status)))
        done += 1
        print(f"{lab} {case.family}#{case.index} {snr:g} dB: SSIM {sc['SSIM']:.3f} CC {sc['CC']:.3f} "
              f"RE {sc['RE']:.3f} ({secs:.1f} s; {done} done in {(time.perf_counter() - t0) / 60:.1f} min)",
              flush=True)

    wanted = {(c.family, c.index, snr) for c in cases for snr in SNRS}
    by = {lab: {} for lab in labels}
    for r in cache.rows.values():
        k = (r["family"], r["index"], r["snr"])
        if r.get("prior") in by and k in wanted and r["key"].endswith(f"|{iterations}|{settings}"):
            by[r["prior"]][k] = r
    ref = by[labels[0]]
    rows = []
    for prior, lab in zip(priors, labels):
        recs = by[lab]
        if not recs:
            continue
        pairs = [(recs[k], ref[k]) for k in recs if k in ref]
        first = lab == labels[0]
        rows.append([f"`{lab}`", f"{prior.image_size}×{prior.image_size}",
                     f"{prior.provenance.get('n_params', float('nan')) / 1e6:.2f} M", len(recs),
                     P.fmt_ci([r["SSIM"] for r in recs.values()]), P.fmt_ci([r["CC"] for r in recs.values()]),
                     P.fmt_ci([r["RE"] for r in recs.values()]),
                     "–" if first else P.fmt_ci([a["SSIM"] - b["SSIM"] for a, b in pairs]),
                     "–" if first else P.fmt_ci([a["CC"] - b["CC"] for a, b in pairs]),
                     sum(r["diverged"] for r in recs.values()),
                     f"{np.median([r['seconds'] for r in recs.values()]):.1f}",
                     f"{1e3 * np.median([r['seconds'] / max(r['iterations'], 1) for r in recs.values()]):.1f}"])
    text = "\n".join([
        machine_header("Diff-INR: which prior (validation split)"),
        f"Diff-INR at its defaults ({iterations} iterations), only the prior changed; {len(cases)} validation "
        f"cases ({args.n_val} per family: {', '.join(P.FAMILIES)}) × {len(SNRS)} SNRs "
        f"({', '.join(f'{s:g}' for s in SNRS)} dB); inverse mesh h = {P.H_INVERSE} R, data from the h = "
        f"{P.H_FINE} R mesh. Δ = paired difference to `{labels[0]}`, mean ± 95 % CI. Times on this machine "
        "(2 cores, other jobs running: compare within the table only).", "",
        markdown_table(["prior", "grid", "U-Net", "runs", "SSIM", "CC", "RE", "ΔSSIM", "ΔCC", "diverged",
                        "s / recon.", "ms / iteration"], rows), ""])
    atomic_write_text(args.out, text)
    print(text)
    return 0 if finished else 3


if __name__ == "__main__":
    sys.exit(main())
