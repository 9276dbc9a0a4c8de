"""Execute the notebooks and render them to docs/notebooks/<name>.md with their figures (``make docs``).

    python docs/render_notebooks.py                 # all notebooks, fast mode (JAXEIT_FAST=1)
    python docs/render_notebooks.py --full          # the notebooks' full sizes (hours on a CPU)
    python docs/render_notebooks.py 01_forward_and_classical

Each notebook runs top to bottom in a fresh kernel that imports this checkout's
``jaxeit`` (the committed notebooks stay without outputs); figures are written
as PNG files to ``docs/notebooks/<name>_files/`` and linked from the Markdown.
The real-data notebook reads ``$JAXEIT_DATA`` (or ``../shared/data``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "docs" / "notebooks"


def render(path: Path, out: Path, *, fast: bool, timeout: int) -> tuple[Path, float]:
    """Execute ``path`` and write ``out/<stem>.md`` and ``out/<stem>_files/``; returns (md path, seconds)."""
    import nbclient
    import nbformat
    from nbconvert import MarkdownExporter

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - t0
    files = f"{path.stem}_files"
    body, resources = MarkdownExporter().from_notebook_node(
        nb, resources={"output_files_dir": files, "unique_key": path.stem})
    folder = out / files
    if folder.exists():
        shutil.rmtree(folder)
    for name, data in resources.get("outputs", {}).items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    mode = ("fast mode (`JAXEIT_FAST=1`: small sizes, numbers only show that the code runs; the benchmark "
            "reports in `benchmarks/results/` are the reference)" if fast else "full mode")
    header = (f"<!-- rendered from notebooks/{path.name} by `make docs`; edit the notebook, not this file -->\n"
              f"*Rendered from [`notebooks/{path.name}`](../../notebooks/{path.name}) by `make docs` on "
              f"{datetime.date.today().isoformat()}, {mode}; executed in {seconds:.0f} s.*\n\n")
    md = out / f"{path.stem}.md"
    md.write_text(header + body, encoding="utf-8")
    return md, seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="notebook stems (default: all in notebooks/)")
    ap.add_argument("--full", action="store_true", help="full sizes instead of JAXEIT_FAST=1")
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default docs/notebooks)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = ap.parse_args(argv)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.names:
        known = {p.stem: p for p in paths}
        missing = [n for n in args.names if n not in known]
        if missing:
            ap.error(f"no notebook {missing}; choose from {sorted(known)}")
        paths = [known[n] for n in args.names]
    os.environ["JAXEIT_FAST"] = "0" if args.full else "1"
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend captures the figures
    # the kernel is a child process: put this checkout first on its path, not an installed copy
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        print(f"executing {path.name} ...", file=sys.stderr, flush=True)
        md, seconds = render(path, args.out, fast=not args.full, timeout=args.timeout)
        size = sum(f.stat().st_size for f in args.out.glob(f"{path.stem}*") if f.is_file())
        size += sum(f.stat().st_size for f in (args.out / f"{path.stem}_files").glob("*"))
        print(f"  {md.relative_to(ROOT)}: {seconds:.0f} s, {size / 1e3:.0f} kB", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
