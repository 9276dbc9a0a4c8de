"""Train a DGM model for shipping: data, budgeted resumable training, validation scores, model card.

One model per call: ``--kind`` cnf | cvae | score on one of the paper's settings
(2 or 4 circles at 40 or 25 dB). The steps:

1. the data set (``jaxeit.data.simulate``; the paper's 21,600 / 2,160 split by
   default, generated once under ``--workdir`` and reused);
2. training with the package's trainer, checkpointed under ``--workdir`` and
   resumed by the next call with the same arguments; ``--minutes`` is the
   training's wall-clock budget in total, earlier runs included (runs chain: 8
   minutes on a GPU, then ``--minutes 16`` for 8 more), early stopping on the
   validation loss (``--patience`` evaluations);
3. validation scores on the first ``--n-eval`` validation samples: the paper's
   metrics (whole image, 0 outside the disk, scikit-image SSIM window), the
   contrast correlation r, the GN input's scores beside them, and for the
   samplers the coverage of ±2 posterior std; for ``score`` CSD*'s ``t0`` is
   chosen here, on validation data, from ``--t0-grid``;
4. :func:`jaxeit.dgm.save_pretrained` as ``<kind>_<setting>`` with the model card
   ``<kind>_<setting>.md`` beside it: with ``--ship`` to ``--out`` (default
   ``jaxeit/dgm/weights``), otherwise to ``<workdir>/<setting>_<size>px/weights``.

    python benchmarks/dgm_pretrain.py --kind cnf --setting c4_40db --minutes 20 --ship
    python benchmarks/dgm_pretrain.py --kind cnf --setting c4_40db --size 64 --minutes 8 --workdir $OUT/w  # GPU
    python benchmarks/dgm_pretrain.py --kind cnf --setting c2_40db --quick                   # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

import jaxeit  # noqa: E402,F401  (float64 for the FEM)
from jaxeit import metrics  # noqa: E402
from jaxeit.data import PAPER_SPLITS, SimulationConfig, load_split, simulate  # noqa: E402
from jaxeit.data.simulate import make_mesh  # noqa: E402
from jaxeit.dgm import (CNFConfig, CVAEConfig, FitConfig, ScoreConfig, load_pretrained,  # noqa: E402
                        save_pretrained, train_cnf, train_cvae, train_score)
from jaxeit.io_utils import atomic_write_text  # noqa: E402

from _common import machine_header, markdown_table  # noqa: E402
from dgm import SETTINGS  # noqa: E402  (setting → (circles, SNR dB), the paper's Tests 1–2)

#: iterations at most of the LM input of CSD* (a relative decrease < 1e-4 stops earlier)
LM_ITERATIONS = 10

#: epochs of the paper's code per kind (CVAE: both stages), for the card's "fraction of the paper"
PAPER_EPOCHS = {"cnf": 320, "cvae": 350 + 800, "score": 1482}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("cnf", "cvae", "score"), required=True)
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="c4_40db")
    ap.add_argument("--size", type=int, default=32, help="image size in px (paper 128)")
    ap.add_argument("--n-train", type=int, default=PAPER_SPLITS[0])
    ap.add_argument("--n-val", type=int, default=PAPER_SPLITS[1])
    ap.add_argument("--n-eval", type=int, default=200, help="validation samples scored for the card")
    ap.add_argument("--minutes", type=float, default=20.0,
                    help="training wall-clock budget in total: a resumed run counts the minutes already trained "
                         "(CVAE: half per stage)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs at most (default: the paper code's)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--patience", type=int, default=5, help="validation evaluations without improvement")
    ap.add_argument("--eval-every", type=int, default=None, help="steps between validation losses (default: 1 epoch)")
    ap.add_argument("--t0-grid", default="0.2,0.3,0.45", help="CSD* start times tried on validation")
    ap.add_argument("--csd-steps", type=int, default=50,
                    help="CSD* reverse steps from t0 (the shipped csd method's default; the paper: N·t0 = 550)")
    ap.add_argument("--csd-input", choices=("lm", "gn"), default="lm",
                    help="CSD*'s input: the iterative LM image (the paper's GN) or the one-step GN image")
    ap.add_argument("--lm-alphas", default="0.3,1,3", help="LM weights tried on validation (CSD*'s LM input)")
    ap.add_argument("--samples", type=int, default=20, help="posterior samples per image in the scores")
    ap.add_argument("--workdir", type=Path, default=Path("out/dgm_pretrain"))
    ap.add_argument("--ship", action="store_true",
                    help="save the model and its card into jaxeit/dgm/weights (or --out); without it they go to "
                         "<workdir>/<setting>_<size>px/weights")
    ap.add_argument("--out", type=Path, default=None, help="where to ship (default jaxeit/dgm/weights)")
    ap.add_argument("--default", action="store_true", help="mark it the default of its kind for its geometry")
    ap.add_argument("--quick", action="store_true", help="tiny data and 30 s of training (smoke run)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_train, args.n_val, args.n_eval, args.minutes, args.samples = 256, 64, 16, 0.5, 4
        args.t0_grid, args.csd_steps, args.lm_alphas = "0.3", 10, "1"
    return args


def simulation_config(args) -> SimulationConfig:
    n_circles, snr = SETTINGS[args.setting]
    # seed = number of circles, as benchmarks/dgm.py: the 40 and 25 dB sets share phantoms
    return SimulationConfig(n_circles=n_circles, snr_db=snr, image_size=args.size, seed=n_circles,
                            n_train=args.n_train, n_val=args.n_val, n_test=0, shard_size=2048)


def model_config(args):
    """The kind's config: the paper code's architecture and optimiser, this call's budget and early stopping."""
    budget = 60.0 * args.minutes
    fit = dict(max_seconds=budget, patience=args.patience, eval_every=args.eval_every, seed=0, log_every=100,
               checkpoint_every=1000)
    if args.kind == "cnf":
        return CNFConfig(image_size=args.size, fit=FitConfig(
            epochs=args.epochs or PAPER_EPOCHS["cnf"], batch_size=args.batch_size or 8, lr=1e-3,
            weight_decay=1e-5, grad_clip=1.0, **fit))
    if args.kind == "cvae":
        b = args.batch_size or 8
        half = dict(fit, max_seconds=budget / 2)
        # the VAE's summed pixel loss is (n/128)² of the paper's: the KL weight keeps the paper's balance
        return CVAEConfig(image_size=args.size, kl_weight=(args.size / 128) ** 2,
                          vae=FitConfig(epochs=args.epochs or 350, batch_size=b, lr=7e-4, **half),
                          mlp=FitConfig(epochs=args.epochs or 800, batch_size=b, lr=3e-4, **dict(half, seed=1)))
    fit["patience"] = None   # train_score has no validation loss: it runs to its budget or epochs
    if args.size >= 128:
        return ScoreConfig(image_size=args.size, fit=dataclasses.replace(
            ScoreConfig.fit, epochs=args.epochs or PAPER_EPOCHS["score"], **fit))
    return ScoreConfig(image_size=args.size, base_channels=32, channel_mult=(1, 2, 2) if args.size <= 32 else
                       (1, 2, 2, 2), num_res_blocks=1, warmup=200,
                       fit=FitConfig(epochs=args.epochs or PAPER_EPOCHS["score"], batch_size=args.batch_size or 32,
                                     lr=1e-3, grad_clip=1.0, **fit))


def train(args, config, train_data, val_data, workdir: Path):
    progress = not args.no_progress
    tag = f"{args.setting} {args.size}px {args.n_train}"
    if args.kind == "cnf":
        return train_cnf(config, train_data, workdir=workdir, data_tag=tag, progress=progress, val=val_data)
    if args.kind == "cvae":
        return train_cvae(config, train_data, workdir=workdir, data_tag=tag, progress=progress, val=val_data)
    return train_score(train_data["image"], config, workdir, key=jax.random.PRNGKey(0), data_tag=tag,
                       progress=progress)


def scores(images, truth, mask, background, std=None) -> dict:
    """Mean validation scores: the paper's metrics, r, and the ±2 std coverage, all on the whole image with
    0 outside the disk (the paper's convention; r correlates σ − σ_bg there)."""
    out = {k: float(np.mean(v)) for k, v in metrics.paper_metrics(images, truth, mask).items()}
    x = np.where(mask, images - background, 0.0).reshape(len(images), -1)
    t = np.where(mask, truth - background, 0.0).reshape(len(truth), -1)
    r = [float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0 for a, b in zip(x, t)]
    out["r"] = float(np.mean(r))
    if std is not None:
        inside = np.broadcast_to(mask, truth.shape)
        out["coverage ±2 std"] = float(np.mean((np.abs(truth - images) <= 2 * std)[inside]))
    return out


def time_reconstruction(pm, method: str, v, directory, repeats: int = 5) -> float:
    """Median seconds of ``reconstruct(fm, v, method)`` on the model's geometry, after compilation."""
    from jaxeit.recon import reconstruct

    fm = pm.forward_model()
    opts = dict(weights=pm.name, weights_dir=str(directory))
    reconstruct(fm, v, method, **opts)                       # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        reconstruct(fm, v, method, **opts)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def evaluate(args, pm, val):
    """Validation scores of the trained model (and its GN input), and the choices made on them."""
    mask, bg = pm.operators.mask, pm.simulation.background
    truth = val["image"]
    key = jax.random.PRNGKey(7)
    rows = {"GN (one linearised step, the data set's)": scores(pm.masked(val["gn_image"]), truth, mask, bg)}
    choices = {}
    if pm.kind == "cnf":
        xs = pm.masked(pm.model.sample(val["gn_image"], key, n_samples=args.samples))
        rows["CNF"] = scores(xs.mean(0), truth, mask, bg, xs.std(0))
    elif pm.kind == "cvae":
        rows["CVAE"] = scores(pm.masked(pm.model.reconstruct(val["voltages"]).image), truth, mask, bg)
    else:
        gn = val["gn_image"]
        if args.csd_input == "lm":   # the paper's input: the iterative LM image, its weight chosen here
            lm = {a: pm.operators.lm_image(val["voltages"], alpha=a, max_iter=LM_ITERATIONS)
                  for a in (float(x) for x in args.lm_alphas.split(","))}
            for a, images in lm.items():
                rows[f"GN (LM, alpha = {a:g})"] = scores(pm.masked(images), truth, mask, bg)
            choices["lm_alpha"] = max(lm, key=lambda a: rows[f"GN (LM, alpha = {a:g})"]["SSIM"])
            choices["lm_iterations"] = LM_ITERATIONS
            gn = lm[choices["lm_alpha"]]
        choices["csd_input"], choices["n_steps"] = args.csd_input, args.csd_steps
        best = None
        for t0 in [float(x) for x in args.t0_grid.split(",")]:
            res = pm.model.reconstruct(gn, key, t0=t0, n_samples=args.samples, n_steps=args.csd_steps)
            rows[f"CSD* t0 = {t0:g}"] = scores(pm.masked(res.image), truth, mask, bg, pm.masked(res.extras["std"]))
            if best is None or rows[f"CSD* t0 = {t0:g}"]["SSIM"] > rows[f"CSD* t0 = {best:g}"]["SSIM"]:
                best = t0
        choices["t0"] = best
    return rows, choices


def card_markdown(name, pm, card, rows) -> str:
    t = card["training"]
    lines = [machine_header(f"DGM model `{name}`"), "",
             f"`jaxeit.dgm.load_pretrained({name!r})`; `reconstruct(fm, v, {card['method']!r})` with "
             f"`fm = load_pretrained({name!r}).forward_model()` (the training geometry; other geometries are refused).",
             "",
             "## Training data", "",
             f"- {card['data']}",
             f"- split: {t['n_train']} training / {t['n_val']} validation samples (paper: 21,600 / 2,160); "
             f"images {pm.image_size}×{pm.image_size} px (paper 128).",
             "",
             "## Training", "",
             f"- trainer: `jaxeit.training` through `jaxeit.dgm.fit`; config in the `.npz` and `.json`.",
             f"- parameters: {t['parameters']:,}",
             f"- steps: {t['steps']}; images seen: {t['images_seen']:,} = {t['epochs']:.1f} epochs; "
             f"{100 * t['paper_fraction']:.1f} % of the paper code's {t['paper_epochs']} epochs × 21,600",
             f"- wall time: {t['wall_minutes']:.1f} min on {t['device']}; stop reason: {t['stop_reason']}",
             f"- best validation loss: {t['best_val_loss']} (step {t['best_step']})",
             "",
             f"## Validation scores (first {card['n_eval']} validation samples; never the test split)", "",
             "Paper convention: whole image, 0 outside the disk, scikit-image's 7×7 SSIM window; r = Pearson "
             "correlation of σ − 1 over the same whole image (σ − 1 set to 0 outside the disk).", ""]
    keys = ["MSE", "PSNR", "SSIM", "RE", "DR", "r", "coverage ±2 std"]
    lines.append(markdown_table(["method"] + keys, [[m] + [f"{r[k]:.4g}" if k in r else "–" for k in keys]
                                                   for m, r in rows.items()]))
    if card.get("seconds_per_reconstruction") is not None:
        lines += ["", f"`reconstruct(fm, v, {card['method']!r})` (its defaults): "
                      f"{card['seconds_per_reconstruction']:.2f} s per reconstruction after compilation on "
                      f"{t['device']} (median of 5, GN image and element averages included)."]
    if card.get("t0") is not None:
        lines += ["", f"CSD*'s start time t0 = {card['t0']:g}, chosen on these validation samples by SSIM "
                      f"(the `csd` method's default), {card.get('n_steps') or 'N·t0'} reverse steps; input: "
                      + (f"the iterative LM image (weight {card['lm_alpha']:g} chosen on the same samples, "
                         f"≤ {card['lm_iterations']} iterations)." if card.get("csd_input") == "lm" else
                         "the one-step GN image.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    sim = simulation_config(args)
    workdir = args.workdir / f"{args.setting}_{args.size}px"
    t_start = time.perf_counter()
    root = simulate(sim, workdir / "data", progress=not args.no_progress)
    fields = ("image", "gn_image", "voltages")
    train_data = load_split(root, "train", fields=fields)
    val_data = load_split(root, "val", fields=fields)
    config = model_config(args)
    model = train(args, config, train_data, val_data, workdir / args.kind)
    print(f"[{args.kind}] trained in {(time.perf_counter() - t_start) / 60:.1f} min (this call)", flush=True)

    name = f"{args.kind}_{args.setting}" + ("" if args.size == 32 else f"_{args.size}px")
    # --ship: into the package (or --out); otherwise beside the checkpoints, so that a trial run
    # never replaces a shipped model
    out = args.out or (Path(jaxeit.__file__).resolve().parent / "dgm" / "weights" if args.ship else
                       workdir / "weights")
    if args.quick:
        out = workdir / "quick_weights"
    mesh, _ = make_mesh(sim)
    summary = model.summary if args.kind != "cvae" else (model.summary.get("mlp") or model.summary.get("vae", {}))
    steps = summary.get("steps") or 0
    if args.kind == "cvae":
        steps = sum((model.summary.get(s) or {}).get("steps") or 0 for s in ("vae", "mlp"))
    batch = config.fit.batch_size if args.kind != "cvae" else config.vae.batch_size
    images_seen = steps * batch
    wall = (sum((model.summary.get(s) or {}).get("wall_time", 0.0) for s in ("vae", "mlp"))
            if args.kind == "cvae" else summary.get("wall_time", 0.0))
    card = {"method": {"cnf": "cnf", "cvae": "cvae", "score": "csd"}[args.kind], "setting": args.setting,
            "default": bool(args.default), "n_eval": args.n_eval,
            "data": f"{sim.n_circles} circles, {sim.snr_db:g} dB (jaxeit.data.simulate, seed {sim.seed}; the "
                    f"paper's point electrodes, adjacent protocol, background {sim.background:g})",
            "training": {"n_train": args.n_train, "n_val": args.n_val, "steps": steps, "images_seen": images_seen,
                         "epochs": images_seen / args.n_train, "paper_epochs": PAPER_EPOCHS[args.kind],
                         "paper_fraction": images_seen / (PAPER_EPOCHS[args.kind] * PAPER_SPLITS[0]),
                         "wall_minutes": wall / 60, "device": jax.devices()[0].device_kind,
                         "date": datetime.date.today().isoformat(),
                         "stop_reason": summary.get("stop_reason") if args.kind != "cvae" else
                         {s: (model.summary.get(s) or {}).get("stop_reason") for s in ("vae", "mlp")},
                         "best_val_loss": summary.get("best_val_loss"), "best_step": summary.get("best_step")}}
    if args.kind != "score":
        card["training"]["parameters"] = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(
            model.params if args.kind == "cnf" else (model.vae_params, model.mlp_params))))
    else:
        card["training"]["parameters"] = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(model.params)))
    path = save_pretrained(out, name, args.kind, model, sim, mesh, card)
    pm = load_pretrained(name, directory=out)
    apparent = pm.apparent_background(train_data["voltages"])
    card["apparent_background"] = [float(np.min(apparent)), float(np.max(apparent))]   # the data check's range
    val = {k: v[:args.n_eval] for k, v in val_data.items()}
    rows, choices = evaluate(args, pm, val)
    card.update(choices, validation=rows)
    if args.kind != "score" or not args.quick:
        card["seconds_per_reconstruction"] = time_reconstruction(pm, card["method"], val["voltages"][0], out)
    path = save_pretrained(out, name, args.kind, model, sim, mesh, card)    # the card with its scores
    text = card_markdown(name, pm, card, rows)
    atomic_write_text(path.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
