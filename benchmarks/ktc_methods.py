"""KTC2023: every method of the pipeline on the 4 public targets and on simulated held-out tanks, scored officially.

For each method (`jaxeit.realdata.ktc.METHODS`, at its defaults) and level 1–7: the official score
(:func:`jaxeit.metrics.ktc_score`) on the 4 public training targets, next to the winners' self-reported
means on the same targets (Denker et al. 2024), and the seconds per target (reconstruction and
segmentation, from the loaded `.mat` arrays; the tank is calibrated once per reference recording and the
mesh is built once). The public targets are a final check: no setting is chosen by their scores (their truths
served one diagnosis, the drift of the water in `ktc_model_error.md`, which set the simulator's `drift` range).

With ``--n-sim N``: also N simulated held-out tanks per level (`jaxeit.realdata.ktc_simulator`, seed
10001, never used in training; each with its own simulated empty tank, so every method calibrates on it),
mean ± 95 % CI per level. With ``--drift D`` as well: the same objects again, the water of each target
recording drifting by a factor e^U(−D, D) against its empty tank's, as the public targets' water does.

Resumable: one JSON line per (method, level, target) in ``--records``.

    python benchmarks/ktc_methods.py [--methods baseline,gn-gaussian,diff-inr,unet] [--n-sim 5] [--drift 0.1]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _common import RESULTS, machine_header, markdown_table  # noqa: E402
from diff_inr import Cache  # noqa: E402
from ktc_segmenter import HELD_OUT_SEED, WINNERS, held_out_tanks  # noqa: E402

from jaxeit.io import data_dir, load_ktc2023, load_ktc_reference, load_ktc_truth  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.realdata import calibrate_dataset, ktc_mesh  # noqa: E402
from jaxeit.realdata import ktc  # noqa: E402
from jaxeit.realdata.ktc_segmenter import weights_fingerprint  # noqa: E402
from jaxeit.realdata.ktc_simulator import KTCSimConfig, simulated_dataset  # noqa: E402

KTC_H = 0.014   # the reconstruction mesh of the pipeline (m)
LEVELS = range(1, 8)
SIM_PER_LEVEL = 30   # the simulated held-out set: 210 tanks, as in benchmarks/ktc_segmenter.py


def _settings_tag(method: str) -> str:
    """``"@"`` and 8 hex digits of the pipeline's own settings of ``method`` (none: ``""``)."""
    options = ktc.PIPELINE_OPTIONS.get(method)
    return f"@{hashlib.sha1(repr(sorted(options.items())).encode()).hexdigest()[:8]}" if options else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="baseline,gn-gaussian,diff-inr,unet",
                    help="comma-separated names of jaxeit.realdata.ktc.METHODS")
    ap.add_argument("--n-sim", type=int, default=0, help="simulated held-out tanks per level (0: none)")
    ap.add_argument("--drift", type=float, default=0.0,
                    help="with --n-sim: the same held-out tanks also drawn with this drift of the water "
                         "(KTCSimConfig(drift=...)), each method scored on both")
    ap.add_argument("--sim-dir", type=Path, default=Path(__file__).resolve().parent / ".cache" / "ktc_heldout")
    ap.add_argument("--records", type=Path, default=RESULTS / "ktc_methods_records.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS / "ktc_methods.md")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ktc.METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {sorted(ktc.METHODS)}")
    folder = data_dir() / "ktc2023" / "training"
    ref = folder / "ref.mat"
    if not ref.exists():
        sys.exit(f"KTC2023 data not found at {folder} (set JAXEIT_DATA)")
    cache = Cache(args.records)
    mesh = ktc_mesh(h=KTC_H)
    truths = [load_ktc_truth(folder / f"true{k}.mat") for k in range(1, 5)]
    cal = calibrate_dataset(load_ktc_reference(ref), mesh)

    def run(key, method, ds, truth, calibration):
        """The scores of one reconstruction, from the records or computed and recorded."""
        if cache.get(key) is None:
            res = ktc.reconstruct_ktc(ds, mesh, method, truth=truth, calibration=calibration)
            cache.put(key, {"score": res.score, "seconds": res.wall_time})
            print(f"{key}: {res.score:.3f} ({res.wall_time:.1f} s)", flush=True)
        return cache.get(key)

    # a learned method's records belong to its weights and decision, another method's to the pipeline's
    # settings for it: a retrained segmenter or a new setting is scored again
    version = {m: (f"@{weights_fingerprint()}" if m == "unet" else _settings_tag(m)) for m in methods}
    if args.n_sim > SIM_PER_LEVEL:
        ap.error(f"--n-sim is at most {SIM_PER_LEVEL} (the held-out set has {7 * SIM_PER_LEVEL} tanks)")
    if not 0 <= args.drift < 1 or (args.drift and not args.n_sim):
        ap.error("--drift must be in [0, 1) and needs --n-sim (it draws the held-out tanks again)")
    # the held-out set of benchmarks/ktc_segmenter.py: 210 tanks, level l on tanks l-1, l+6, ...; its config
    # (with the held-out seed) names the tanks in the records
    sim_configs = ([KTCSimConfig()] + ([KTCSimConfig(drift=args.drift)] if args.drift else [])) if args.n_sim else []
    sims = [(dataclasses.replace(c, seed=HELD_OUT_SEED), held_out_tanks(c, 7 * SIM_PER_LEVEL, ref, args.sim_dir))
            for c in sim_configs]
    target_rows, sim_rows = [], {c.fingerprint(): [] for c, _ in sims}
    for method in methods:
        for level in LEVELS:
            recs = [run(f"target|{method}{version[method]}|{level}|{k + 1}", method, load_ktc2023(folder / f"data{k + 1}.mat", ref, level),
                        truths[k], cal) for k in range(4)]
            target_rows.append([method, level, *[f"{r['score']:.3f}" for r in recs],
                                f"{np.mean([r['score'] for r in recs]):.3f}", f"{WINNERS[level - 1]:.3f}",
                                f"{np.median([r['seconds'] for r in recs]):.1f}"])
            empty = load_ktc_reference(ref, level)
            idx = np.arange(level - 1, 7 * SIM_PER_LEVEL, 7)[:args.n_sim]   # this level's share of the held-out set
            for held_out, sim in sims:
                recs = [run(f"sim|{method}{version[method]}|{level}|{i}|{held_out.fingerprint()}", method,
                            simulated_dataset(sim, i, empty), sim["truth"][i], None) for i in idx]
                sim_rows[held_out.fingerprint()].append([method, level, len(recs), P.fmt_ci([r["score"] for r in recs]),
                                                         f"{np.median([r['seconds'] for r in recs]):.1f}"])
    sums = {m: sum(float(r[6]) for r in target_rows if r[0] == m) for m in methods}
    lines = [machine_header("KTC2023: every method, official score"), __doc__.split("\n\n")[1], "",
             f"Mesh h = {KTC_H} m ({mesh.n_elements} elements); calibrated background σ = {cal.sigma:.4g} S, "
             f"z = {float(np.mean(cal.contact_impedance)):.3g} Ω·m².", "",
             "## The 4 public training targets", "",
             markdown_table(["method", "level", "target 1", "target 2", "target 3", "target 4", "mean",
                             "winners (self-reported)", "s / target"], target_rows), "",
             "Sum of the level means: " + ", ".join(f"{m} {s:.2f}" for m, s in sums.items())
             + f"; winners {sum(WINNERS):.2f}.", ""]
    for held_out, _ in sims:
        drift = (f", the water drifting by e^U(−{held_out.drift:g}, {held_out.drift:g}) between the empty tank and "
                 "the target (`KTCSimConfig(drift=...)`; the same objects)" if held_out.drift else "")
        lines += [f"## Simulated held-out tanks ({args.n_sim} per level, seed {HELD_OUT_SEED}{drift}; mean ± 95 % CI)",
                  "", markdown_table(["method", "level", "tanks", "score", "s / tank"],
                                     sim_rows[held_out.fingerprint()]), ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
