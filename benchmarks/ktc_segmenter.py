"""The learned KTC2023 segmenter on the 4 public training targets (all 7 levels) and on simulated held-out tanks.

Scores with the official rule (:func:`jaxeit.metrics.ktc_score`), next to the winners' self-reported
means on the same 4 targets (Denker et al. 2024). The training targets are never used for training
or for choosing settings. The simulated held-out set is a fresh simulation (another seed) scored the
same way.

    python benchmarks/ktc_segmenter.py [--workdir runs/ktc_unet] [--n-sim 70]   # → results/ktc_segmenter.md

Without ``--workdir`` it scores the shipped weights and writes their model card
(``jaxeit/realdata/weights/ktc_unet/segmenter.md``, the same text) beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_header, markdown_table  # noqa: E402

from jaxeit.io import data_dir, load_ktc2023, load_ktc_truth  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.realdata.ktc import score  # noqa: E402
from jaxeit.realdata.ktc_segmenter import SHIPPED, Segmenter  # noqa: E402
from jaxeit.realdata.ktc_simulator import KTCSimConfig, load_ktc_simulation, simulate_ktc  # noqa: E402

#: the winners' self-reported means on the 4 training targets, levels 1-7 (Denker et al. 2024)
WINNERS = (0.873, 0.881, 0.866, 0.838, 0.791, 0.643, 0.681)


def _shown(folder: Path) -> str:
    """The folder relative to the repository when inside it (no machine paths in the results)."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(folder.resolve().relative_to(root))
    except ValueError:
        return str(folder)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=SHIPPED,
                    help="a train_segmenter folder (segmenter.npz, segmenter.json); default: the shipped weights")
    ap.add_argument("--n-sim", type=int, default=70, help="simulated held-out tanks (10 per level)")
    ap.add_argument("--sim-dir", type=Path, default=Path(__file__).resolve().parent / ".cache" / "ktc_heldout")
    ap.add_argument("--out", type=Path, default=RESULTS / "ktc_segmenter.md")
    args = ap.parse_args(argv)
    folder = data_dir() / "ktc2023" / "training"
    ref = folder / "ref.mat"
    if not ref.exists():
        sys.exit(f"KTC2023 data not found at {folder} (set JAXEIT_DATA)")
    seg = Segmenter.load(args.workdir, reference=ref)
    card = json.loads((args.workdir / "segmenter.json").read_text())
    rows, means = [], []
    t0 = time.perf_counter()
    for level in range(1, 8):
        scores = []
        for k in range(1, 5):
            ds = load_ktc2023(folder / f"data{k}.mat", ref, level=level)
            scores.append(score(seg.segment(ds.voltages, ds.reference, level), load_ktc_truth(folder / f"true{k}.mat")))
        means.append(float(np.mean(scores)))
        rows.append([level, *[f"{s:.3f}" for s in scores], f"{means[-1]:.3f}", f"{WINNERS[level - 1]:.3f}"])
    seconds = (time.perf_counter() - t0) / 28
    sim = load_ktc_simulation(simulate_ktc(KTCSimConfig(n_samples=args.n_sim, seed=10_001, shard_size=args.n_sim),
                                           args.sim_dir, reference=ref, log=None))
    sim_rows = []
    for level in range(1, 8):
        idx = np.arange(level - 1, args.n_sim, 7)
        labels = seg.segment(sim["voltages"][idx], sim["reference"][idx], level)
        s = [score(a, b) for a, b in zip(labels, sim["truth"][idx])]
        sim_rows.append([level, len(s), f"{np.mean(s):.3f} ± {np.std(s, ddof=1) / np.sqrt(len(s)) * 1.96:.3f}"])
    text = "\n".join([
        machine_header("KTC2023: the learned segmenter"),
        f"Model: `{_shown(args.workdir)}` — {card['steps']} steps, {card['samples_seen']:,} samples seen "
        f"({card['epochs']:.2f} epochs of {card['training_samples']:,} simulated tanks), {card['wall_time_s'] / 60:.0f} min "
        f"of training on {card['device']}; stop reason: {card['stop_reason']}; best validation cross-entropy "
        f"{card['early_stop'].get('best')} at step {card['early_stop'].get('best_step')}.", "",
        "## The 4 public training targets (official score; never used for training or for settings)", "",
        markdown_table(["level", "target 1", "target 2", "target 3", "target 4", "mean", "winners (self-reported)"],
                       rows), "",
        f"Sum over levels: {sum(means):.2f} (winners' means: {sum(WINNERS):.2f}). "
        f"{seconds:.2f} s per target (segmentation only; the linearised operators are set up once).", "",
        f"## Simulated held-out tanks (seed 10001, {args.n_sim} tanks, each level on its own 1/7; mean ± 95 % CI)", "",
        markdown_table(["level", "tanks", "score"], sim_rows), ""])
    atomic_write_text(args.out, text)
    if args.workdir.resolve() == SHIPPED.resolve():   # the model card beside the shipped weights
        atomic_write_text(SHIPPED / "segmenter.md", text)
    print(text)


if __name__ == "__main__":
    main()
