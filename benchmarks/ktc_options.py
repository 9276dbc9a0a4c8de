"""KTC2023: a method's options in the pipeline, chosen on simulated validation tanks (never the public targets).

Each variant of a method (``--method``: ``diff-inr`` or ``gn-gaussian``) reconstructs and segments the
same simulated tanks, scored officially: a validation set of its own (`KTCSimConfig(seed=20002)`, 7 ×
``--per-level`` tanks; the segmenter trained on seed 0 and the held-out set of `ktc_methods.py` and
`ktc_segmenter.py` is seed 10001), each level on its own seventh, every tank with its own simulated empty
tank, so each reconstruction calibrates as on real data. The table gives each variant's mean score with
a 95 % CI, its paired difference to the first variant asked for (the method's defaults unless
``--variants`` starts with another), and the per-level means; the pipeline's settings
(`jaxeit.realdata.ktc.PIPELINE_OPTIONS`) come from it.

* ``diff-inr``: the general defaults were chosen on the 28 cm tank protocol (`sds_ablation.py`), whose
  inclusions have contrasts up to 10×; the KTC tank holds plastic and metal (contrasts of decades).
* ``gn-gaussian``: the MAP's Gaussian prior — its correlation length (m) and standard deviation of the
  log-contrast — decides how smooth, and so how segmentable, the image is; ``prior="simulated"`` puts
  the second moment of the simulator's targets (`jaxeit.realdata.ktc_prior`) in the place of the
  stationary smoothness.
* both: the segmentation rule (`jaxeit.realdata.ktc.segment_image`: three-class Otsu, or thresholds on
  each side of the background with a floor relative to the largest change); variants that differ only
  in it segment one reconstruction.

Resumable: one JSON line per (method, variant, tank) in ``--records``.

    python benchmarks/ktc_options.py --method gn-gaussian [--per-level 4]
    python benchmarks/ktc_options.py --method diff-inr --per-level 3
    python benchmarks/ktc_options.py --method gn-gaussian --drift 0.1 --out benchmarks/results/ktc_options_gn-gaussian_drift.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _common import RESULTS, machine_header, markdown_table  # noqa: E402
from diff_inr import Cache  # noqa: E402

from jaxeit.io import load_ktc_reference, resolve_data_path  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.realdata import ktc, ktc_mesh  # noqa: E402
from jaxeit.realdata.ktc_simulator import (KTCSimConfig, load_ktc_simulation, simulate_ktc,  # noqa: E402
                                            simulated_dataset)

_OTSU = {"segmentation": "otsu"}       # the variants name their rule: the pipeline's own may change


def _sided(level: float) -> dict:
    return {"segmentation": "sided", "segment_level": level}


#: method -> {variant: options}; the first variant of each is the method's general defaults
VARIANTS = {
    "diff-inr": {
        "Diff-INR defaults (TV 3e-6, range floor, clipped x̂₀)": {"tv_weight": 3e-6, "min_range": 0.5,
                                                                 "clip_denoised": True, **_OTSU},
        "no TV term": {"tv_weight": 0.0, "min_range": 0.5, "clip_denoised": True, **_OTSU},
        "no TV, no range floor, x̂₀ not clipped": {"tv_weight": 0.0, "min_range": 0.0, "clip_denoised": False,
                                                  **_OTSU},
        "no TV, no range floor, x̂₀ not clipped; sided (floor 0.25)": {
            "tv_weight": 0.0, "min_range": 0.0, "clip_denoised": False, **_sided(0.25)},
        "no TV, no range floor, x̂₀ not clipped; sided (floor 0.35)": {
            "tv_weight": 0.0, "min_range": 0.0, "clip_denoised": False, **_sided(0.35)},
    },
    "gn-gaussian": {
        "defaults (corrlength 0.115 m, std 0.05)": {"corrlength": 0.115, "variance": 0.05 ** 2, **_OTSU},
        "std 0.1": {"corrlength": 0.115, "variance": 0.1 ** 2, **_OTSU},
        "std 0.2": {"corrlength": 0.115, "variance": 0.2 ** 2, **_OTSU},
        "std 0.025": {"corrlength": 0.115, "variance": 0.025 ** 2, **_OTSU},
        "corrlength 0.06 m": {"corrlength": 0.06, "variance": 0.05 ** 2, **_OTSU},
        "corrlength 0.03 m": {"corrlength": 0.03, "variance": 0.05 ** 2, **_OTSU},
        "corrlength 0.06 m, std 0.1": {"corrlength": 0.06, "variance": 0.1 ** 2, **_OTSU},
        "sided segmentation (floor 0.25)": {"corrlength": 0.115, "variance": 0.05 ** 2, **_sided(0.25)},
        "sided segmentation (floor 0.35)": {"corrlength": 0.115, "variance": 0.05 ** 2, **_sided(0.35)},
        "corrlength 0.06 m, sided (floor 0.25)": {"corrlength": 0.06, "variance": 0.05 ** 2, **_sided(0.25)},
        "corrlength 0.06 m, sided (floor 0.35)": {"corrlength": 0.06, "variance": 0.05 ** 2, **_sided(0.35)},
        "corrlength 0.06 m, sided (floor 0.45)": {"corrlength": 0.06, "variance": 0.05 ** 2, **_sided(0.45)},
        "corrlength 0.04 m, sided (floor 0.25)": {"corrlength": 0.04, "variance": 0.05 ** 2, **_sided(0.25)},
        "corrlength 0.04 m, sided (floor 0.35)": {"corrlength": 0.04, "variance": 0.05 ** 2, **_sided(0.35)},
        "corrlength 0.04 m, sided (floor 0.45)": {"corrlength": 0.04, "variance": 0.05 ** 2, **_sided(0.45)},
        "corrlength 0.08 m, sided (floor 0.25)": {"corrlength": 0.08, "variance": 0.05 ** 2, **_sided(0.25)},
        "corrlength 0.08 m, sided (floor 0.35)": {"corrlength": 0.08, "variance": 0.05 ** 2, **_sided(0.35)},
        "corrlength 0.08 m, sided (floor 0.45)": {"corrlength": 0.08, "variance": 0.05 ** 2, **_sided(0.45)},
        "corrlength 0.06 m, std 0.1, sided (floor 0.35)": {"corrlength": 0.06, "variance": 0.1 ** 2,
                                                           **_sided(0.35)},
        # the second moment of the simulator's targets instead of a stationary smoothness (ktc_prior)
        "simulated prior, std 0.05, sided (floor 0.35)": {"prior": "simulated", "variance": 0.05 ** 2,
                                                          **_sided(0.35)},
        "simulated prior, std 0.05, sided (floor 0.25)": {"prior": "simulated", "variance": 0.05 ** 2,
                                                          **_sided(0.25)},
        "simulated prior, std 0.1, sided (floor 0.35)": {"prior": "simulated", "variance": 0.1 ** 2,
                                                         **_sided(0.35)},
    },
}
LEVELS = tuple(range(1, 8))
SEED = 20_002


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=sorted(VARIANTS), required=True)
    ap.add_argument("--per-level", type=int, default=4, help="validation tanks per level")
    ap.add_argument("--variants", default=None, help="comma-separated numbers of the method's variants (0 = defaults)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop starting reconstructions after this long (resumable) and write the table so far")
    ap.add_argument("--drift", type=float, default=0.0,
                    help="validation tanks whose water drifts by a factor e^U(-D, D) between the empty tank and the "
                         "target (KTCSimConfig(drift=...)), as the public targets' water does")
    ap.add_argument("--sim-dir", type=Path, default=Path(__file__).resolve().parent / ".cache" / "ktc_validation")
    ap.add_argument("--records", type=Path, default=None, help="default results/ktc_options_<method>_records.jsonl")
    ap.add_argument("--out", type=Path, default=None, help="default results/ktc_options_<method>.md")
    args = ap.parse_args(argv)
    variants = VARIANTS[args.method]
    names = list(variants) if args.variants is None else [list(variants)[int(i)] for i in args.variants.split(",")]
    records = args.records or RESULTS / f"ktc_options_{args.method}_records.jsonl"
    out = args.out or RESULTS / f"ktc_options_{args.method}.md"
    ref = resolve_data_path("ktc2023/training/ref.mat")
    n = 7 * args.per_level
    if not 0 <= args.drift < 1:
        ap.error(f"--drift must be in [0, 1) (a log-conductivity half-range), got {args.drift}")
    sim_config = KTCSimConfig(n_samples=n, seed=SEED, shard_size=n, drift=args.drift)
    tag = sim_config.fingerprint()                     # records and tanks belong to this simulator
    sim = load_ktc_simulation(simulate_ktc(sim_config, args.sim_dir / f"{tag}_n{n}", reference=ref, log=None))
    mesh = ktc_mesh(h=0.014)
    cache = Cache(records)
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes is not None else math.inf
    for level in LEVELS:
        empty = load_ktc_reference(ref, level)
        for i in range(level - 1, n, 7):               # this level's seventh of the set
            ds = simulated_dataset(sim, i, empty)
            images = {}                                # reconstruction options → image of this tank
            for name in names:
                key = f"{args.method}|{name}|{level}|{i}|{SEED}|{tag}"
                if cache.get(key) is None and time.time() < deadline:
                    opts = variants[name]
                    # variants that differ only in the segmentation share one reconstruction
                    recon = repr(sorted((k, v) for k, v in opts.items() if k not in ktc.SEGMENTATION_OPTIONS))
                    if recon not in images:
                        res = ktc.reconstruct_ktc(ds, mesh, args.method, truth=sim["truth"][i], **opts)
                        images[recon] = res.image, res.wall_time
                        score = res.score
                    else:                              # the same reconstruction, segmented by this variant's rule
                        seg = ktc.segment_image(images[recon][0], opts["segmentation"],
                                                level=opts.get("segment_level", ktc.DEFAULT_SEGMENT_LEVEL))
                        score = ktc.score(seg, sim["truth"][i])
                    seconds = images[recon][1]
                    cache.put(key, dict(method=args.method, variant=name, level=level, tank=int(i), seed=SEED,
                                        simulator=tag, score=score, seconds=seconds))
                    print(f"{key}: {score:.3f} ({seconds:.1f} s)", flush=True)
    mine = [r for r in cache.rows.values() if r.get("method") == args.method and r.get("seed") == SEED
            and r.get("simulator") == tag]
    default = names[0]                                 # the differences are to the first variant asked for
    base = {(r["level"], r["tank"]): r["score"] for r in mine if r["variant"] == default}
    rows = []
    for name in variants:
        recs = [r for r in mine if r["variant"] == name]
        if not recs:
            continue
        diffs = [r["score"] - base[(r["level"], r["tank"])] for r in recs if (r["level"], r["tank"]) in base]
        per_level = [[r["score"] for r in recs if r["level"] == lv] for lv in LEVELS]
        rows.append([name, len(recs), P.fmt_ci([r["score"] for r in recs]),
                     "–" if name == default else P.fmt_ci(diffs),
                     " / ".join(f"{np.mean(s):.2f}" if s else "–" for s in per_level),
                     f"{np.median([r['seconds'] for r in recs]):.1f}"])
    text = "\n".join([machine_header(f"KTC2023: {args.method}'s options on simulated validation tanks"),
                      __doc__.split("\n\n")[1], "",
                      f"Simulator: `KTCSimConfig` defaults"
                      + (f" with `drift={args.drift:g}`" if args.drift else "")
                      + f", fingerprint `{tag}` (records of other simulators are "
                      "kept but not shown). Differences are paired, to the variant "
                      f"“{default}”, on the tanks both have.", "",
                      markdown_table(["variant", "tanks", "score", "paired Δ",
                                      "levels " + " / ".join(map(str, LEVELS)), "s / tank"], rows), ""])
    atomic_write_text(out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
