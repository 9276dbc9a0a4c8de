"""End-to-end paired data set generation: wall time of a 20k-sample set (the DGM study's data).

``jaxeit.data.simulate`` from scratch into a fresh folder: pyEIT mesh (or its
cached copy), point electrodes, 4 random circles, 40 dB noise, linearised GN
images, 128×128 ground truth and GN images, written in shards with hashes and
metadata — everything the DGM benchmark reads. Reports the total wall time
(compilation and writing included) and samples/s, per chunk size.

    python benchmarks/gpu/datagen.py [--quick] [--n 20000] [--chunks 256,1024]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu import markdown_table, write_report  # noqa: E402

from jaxeit.data import SimulationConfig, read_metadata, simulate  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="512 samples at 32 px (CPU smoke run)")
    ap.add_argument("--n", type=int, default=None, help="samples (default 20000; quick 512)")
    ap.add_argument("--size", type=int, default=None, help="image size (default 128, the paper's; quick 32)")
    ap.add_argument("--chunks", default=None, help="chunk sizes to compare (default 256,1024; quick 64)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    n = args.n or (512 if args.quick else 20000)
    size = args.size or (32 if args.quick else 128)
    chunks = [int(c) for c in (args.chunks or ("64" if args.quick else "256,1024")).split(",")]
    rows = []
    for chunk in chunks:
        shard = chunk * max(1, 2048 // chunk)
        cfg = SimulationConfig(n_circles=4, snr_db=40.0, image_size=size, n_train=n - n // 10, n_val=n // 10,
                               n_test=0, chunk_size=chunk, shard_size=shard, seed=123)
        root = Path(tempfile.mkdtemp(prefix="datagen_", dir=args.workdir))
        try:
            t0 = time.perf_counter()
            simulate(cfg, root / "set", progress=False, log=None)
            wall = time.perf_counter() - t0
            meta = read_metadata(root / "set")
            size_mb = sum(p.stat().st_size for p in (root / "set").rglob("*") if p.is_file()) / 1e6
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rows.append([n, size, chunk, f"{wall:.1f}", f"{n / wall:.0f}", meta.get("throughput", {}).get("samples_per_s"),
                     f"{size_mb:.0f}"])
        print(rows[-1], flush=True)
    body = ("One fresh data set per row (4 circles, 40 dB, point electrodes on the pyEIT mesh, linearised GN, "
            "uncompressed shards); wall time from the call to the finished folder, compilation and disk writes "
            "included.\n\n"
            + markdown_table(["samples", "image px", "chunk", "wall s", "samples/s (end to end)",
                              "samples/s (after compilation, from metadata)", "MB written"], rows) + "\n")
    write_report("datagen", f"Paired data set generation ({n} samples)", body, args.out)


if __name__ == "__main__":
    main()
