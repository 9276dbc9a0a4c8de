"""KTC2023 end to end: seconds per target of ``jaxeit reconstruct``, from the ``.mat`` files to the written files.

Each call is a fresh process (``jaxeit reconstruct dataK.mat --level L --method M --out …``), timed from
start to exit: Python and JAX start-up, loading, meshing, calibration, reconstruction, segmentation and
writing the ``.npz``, ``.png`` and challenge ``.mat``. The first call of a run starts from empty caches
(a cold machine: every XLA program compiled, the tank calibrated); the later calls find the persistent
compilation cache and the remembered calibration of the same ``ref.mat``, as a user's second and later
targets do. The table gives every call and, per method, the median over the warm calls.

    python benchmarks/ktc_cli_time.py [--methods unet] [--levels 1,2,3,4,5,6,7] [--targets 1,2,3,4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_header, markdown_table  # noqa: E402

from jaxeit.io import data_dir  # noqa: E402
from jaxeit.io_utils import atomic_write_text  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="unet")
    ap.add_argument("--levels", default="1,2,3,4,5,6,7")
    ap.add_argument("--targets", default="1,2,3,4")
    ap.add_argument("--out", type=Path, default=RESULTS / "ktc_cli_time.md")
    args = ap.parse_args(argv)
    folder = data_dir() / "ktc2023" / "training"
    if not (folder / "ref.mat").exists():
        sys.exit(f"KTC2023 data not found at {folder} (set JAXEIT_DATA)")
    jaxeit_cli = Path(sys.executable).with_name("jaxeit")
    rows, warm = [], {}
    with tempfile.TemporaryDirectory(prefix="jaxeit-cli-time-") as tmp:
        env = dict(os.environ, JAXEIT_CACHE_DIR=f"{tmp}/xla", JAXEIT_CALIBRATION_CACHE=f"{tmp}/calibrations")
        for method in args.methods.split(","):
            first = True
            for level in map(int, args.levels.split(",")):
                for k in map(int, args.targets.split(",")):
                    cmd = [str(jaxeit_cli), "reconstruct", str(folder / f"data{k}.mat"), "--level", str(level),
                           "--method", method, "--out", f"{tmp}/out"]
                    t0 = time.perf_counter()
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    secs = time.perf_counter() - t0
                    if done.returncode:
                        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
                    score = next((line.split("score ")[1].split()[0] for line in done.stdout.splitlines()
                                  if "score " in line), "–")
                    kind = "cold (empty caches)" if first else "warm"
                    if not first:
                        warm.setdefault(method, []).append(secs)
                    rows.append([method, level, k, kind, f"{secs:.1f}", score])
                    print(f"{method} L{level} data{k}: {secs:.1f} s ({kind}), score {score}", flush=True)
                    first = False
    summary = [[m, len(s), f"{np.median(s):.1f}", f"{np.max(s):.1f}", sum(x <= 10.0 for x in s)]
               for m, s in warm.items()]
    text = "\n".join([machine_header("KTC2023 end to end: jaxeit reconstruct per target"),
                      __doc__.split("\n\n")[1], "",
                      markdown_table(["method", "warm calls", "median s", "max s", "calls ≤ 10 s"], summary), "",
                      markdown_table(["method", "level", "target", "caches", "s", "score"], rows), ""])
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
