"""How much the image size alone moves the DGM paper's metrics: the same reconstructions at 32, 64, 128 px.

The shipped DGM models work on 32×32 images; the paper's on 128×128. Its metrics (whole image, 0
outside the disk, scikit-image's uniform 7×7 SSIM window) depend on the pixel size: a 7×7 window
spans 22 % of the disk's width at 32 px and 5 % at 128 px. This script scores methods whose output
does not depend on the image size — the one-step GN and the iterative LM (the paper's GN) give
element values, rendered like the data sets' GN images — and the constant background, against the
same phantoms rendered exactly at each size (``jaxeit.data.Simulator`` with the data set's seeds).
The difference between rows of one method is the pixel size's share of a gap to the paper's numbers.

Validation samples only (``benchmarks/dgm_pretrain.py``'s data set of the setting), never the test split.

    python benchmarks/dgm_resolution.py --setting c2_40db --n 100        # → results/dgm_resolution_c2_40db.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import RESULTS, machine_header, markdown_table  # noqa: E402
from _protocol import mean_ci  # noqa: E402

from jaxeit.data import SimulationConfig, Simulator, load_split, read_metadata  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402
from jaxeit.metrics import paper_metrics  # noqa: E402

#: the paper's GN rows (Tables 1–4, 128 px): SSIM and RE
PAPER_GN = {"c2_40db": (0.874, 0.034), "c4_40db": (0.794, 0.061), "c2_25db": (0.804, 0.059),
            "c4_25db": (0.747, 0.092)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", default="c2_40db", choices=sorted(PAPER_GN))
    ap.add_argument("--n", type=int, default=100, help="validation samples (the first n)")
    ap.add_argument("--sizes", default="32,64,128", help="image sizes in px")
    ap.add_argument("--lm-alphas", default="0.3,1,3", help="LM weights (the shipped cards chose 1 at 32 px)")
    ap.add_argument("--lm-iterations", type=int, default=10)
    ap.add_argument("--workdir", type=Path, default=Path("out/dgm_pretrain"),
                    help="dgm_pretrain.py's workdir (its <setting>_32px/data)")
    ap.add_argument("--out", type=Path, default=None, help="default results/dgm_resolution_<setting>.md")
    args = ap.parse_args(argv)
    root = args.workdir / f"{args.setting}_32px" / "data"
    if not root.exists():
        sys.exit(f"no data set at {root}: run benchmarks/dgm_pretrain.py --setting {args.setting} first")
    config = SimulationConfig.from_dict(read_metadata(root)["config"])
    val = load_split(root, "val", fields=("index", "image", "voltages", "gn_sigma"), limit=args.n)
    sims = {s: Simulator.build(config.replace(image_size=s)) for s in (int(x) for x in args.sizes.split(","))}
    first = next(iter(sims.values()))
    # element values, computed once: the image size only enters through the rendering
    sigmas = {"GN (one step, the data set's)": val["gn_sigma"]}
    for a in (float(x) for x in args.lm_alphas.split(",")):
        print(f"LM alpha {a:g} on {len(val['voltages'])} samples", flush=True)
        sigmas[f"GN (LM, alpha = {a:g})"] = first.gn.iterative(val["voltages"], max_iter=args.lm_iterations,
                                                               alpha=a, lm=True)
    rows = []
    for size, sim in sims.items():
        truth = sim(val["index"])["image"]
        if size == config.image_size:   # the regenerated phantoms are the stored ones
            np.testing.assert_allclose(truth, val["image"], atol=1e-5)
        images = {"Background (floor)": np.full_like(truth, config.background)}
        images.update({name: sim.render(s) for name, s in sigmas.items()})
        for name, img in images.items():
            m = paper_metrics(img, truth, sim.mask)
            ssim, re_ = mean_ci(np.asarray(m["SSIM"])), mean_ci(np.asarray(m["RE"]))
            rows.append([name, size, f"{ssim[0]:.3f} ± {ssim[1]:.3f}", f"{re_[0]:.4f} ± {re_[1]:.4f}",
                         f"{float(np.mean(m['PSNR'])):.2f}"])
            print(" | ".join(str(x) for x in rows[-1]), flush=True)
    paper = PAPER_GN[args.setting]
    out = args.out or RESULTS / f"dgm_resolution_{args.setting}.md"
    text = "\n".join([
        machine_header(f"DGM metrics against the image size ({args.setting}, validation samples)"),
        __doc__.split("\n\n")[1], "",
        f"Setting {args.setting}: the first {len(val['index'])} validation samples of the shipped models' data set "
        f"(seed {config.seed}); truth rendered exactly at each size ({config.image_supersample}× supersampled "
        f"pixel averages), reconstructions by `{config.gn_render}` interpolation; mean ± 95 % CI. "
        f"The paper's GN (128 px, its own mesh and data): SSIM {paper[0]}, RE {paper[1]}.", "",
        markdown_table(["method", "px", "SSIM", "RE", "PSNR"], rows), ""])
    atomic_write_text(out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
