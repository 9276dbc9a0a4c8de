"""The ``jaxeit`` command.

    jaxeit demo [--out out/] [--quick]        simulate the thorax phantom and reconstruct it (writes a figure)
    jaxeit reconstruct DATA.npz --method tv    reconstruct from voltages in an .npz (writes image + figure)
    jaxeit simulate --help                     generate a paired data set (DGM study)
    jaxeit train-prior --help                  train the diffusion prior of Diff-INR
    jaxeit benchmark forward|classical|inr     run a benchmark script (writes benchmarks/results/*.md)

Errors are printed as one line (``jaxeit: error: ...``), not a traceback.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path

__all__ = ["main"]

_BENCHMARKS = ("forward", "classical", "inr", "diff_inr", "dgm", "real_data", "prior")


def demo(out: Path, quick: bool = False, snr_db: float = 50.0, seed: int = 0) -> Path:
    """Thorax phantom (Diff-INR §4.1) on a fine CEM mesh, 50 dB noise, reconstructed on a coarser mesh
    with one-step GN, GN, TV, INR+TV and Diff-INR (the shipped prior).

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
    images, rows = {}, []
    from .priors import DEFAULT_PRIOR, available_priors

    methods = [("one-step GN", "one-step", {}), ("GN", "gn", {}), ("TV", "tv", {}),
               ("INR+TV", "inr+tv", {"iterations": 300 if quick else 600})]
    if DEFAULT_PRIOR in available_priors():
        methods.append(("Diff-INR", "diff-inr", {"iterations": 300 if quick else 600}))
    else:
        print(f"note: the diffusion prior '{DEFAULT_PRIOR}' is not shipped in this install: Diff-INR is "
              "skipped (train it with `jaxeit train-prior`)")
    for name, method, opts in methods:
        t0 = time.perf_counter()
        res = reconstruct(inv, v, method, grid=g, **opts)
        images[name] = np.asarray(res.image)
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


def reconstruct_file(path: Path, *, method: str, out: Path, radius: float, n_electrodes: int, width: float,
                     h: float, contact_impedance: float, electrode_model: str, iterations: int | None) -> Path:
    """Reconstruct from an ``.npz`` holding ``v`` (M,) and optionally ``reference`` (M,).

    The mesh is a gmsh disk of ``radius`` with ``n_electrodes`` electrodes of ``width``; the protocol
    is the adjacent one (16 electrodes: 208 measurements). Writes ``<out>/<stem>_<method>.npz``
    (element σ, the 128×128 image, history) and a PNG; returns the .npz path.
    """
    import numpy as np

    from . import ForwardModel, grid, mesh, plot, protocol
    from .io_utils import atomic_path
    from .recon import reconstruct

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = np.load(path)
    except Exception as err:  # numpy raises several types for unreadable files
        raise ValueError(f"cannot read {path} as .npz ({err}); save voltages with numpy.savez(path, v=...)") from err
    if "v" not in data:
        raise ValueError(f"{path} has no array 'v' (measured voltages); found {sorted(data.files)}")
    m = mesh.disk(radius=radius, n_electrodes=n_electrodes, electrode_width=width, h=h)
    fm = ForwardModel(m, protocol.adjacent(n_electrodes), contact_impedance=contact_impedance,
                      electrode_model=electrode_model)
    opts = {}
    if "reference" in data.files and method in ("one-step", "bp"):
        opts["reference"] = data["reference"]
    if iterations is not None:
        opts["iterations" if method in ("inr", "inr+tv", "diff-inr") else "max_iter"] = iterations
    g = grid.Grid.square(radius, 128)
    res = reconstruct(fm, data["v"], method, grid=g, **opts)
    out = Path(out)
    target = out / f"{path.stem}_{method}.npz"
    with atomic_path(target) as tmp:
        np.savez(tmp, sigma=res.sigma, image=res.image, nodes=m.nodes, triangles=m.triangles,
                 residual=np.asarray(res.history.get("residual", [])))
    mask = np.hypot(*np.meshgrid(g.x, g.y)) < radius
    plot.compare({method: res.image}, grid=g, mask=mask, path=target.with_suffix(".png"),
                 title=f"{path.name}: {method}")
    print(f"{res}\nwritten {target} and {target.with_suffix('.png')}")
    return target


def _run_benchmark(name: str, args: list[str]):
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    script = root / f"{name}.py"
    if not script.exists():
        raise FileNotFoundError(f"benchmark script {script} not found (benchmarks run from a source checkout)")
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")


def _methods():
    from .recon import METHODS

    return sorted(METHODS)


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
    r = sub.add_parser("reconstruct", help="reconstruct from voltages in an .npz file",
                       epilog="example: jaxeit reconstruct data.npz --method tv --out out")
    r.add_argument("data", type=Path, help=".npz with 'v' (M,) and optionally 'reference' (M,)")
    r.add_argument("--method", default="tv", help="one of: " + ", ".join(_methods()))
    r.add_argument("--out", type=Path, default=Path("out"))
    r.add_argument("--radius", type=float, default=1.0, help="tank radius (default 1)")
    r.add_argument("--electrodes", type=int, default=16, help="number of electrodes (default 16)")
    r.add_argument("--width", type=float, default=0.2, help="electrode width, same units (default 0.2)")
    r.add_argument("--h", type=float, default=0.1, help="mesh size, same units (default 0.1)")
    r.add_argument("--z", type=float, default=0.01, help="contact impedance (default 0.01)")
    r.add_argument("--electrode-model", choices=["cem", "point"], default="cem")
    r.add_argument("--iterations", type=int, default=None, help="iterations (iterative methods)")
    for name, target in [("simulate", "jaxeit.data"), ("train-prior", "jaxeit.priors.train")]:
        p = sub.add_parser(name, help=f"see `jaxeit {name} --help` ({target})", add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)
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
        elif args.command == "reconstruct":
            reconstruct_file(args.data, method=args.method, out=args.out, radius=args.radius,
                             n_electrodes=args.electrodes, width=args.width, h=args.h,
                             contact_impedance=args.z, electrode_model=args.electrode_model,
                             iterations=args.iterations)
        elif args.command in ("simulate", "train-prior"):
            import importlib

            module = importlib.import_module("jaxeit.data" if args.command == "simulate" else "jaxeit.priors.train")
            return int(module.main(args.args) or 0)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"jaxeit: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
