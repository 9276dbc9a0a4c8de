"""CSD*: what limits it — the score model's training or the reverse steps? Scored on validation samples only.

CSD* (score SDE post-processing of the LM image) on the first ``--n-val`` validation samples of a
training set of ``benchmarks/dgm_pretrain.py``, for each score model given (e.g. the shipped one and
a longer-trained one) and each number of reverse steps, at one start time ``--t0``. The LM input is
the one the shipped card chose (weight ``--lm-alpha``, ≤ 10 iterations), the same for every row, and
so is the key of the samplers. Metrics in the paper's convention (whole image, 0 outside the disk),
r and the ±2 std coverage, as in the model cards.

    python benchmarks/dgm_csd_ablation.py --model shipped=jaxeit/dgm/weights \\
        --model longer=out/score_c2_v2 --steps 50,150                  # → results/dgm_csd_ablation.md

A model is ``NAME=FOLDER`` holding ``score_<setting>.npz`` (``jaxeit.dgm.load_pretrained``); the
longer-trained one comes from ``dgm_pretrain.py --kind score --setting c2_40db --minutes 110 --out FOLDER``
resumed from the 30-minute run's checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

from _common import RESULTS, machine_header, markdown_table  # noqa: E402
from dgm_pretrain import LM_ITERATIONS, scores  # noqa: E402

from jaxeit.data import load_split  # noqa: E402
from jaxeit.dgm import load_pretrained  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402

KEYS = ("SSIM", "MSE", "RE", "r", "coverage ±2 std")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", default="c2_40db")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER",
                    help="a score model: a name and the folder of its score_<setting>.npz (repeatable)")
    ap.add_argument("--steps", default="50,150", help="comma-separated reverse-step counts")
    ap.add_argument("--t0", type=float, default=0.3, help="CSD*'s start time (the shipped card's)")
    ap.add_argument("--lm-alpha", type=float, default=1.0, help="the LM input's weight (the shipped card's)")
    ap.add_argument("--n-val", type=int, default=24, help="validation samples (the cards score the first 24)")
    ap.add_argument("--samples", type=int, default=4, help="posterior samples per image")
    ap.add_argument("--workdir", type=Path, default=Path("out/dgm_pretrain"),
                    help="dgm_pretrain.py's workdir (its <setting>_32px/data)")
    ap.add_argument("--out", type=Path, default=RESULTS / "dgm_csd_ablation.md")
    args = ap.parse_args(argv)
    models = {}
    for item in args.model:
        name, _, folder = item.partition("=")
        if not folder:
            ap.error(f"--model {item!r}: give NAME=FOLDER")
        models[name] = load_pretrained(f"score_{args.setting}", directory=folder)
    root = args.workdir / f"{args.setting}_32px" / "data"
    if not root.exists():
        sys.exit(f"no data set at {root}: run benchmarks/dgm_pretrain.py --setting {args.setting} first")
    val = {k: v[:args.n_val] for k, v in load_split(root, "val", fields=("image", "voltages")).items()}
    first = next(iter(models.values()))
    mask, bg = first.operators.mask, first.simulation.background
    lm = first.operators.lm_image(val["voltages"], alpha=args.lm_alpha, max_iter=LM_ITERATIONS)
    lm_scores = scores(first.masked(lm), val["image"], mask, bg)
    rows = [["LM input", "–", "–", "–", *[f"{lm_scores[k]:.4g}" for k in KEYS[:-1]], "–", "–"]]
    for steps in (int(s) for s in args.steps.split(",")):
        for name, pm in models.items():
            t = time.perf_counter()
            res = pm.model.reconstruct(lm, jax.random.PRNGKey(7), t0=args.t0, n_samples=args.samples, n_steps=steps)
            r = scores(pm.masked(res.image), val["image"], mask, bg, pm.masked(res.extras["std"]))
            training = pm.card["training"]
            rows.append([name, training["steps"], f"{training['epochs']:.1f}", steps, *[f"{r[k]:.4g}" for k in KEYS],
                         f"{time.perf_counter() - t:.0f}"])
            print(" | ".join(str(x) for x in rows[-1]), flush=True)
    text = "\n".join([
        machine_header("CSD*: training length against reverse steps (validation samples)"),
        __doc__.split("\n\n")[1], "",
        f"Setting {args.setting}; first {args.n_val} validation samples; t0 = {args.t0:g}; {args.samples} posterior "
        f"samples per image; LM input weight {args.lm_alpha:g}.", "",
        markdown_table(["model", "training steps", "epochs", "reverse steps", *KEYS, "s (all samples)"], rows), ""])
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
