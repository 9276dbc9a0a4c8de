"""``jaxeit simulate``: generate a paired data set from the command line.

Also runnable as ``python -m jaxeit.data.cli``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..signals import Interrupted
from .config import PAPER_SPLITS, SimulationConfig

__all__ = ["build_parser", "config_from_args", "main"]

_EPILOG = """\
examples:
  # the paper's 2-anomaly, 40 dB set (23,810 samples, 128 x 128, pyEIT mesh, point electrodes)
  jaxeit simulate out/data/c2_40db --circles 2 --snr 40

  # a small 64 x 64 set with 4 anomalies at 25 dB
  jaxeit simulate out/data/c4_25db --circles 4 --snr 25 --size 64 --n-train 4000 --n-val 400 --n-test 200

  # a tiny smoke-test set (16 x 16 images, coarse mesh, 32 samples)
  jaxeit simulate /tmp/tiny_data --size 16 --h0 0.3 --mesh-samples 16 --supersample 2 --n-train 32 --n-val 0 \\
      --n-test 0 --chunk-size 32 --shard-size 32 --no-progress

  # complete electrode model on a jaxeit disk mesh, iterative Gauss-Newton images
  jaxeit simulate out/data/c2_cem --electrode-model cem --gn iterative --n-train 1000 --n-val 100 --n-test 100

An interrupted run resumes where it stopped when started again with the same
arguments (complete shards are verified by SHA-256 and skipped).
"""


def build_parser(prog: str = "jaxeit simulate") -> argparse.ArgumentParser:
    d = SimulationConfig()
    ap = argparse.ArgumentParser(prog=prog, description="Simulate a paired EIT data set (conductivity, "
                                 "ground-truth image, noisy voltages, Gauss-Newton image) in .npz shards.",
                                 epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder (created; resumed if it holds the same data set)")
    g = ap.add_argument_group("phantoms and noise")
    g.add_argument("--circles", type=int, choices=(2, 4), default=d.n_circles, help="anomalies per phantom")
    g.add_argument("--snr", type=float, default=d.snr_db, help="signal-to-noise ratio in dB (default 40)")
    g.add_argument("--circle-values", choices=("fixed", "random"), default=d.circle_values,
                   help="fixed: circle k gets the k-th value of the paper's set; random: drawn per circle")
    g = ap.add_argument_group("forward model")
    g.add_argument("--electrode-model", choices=("point", "cem"), default=d.electrode_model)
    g.add_argument("--mesh", choices=("auto", "pyeit", "disk"), default=d.mesh,
                   help="auto: pyEIT mesh for point electrodes when pyeit is installed, else a jaxeit disk")
    g.add_argument("--h0", type=float, default=d.h0, help="mesh element size (pyEIT default 0.1)")
    g.add_argument("--mesh-samples", type=int, default=d.mesh_samples,
                   help="sub-triangles per element for the phantom's element averages (a square)")
    g = ap.add_argument_group("images and Gauss-Newton")
    g.add_argument("--size", type=int, default=d.image_size, help="image size in pixels (default 128)")
    g.add_argument("--supersample", type=int, default=d.image_supersample,
                   help="sub-pixels per pixel side for the ground-truth pixel averages")
    g.add_argument("--gn", choices=("linear", "iterative"), default=d.gn_method,
                   help="one precomputed linearised step (fast, default) or iterative GN per sample")
    g.add_argument("--gn-param", choices=("log", "linear"), default=d.gn_param)
    g.add_argument("--gn-prior", choices=("lm", "kotre", "laplace", "tikhonov"), default=d.gn_prior)
    g.add_argument("--gn-alpha", type=float, default=d.gn_alpha, help="dimensionless regularisation weight")
    g.add_argument("--gn-iterations", type=int, default=d.gn_iterations)
    g = ap.add_argument_group("sizes")
    g.add_argument("--n-train", type=int, default=PAPER_SPLITS[0])
    g.add_argument("--n-val", type=int, default=PAPER_SPLITS[1])
    g.add_argument("--n-test", type=int, default=PAPER_SPLITS[2])
    g.add_argument("--shard-size", type=int, default=d.shard_size)
    g.add_argument("--chunk-size", type=int, default=d.chunk_size, help="samples per vmapped batch")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--compress", action="store_true", help="write compressed shards")
    ap.add_argument("--overwrite", action="store_true", help="replace a data set of another config in OUT")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    return SimulationConfig(n_circles=args.circles, snr_db=args.snr, circle_values=args.circle_values,
                            electrode_model=args.electrode_model, mesh=args.mesh, h0=args.h0,
                            mesh_samples=args.mesh_samples, image_size=args.size,
                            image_supersample=args.supersample, gn_method=args.gn, gn_param=args.gn_param,
                            gn_prior=args.gn_prior, gn_alpha=args.gn_alpha, gn_iterations=args.gn_iterations,
                            n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                            shard_size=args.shard_size, chunk_size=args.chunk_size, seed=args.seed,
                            compress=args.compress)


def main(argv=None, prog: str = "jaxeit simulate") -> int:
    """Parse ``argv``, simulate, print the folder; 0 on success, 2 on a usage or data error."""
    args = build_parser(prog).parse_args(argv)
    try:
        from .simulate import simulate

        root = simulate(config_from_args(args), args.out, progress=not args.no_progress,
                        overwrite=args.overwrite)
    except Interrupted as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m jaxeit.data.cli"))
