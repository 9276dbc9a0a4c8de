"""Training throughput (images/s) of the prior U-Net, the CNF, the CVAE and the score model.

Each model trains on synthetic data of the right shapes through the library's
own trainer (the prior: ``jaxeit.priors.train.make_train_step``; the DGM
models: ``train_cnf`` / ``train_cvae`` / ``train_score``, which share
``jaxeit.dgm.training.run_loop``). A first run of K₁ steps compiles (the
trainers cache their jitted steps); the second run of K₂ steps is timed:
images/s = K₂·B / t₂ (model initialisation included, compilation not).

    python benchmarks/gpu/training_throughput.py [--quick] [--sizes 64,128] [--steps 20,120]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu import markdown_table, write_report  # noqa: E402

from jaxeit.dgm import CNFConfig, CVAEConfig, FitConfig, ScoreConfig, train_cnf, train_cvae, train_score  # noqa: E402
from jaxeit.priors.train import TrainConfig, init_state, make_train_step  # noqa: E402


def _fake_data(n, size, seed=0):
    rng = np.random.default_rng(seed)
    img = (1.0 + 0.5 * (rng.random((n, size, size)) > 0.8)).astype(np.float32)
    return {"image": img, "gn_image": (img + 0.1 * rng.standard_normal(img.shape)).astype(np.float32),
            "voltages": rng.standard_normal((n, 208)).astype(np.float64)}


def warm_rate(run, k1, k2, batch):
    """images/s of ``run(k)`` (k steps, blocking): a warm-up run of k1 steps, then k2 steps timed."""
    run(k1)
    t0 = time.perf_counter()
    run(k2)
    return k2 * batch / (time.perf_counter() - t0)


def dgm_rows(size, batch, k1, k2):
    """Yields one row per DGM model."""
    fit = FitConfig(epochs=1, batch_size=batch, lr=1e-4, log_every=max(1, k1))
    data = _fake_data(batch * k2, size)

    def cnf(k):
        train_cnf(CNFConfig(image_size=size, fit=fit), {key: data[key][:batch * k] for key in ("image", "gn_image")},
                  progress=False, log=None)
    yield ["CNF", size, batch, warm_rate(cnf, k1, k2, batch)]

    def cvae(k):
        cfg = CVAEConfig(image_size=size, vae=fit, mlp=dataclasses.replace(fit, batch_size=batch))
        train_cvae(cfg, {key: data[key][:batch * k] for key in ("image", "voltages")}, progress=False, log=None)
    # both stages run: the rate counts one image per stage step
    yield ["CVAE (VAE + MLP stages)", size, batch, 2 * warm_rate(cvae, k1, k2, batch)]

    sbatch = max(batch, 32)
    sdata = _fake_data(sbatch * k2, size)["image"]
    score_cfg = ScoreConfig(image_size=size, base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1,
                            fit=FitConfig(epochs=1, batch_size=sbatch, lr=1e-4, log_every=max(1, k1)))

    def score(k):
        train_score(sdata[:sbatch * k], score_cfg, key=jax.random.PRNGKey(0), progress=False, log=None)
    yield ["score U-Net (VE, 32 base channels)", size, sbatch, warm_rate(score, k1, k2, sbatch)]


def prior_row(size, batch, k1, k2):
    cfg = TrainConfig(image_size=size, batch_size=batch, steps=2500)   # steps only shape the lr schedule
    step = make_train_step(cfg)

    def run(k):
        state = init_state(cfg)
        for _ in range(k):
            state, m = step(state)
        jax.block_until_ready(m)
    return ["Diff-INR prior U-Net (improved DDPM)", size, batch, warm_rate(run, k1, k2, batch)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="32 px, few steps (CPU smoke run)")
    ap.add_argument("--sizes", default=None, help="image sizes (default 64,128; quick 32)")
    ap.add_argument("--batch", type=int, default=None, help="CNF/CVAE batch (default 32; quick 8)")
    ap.add_argument("--steps", default=None, help="warm-up,timed steps (default 20,120; quick 2,6)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or ("32" if args.quick else "64,128")).split(",")]
    batch = args.batch or (8 if args.quick else 32)
    k1, k2 = (int(k) for k in (args.steps or ("2,6" if args.quick else "20,120")).split(","))
    rows, note = [], ""
    try:
        for size in sizes:
            rows.append(prior_row(size, 32, k1, k2))
            print(rows[-1], flush=True)
            for r in dgm_rows(size, batch, k1, k2):
                rows.append(r)
                print(r, flush=True)
    except KeyboardInterrupt:   # stopped at a time limit: report what finished
        note = "**Stopped before the end (time limit): the table holds the finished rows only.**\n\n"
    body = (note +f"Images per second of training (forward + backward + optimiser): {k2} steps timed after a "
            f"{k1}-step warm-up run that compiles. Synthetic data of the right shapes.\n\n"
            + markdown_table(["model", "image size", "batch", "images/s"], rows) + "\n")
    write_report("training", "Training throughput", body, args.out)


if __name__ == "__main__":
    main()
