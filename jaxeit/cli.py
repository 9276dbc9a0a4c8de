"""The ``jaxeit`` command.

    jaxeit demo [--out out/] [--quick]      simulate the thorax phantom and reconstruct it (writes a figure)
    jaxeit benchmark forward|classical [...] run a benchmark script (writes benchmarks/results/*.md)

Errors are printed as one line (``jaxeit: error: ...``), not a traceback.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path

__all__ = ["main"]

_BENCHMARKS = ("forward", "classical")


def demo(out: Path, quick: bool = False, snr_db: float = 50.0, seed: int = 0) -> Path:
    """Thorax phantom (Diff-INR §4.1) on a fine CEM mesh, 50 dB noise, reconstructed on a coarser mesh.

    Prints a metrics table and writes ``out/demo.png``; returns the figure's path.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from . import ForwardModel, grid, mesh, metrics, noise, phantoms, plot, protocol
    from .recon import reconstruct

    radius, width, z = 0.14, 0.025, 6e-3  # 28 cm tank, 2.5 cm electrodes (KIT4-like), z in Ω·m²
    fine_h, coarse_h = (0.014, 0.022) if quick else (0.007, 0.014)
    prot = protocol.adjacent(16)
    print(f"meshing (fine h = {fine_h * 100:.1f} cm, coarse h = {coarse_h * 100:.1f} cm) ...", flush=True)
    fine = mesh.disk(radius=radius, electrode_width=width, h=fine_h)
    coarse = mesh.disk(radius=radius, electrode_width=width, h=coarse_h)
    phantom = phantoms.thorax(radius)
    fwd = ForwardModel(fine, prot, contact_impedance=z)
    inv = ForwardModel(coarse, prot, contact_impedance=z)
    v = noise.add_noise(fwd.voltages(phantoms.on_mesh(phantom, fine)), snr_db, jax.random.PRNGKey(seed))
    g = grid.Grid.square(half_width=radius, size=128)
    mask = np.hypot(*np.meshgrid(g.x, g.y)) < radius
    truth = np.asarray(phantoms.on_grid(phantom, g))
    render = grid.mesh_to_grid_elements(coarse, g)
    images, rows = {}, []
    for name, method in [("one-step GN", "one-step"), ("GN", "gn"), ("TV", "tv")]:
        t0 = time.perf_counter()
        res = reconstruct(inv, v, method)
        images[name] = np.asarray(render(res.sigma))
        m = metrics.all_metrics(jnp.asarray(images[name]), jnp.asarray(truth), mask=jnp.asarray(mask))
        rows.append((name, float(m["SSIM"]), float(m["PSNR"]), float(m["RE"]), res.n_iter, time.perf_counter() - t0))
    print(f"\nThorax phantom, {snr_db:g} dB, forward mesh {fine.n_nodes} nodes (CEM), "
          f"inverse mesh {coarse.n_elements} elements\n")
    print(f"{'method':<14}{'SSIM':>8}{'PSNR':>8}{'RE':>8}{'iters':>7}{'time s':>9}")
    for name, ssim, psnr, re, it, t in rows:
        print(f"{name:<14}{ssim:>8.3f}{psnr:>8.2f}{re:>8.3f}{it:>7d}{t:>9.2f}")
    path = Path(out) / "demo.png"
    plot.compare(images, truth=truth, grid=g, mask=mask, metrics={"SSIM": lambda x, r: metrics.ssim(x, r, mask=jnp.asarray(mask)),
                          "PSNR": lambda x, r: metrics.psnr(x, r, mask=jnp.asarray(mask))}, path=path,
                 title=f"Thorax phantom, {snr_db:g} dB")
    print(f"\nfigure written to {path.resolve()}")
    return path


def _run_benchmark(name: str, args: list[str]):
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    script = root / f"{name}.py"
    if not script.exists():
        raise FileNotFoundError(f"benchmark script {script} not found (benchmarks run from a source checkout)")
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxeit", description="JAX-native differentiable EIT.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="thorax phantom: simulate (CEM) and reconstruct; writes a figure",
                       epilog="example: jaxeit demo --out out --quick")
    d.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out/)")
    d.add_argument("--quick", action="store_true", help="coarser meshes (about 3× faster)")
    d.add_argument("--snr", type=float, default=50.0, help="noise level in dB (default 50)")
    d.add_argument("--seed", type=int, default=0, help="noise seed")
    b = sub.add_parser("benchmark", help="run a benchmark script",
                       epilog="example: jaxeit benchmark forward --quick")
    b.add_argument("name", choices=_BENCHMARKS)
    b.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            demo(args.out, quick=args.quick, snr_db=args.snr, seed=args.seed)
        elif args.command == "benchmark":
            _run_benchmark(args.name, args.args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"jaxeit: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
