"""The jaxeit command.

    jaxeit demo [--out out/] [--quick]             simulate the thorax phantom and reconstruct it (writes a figure)
    jaxeit reconstruct FILE --method tv            reconstruct from an .npz of voltages, a KIT4 or a KTC2023 file
    jaxeit simulate OUT [options]                  generate a paired data set (DGM study)
    jaxeit train-prior --workdir DIR [options]     train the diffusion prior of Diff-INR
    jaxeit benchmark NAME [--quick]                run a benchmark script (writes benchmarks/results/*.md)

'jaxeit <command> --help' shows each command's options and examples. Expected
errors (bad input files or data, bad options, an output that cannot be written
or already exists) are printed as one line ('jaxeit: error: ...'), not a
traceback, and exit with status 2; outputs are checked before any computing.
A data file that is not found where given is looked up in the real-data folder
($JAXEIT_DATA, else ../shared/data beside the source checkout), so
'jaxeit reconstruct kit4/datamat_4_1.mat' works from any folder.
"""

from __future__ import annotations

import argparse
import math
import os
import runpy
import sys
from pathlib import Path

__all__ = ["main"]

_BENCHMARKS = ("forward", "classical", "greit", "inr", "diff_inr", "dgm", "real_data", "prior", "gpu/forward_scaling",
               "gpu/diffinr_step", "gpu/training_throughput", "gpu/datagen")


def demo(out: Path, quick: bool = False, snr_db: float = 50.0, seed: int = 0, quiet: bool | None = None) -> Path:
    """Thorax phantom (Diff-INR §4.1) on a fine CEM mesh, 50 dB noise, reconstructed on a coarser mesh
    with one-step GN, GN, TV, INR+TV and Diff-INR (the shipped prior).

    Each method runs twice: the first call compiles, the second is timed as the warm run. Prints a
    metrics table (stdout) with both times, progress on stderr (``quiet`` silences it; ``None`` reads
    ``JAXEIT_QUIET``), and writes ``out/demo.png``; returns the figure's path.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from . import ForwardModel, grid, mesh, metrics, noise, phantoms, plot, protocol
    from .progress import Progress, first_and_warm
    from .recon import reconstruct

    check_writable(Path(out) / "demo.png")  # before any computing
    progress = Progress(quiet)
    radius, width, z = 0.14, 0.025, 6e-3  # 28 cm tank, 2.5 cm electrodes (KIT4-like), z in Ω·m²
    fine_h, coarse_h = (0.014, 0.022) if quick else (0.007, 0.014)
    prot = protocol.adjacent(16)
    progress.stage(f"meshing (fine h = {fine_h * 100:.1f} cm, coarse h = {coarse_h * 100:.1f} cm)")
    # electrode 1 at the top, numbered counter-clockwise (the figure convention of jaxeit.plot)
    fine = mesh.disk(radius=radius, electrode_width=width, h=fine_h, offset=np.pi / 2)
    coarse = mesh.disk(radius=radius, electrode_width=width, h=coarse_h, offset=np.pi / 2)
    phantom = phantoms.thorax(radius)
    fwd = ForwardModel(fine, prot, contact_impedance=z)
    inv = ForwardModel(coarse, prot, contact_impedance=z)
    progress.stage(f"simulating the measurements (CEM, {fine.n_nodes} nodes, {snr_db:g} dB noise)")
    v = noise.add_noise(fwd.voltages(phantoms.on_mesh(phantom, fine)), snr_db, jax.random.PRNGKey(seed))
    g = grid.Grid.square(half_width=radius, size=128)
    mask = np.hypot(*np.meshgrid(g.x, g.y)) < radius
    truth = np.asarray(phantoms.on_grid(phantom, g))
    images, rows = {}, []
    from .priors import DEFAULT_PRIOR, available_priors

    methods = [("one-step GN", "one-step", {}), ("GN", "gn", {}), ("TV", "tv", {}),
               ("INR+TV", "inr+tv", {"max_iter": 300 if quick else 600})]
    if DEFAULT_PRIOR in available_priors():
        methods.append(("Diff-INR", "diff-inr", {"max_iter": 300} if quick else {}))   # full: its default
    else:
        print(f"note: the diffusion prior '{DEFAULT_PRIOR}' is not shipped in this install: Diff-INR is "
              "skipped (train it with `jaxeit train-prior`)")
    progress.stage(f"reconstructing on {coarse.n_elements} elements: each method runs twice "
                   "(the first call compiles, the second is the warm run)")
    for name, method, opts in progress.bar(methods, desc="methods", unit="method"):
        res, first, warm = first_and_warm(reconstruct, inv, v, method, grid=g, **opts)
        images[name] = np.asarray(res.image)
        m = metrics.all_metrics(jnp.asarray(images[name]), jnp.asarray(truth), mask=jnp.asarray(mask))
        rows.append((name, float(m["SSIM"]), float(m["PSNR"]), float(m["RE"]), res.n_iter, max(first - warm, 0.0),
                     warm))
    print(f"\nThorax phantom, {snr_db:g} dB, forward mesh {fine.n_nodes} nodes (CEM), "
          f"inverse mesh {coarse.n_elements} elements\n")
    print(f"{'method':<14}{'SSIM':>8}{'PSNR':>8}{'RE':>8}{'iters':>7}{'compile s':>11}{'run s':>8}")
    for name, ssim, psnr, re, it, tc, tr in rows:
        print(f"{name:<14}{ssim:>8.3f}{psnr:>8.2f}{re:>8.3f}{it:>7d}{tc:>11.2f}{tr:>8.2f}")
    print("compile s = first call − warm call (tracing and XLA compilation); run s = the warm call")
    path = Path(out) / "demo.png"
    plot.compare(images, truth=truth, grid=g, mask=mask, mesh=coarse, label=plot.SIGMA_LABEL,
                 metrics={"SSIM": lambda x, r: metrics.ssim(x, r, mask=jnp.asarray(mask)),
                          "PSNR": lambda x, r: metrics.psnr(x, r, mask=jnp.asarray(mask))}, path=path,
                 # the truth's range: one method's undershoot would otherwise flatten every other panel
                 vmin=float(truth[mask].min()), vmax=float(truth[mask].max()),
                 title=f"Thorax phantom, {snr_db:g} dB (electrode 1 at the top, numbered counter-clockwise; "
                       "colours: the truth's range, values beyond it saturate)")
    print(f"\nfigure written to {path.resolve()}")
    return path


_NPZ_H = 0.1          # default mesh size of the unit disk (.npz input)
_KIT4_H = 0.013       # reconstruction meshes of the real-data benchmark (benchmarks/real_data.py)
_KTC_H = 0.014


def data_kind(path: Path) -> str:
    """``"npz"``, ``"kit4"`` or ``"ktc"``: what kind of measurement file ``path`` is (by its variables).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is neither an .npz nor a KIT4 / KTC2023 MATLAB file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".npz":
        return "npz"
    if path.suffix == ".mat":
        from scipy.io import whosmat

        try:
            names = {n for n, *_ in whosmat(str(path))}
        except Exception as err:  # scipy raises several types for files that are not MATLAB files
            raise ValueError(f"cannot read {path} as a MATLAB file ({err})") from err
        if {"CurrentPattern", "MeasPattern", "Uel"} <= names:
            return "kit4"
        if {"Inj", "Mpat", "Uel"} <= names:
            return "ktc"
        raise ValueError(f"{path} is neither a KIT4 file (CurrentPattern, MeasPattern, Uel) nor a KTC2023 file "
                         f"(Inj, Mpat, Uel); it holds {sorted(names)}")
    raise ValueError(f"{path}: expected an .npz of voltages or a KIT4 / KTC2023 .mat file")


def output_stem(path: Path, kind: str, method: str, level: int) -> str:
    """The name of a reconstruction's outputs: ``<stem>_<method>``, with the level for KTC2023
    (``data1_L4_gn-gaussian``), so runs of other methods or levels never share a file."""
    return f"{Path(path).stem}_L{level}_{method}" if kind == "ktc" else f"{Path(path).stem}_{method}"


def check_new(*targets: Path, overwrite: bool = False) -> None:
    """A ValueError when one of ``targets`` exists and ``overwrite`` is off (checked before computing)."""
    if overwrite:
        return
    for target in map(Path, targets):
        if target.is_file():   # a folder in the way is check_writable's message
            raise ValueError(f"{target} already exists; pass --overwrite to replace it or choose another --out")


def method_descriptions(kind: str) -> dict[str, str]:
    """Each method ``jaxeit reconstruct`` accepts for a file of ``kind``, with its one-line description."""
    from .recon import METHODS

    if kind == "ktc":
        from .realdata.ktc import METHODS as KTC_METHODS
        from .realdata.ktc import DEFAULT_SEGMENTATION, pipeline_segmentation, segmentation_words

        def ktc_line(name: str) -> str:
            if name not in METHODS:
                return str(KTC_METHODS[name]).split(";")[0]
            named = pipeline_segmentation(name)[0] != DEFAULT_SEGMENTATION   # the help names other rules
            return METHODS[name].description + (f"; {segmentation_words(name)}" if named else "")

        return {name: ktc_line(name) for name in sorted(KTC_METHODS)}
    from . import dgm  # noqa: F401  (registers the learned methods cnf, cvae, csd, dps)

    return {name: METHODS[name].description for name in sorted(METHODS)}


def methods_for(kind: str) -> list[str]:
    """The reconstruction methods ``jaxeit reconstruct`` accepts for a file of ``kind``."""
    if kind == "ktc":
        from .realdata.ktc import METHODS
    else:  # .npz and KIT4 files: every method of the registry, the learned ones included
        from . import dgm  # noqa: F401  (registers cnf, cvae, csd, dps)
        from .recon import METHODS
    return sorted(METHODS)


def _iteration_option(method: str, iterations: int | None) -> dict:
    """``{"max_iter": iterations}`` for an iterative method of the registry; a ValueError for a direct one."""
    if iterations is None:
        return {}
    from .recon import METHODS
    from .recon.method import option_names

    if method not in METHODS or "max_iter" not in option_names(METHODS[method]):
        raise ValueError(f"--iterations: method {method!r} is not iterative; leave --iterations out")
    return {"max_iter": iterations}


def reconstruct_file(path: Path, *, method: str, out: Path, radius: float = 1.0, n_electrodes: int = 16,
                     width: float = 0.2, h: float | None = None, contact_impedance: float = 0.01,
                     electrode_model: str = "cem", iterations: int | None = None, reference: Path | None = None,
                     level: int = 1, patterns: str = "all", overwrite: bool = False,
                     quiet: bool | None = None, weights: str | None = None) -> Path:
    """Reconstruct one measurement file and write ``<out>/<name>.npz`` and a PNG figure.

    ``<name>`` is :func:`output_stem`: ``<stem>_<method>``, and ``<stem>_L<level>_<method>`` for
    KTC2023. An existing output stops the run before any computing unless ``overwrite``. A
    relative ``path`` (or ``reference``) not found is looked up in the real-data folder
    (:func:`jaxeit.io.resolve_data_path`). Progress (stages, an iteration bar) goes to stderr unless
    ``quiet`` (``None``: ``JAXEIT_QUIET``).

    * ``.npz`` holding ``v`` (M,) and optionally ``reference`` (M,): a gmsh disk of
      ``radius`` with ``n_electrodes`` electrodes of ``width``, the adjacent protocol
      (16 electrodes: 208 measurements), mesh size ``h`` (default 0.1). Writes element
      σ, the 128×128 image and the residual history.
    * KIT4 ``datamat_<i>_<j>.mat``: difference imaging against ``reference`` (default
      ``datamat_1_0.mat`` beside it; absolute imaging when there is none or the file is
      that reference), ``patterns`` ("all" 79 or the 16 "adjacent" current patterns), calibrated background and contact
      impedance, :func:`jaxeit.realdata.kit4_mesh` (``h`` default 1.3 cm). Writes σ, the
      log-contrast and its 128×128 image.
    * KTC2023 ``data<k>.mat``: difference imaging against ``reference`` (default
      ``ref.mat`` beside it) at difficulty ``level``, segmentation and, when
      ``true<k>.mat`` lies beside it, the challenge score
      (:func:`jaxeit.realdata.ktc.reconstruct_ktc`; ``h`` default 1.4 cm). The segmentation
      also goes to ``<stem>.mat`` in the challenge's format (:func:`jaxeit.io.save_ktc_segmentation`).

    Returns the .npz path. Raises ``FileNotFoundError`` / ``ValueError`` with a
    one-line message for missing files, unknown methods and bad data.
    """
    from .io import resolve_data_path
    from .progress import Progress

    path = resolve_data_path(path)
    kind = data_kind(path)
    allowed = methods_for(kind)
    if method not in allowed:
        raise ValueError(f"unknown method {method!r} for a {kind.upper()} file; choose one of: {', '.join(allowed)}")
    if reference is not None:
        reference = resolve_data_path(reference)
        if not reference.is_file():
            raise FileNotFoundError(f"reference file {reference} does not exist")
    for name, value in (("h (element size)", h), ("radius", radius)):   # before any output or computing
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name.split()[0]}: {name} must be a positive finite number, got {value}")
    target = Path(out) / f"{output_stem(path, kind, method, level)}.npz"
    outputs = [target, target.with_suffix(".png")] + ([target.with_suffix(".mat")] if kind == "ktc" else [])
    check_new(*outputs, overwrite=overwrite)   # before any computing
    check_writable(*outputs)
    progress = Progress(quiet)
    opts = _iteration_option(method, iterations)
    if not progress.quiet and _has_option(method, "progress"):
        opts["progress"] = True   # the iteration bar with its ETA
    if kind == "npz":
        _reconstruct_npz(path, target, method=method, radius=radius, n_electrodes=n_electrodes, width=width,
                         h=_NPZ_H if h is None else h, contact_impedance=contact_impedance,
                         electrode_model=electrode_model, options=opts, progress=progress, weights=weights)
    elif kind == "kit4":
        _reconstruct_kit4(path, target, method=method, h=_KIT4_H if h is None else h, options=opts,
                          reference=reference, patterns=patterns, progress=progress)
    else:
        _reconstruct_ktc(path, target, method=method, h=_KTC_H if h is None else h, options=opts,
                         reference=reference, level=level, progress=progress)
    progress.stage("done")
    print("written " + " and ".join(str(o) for o in outputs))
    return target


def _has_option(method: str, option: str) -> bool:
    from .recon import METHODS
    from .recon.method import option_names

    return method in METHODS and option in option_names(METHODS[method])


def _reconstruct_npz(path, target, *, method, radius, n_electrodes, width, h, contact_impedance, electrode_model,
                     options, progress, weights=None):
    import numpy as np

    from . import ForwardModel, grid, mesh, plot, protocol
    from .io_utils import atomic_path
    from .recon import reconstruct

    try:
        data = np.load(path)
    except Exception as err:  # numpy raises several types for unreadable files
        raise ValueError(f"cannot read {path} as .npz ({err}); save voltages with numpy.savez(path, v=...)") from err
    if "v" not in data:
        raise ValueError(f"{path} has no array 'v' (measured voltages); found {sorted(data.files)}")
    arrays = {"v": data["v"], **({"reference": data["reference"]} if "reference" in data.files else {})}
    for name, a in arrays.items():
        bad = ~np.isfinite(np.asarray(a, np.float64))
        if bad.any():  # checked before meshing: a NaN would otherwise surface only after the set-up
            raise ValueError(f"{path}: '{name}' has {int(bad.sum())} NaN/inf values (first at index "
                             f"{int(np.flatnonzero(bad.ravel())[0])}); remove those measurements")
    _check_signal(path, arrays)
    from .dgm import LearnedMethod, default_pretrained, load_pretrained
    from .recon import METHODS

    opts = dict(options)
    if issubclass(METHODS[method], LearnedMethod):
        # a learned model knows only its training geometry: the data must be of it (checked in reconstruct)
        pm = default_pretrained(METHODS[method].kind) if weights is None else load_pretrained(weights)
        opts["weights"] = pm.name
        progress.stage(f"the geometry of the shipped model {pm.name} (the mesh options do not apply)")
        fm = pm.forward_model()
        m, radius = fm.mesh, 1.0
    else:
        if weights is not None:
            raise ValueError(f"--weights names a learned model; method {method!r} has none")
        progress.stage(f"meshing (disk of radius {radius:g}, h = {h:g})")
        m = mesh.disk(radius=radius, n_electrodes=n_electrodes, electrode_width=width, h=h)
        fm = ForwardModel(m, protocol.adjacent(n_electrodes), contact_impedance=contact_impedance,
                          electrode_model=electrode_model)

    if "reference" in arrays and METHODS[method].uses_reference != "never":
        opts["reference"] = arrays["reference"]
    g = grid.Grid.square(radius, 128)
    progress.stage(f"reconstructing with {method} on {m.n_elements} elements (compiling first)")
    res = reconstruct(fm, arrays["v"], method, grid=g, **opts)
    with atomic_path(target) as tmp:
        np.savez(tmp, sigma=res.sigma, image=res.image, nodes=m.nodes, triangles=m.triangles,
                 residual=np.asarray(res.history.get("residual", [])))
    mask = np.hypot(*np.meshgrid(g.x, g.y)) < radius
    plot.compare({method: res.image}, grid=g, mask=mask, path=target.with_suffix(".png"),
                 title=f"{path.name}: {method}")
    print(res)


def _check_signal(path, arrays):
    """Reject voltages that hold no information (all zero, constant, equal to the reference) before meshing."""
    from .recon import check_signal

    try:
        for name, a in arrays.items():
            check_signal(a, f"'{name}'", reference=arrays.get("reference") if name == "v" else None)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def check_writable(*targets: Path) -> None:
    """Make sure each file in ``targets`` can be written, before any computing.

    Creates the missing folders (as writing would) and a temporary file beside
    each target, then removes it. Raises ``ValueError`` naming the target.
    """
    import tempfile

    for target in map(Path, targets):
        if target.is_dir():
            raise ValueError(f"cannot write {target}: a folder of that name is in the way; remove it or choose "
                             "another --out")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".check"):
                pass
        except OSError as err:
            where = err.filename if err.filename is not None else target.parent
            hint = _os_hint(err) or "choose another --out folder"
            raise ValueError(f"cannot write {target}: {err.strerror or err} ({where}); {hint}") from None


def _os_hint(err: OSError) -> str:
    """What an ``OSError`` about a path usually means, in a few words."""
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        return "a file is where a folder is needed: give a folder path"
    if isinstance(err, IsADirectoryError):
        return "a folder is where a file is needed"
    if isinstance(err, PermissionError):
        return "no permission for this path"
    return ""


def error_line(err: BaseException, prog: str = "jaxeit") -> str:
    """The one-line message of an expected error (no traceback).

    An ``OSError`` names the path it concerns; when a rename from a temporary
    file fails, that is the target (``filename2``), never the temporary file.
    """
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        path = err.filename2 if getattr(err, "filename2", None) is not None else err.filename
        hint = _os_hint(err)
        msg = f"{err.strerror}: {path}" + (f" ({hint})" if hint else "")
    else:
        msg = str(err) or type(err).__name__
    return " ".join(f"{prog}: error: {msg}".split())


def _reconstruct_kit4(path, target, *, method, h, options, reference, patterns, progress):
    import numpy as np

    from .grid import Grid, mesh_to_grid_elements
    from .io import load_kit4
    from .io.kit4 import KIT4_RADIUS
    from .io_utils import atomic_path
    from .realdata import calibrate_dataset, kit4_mesh
    from .realdata.imaging import prepare, reconstruct_dataset
    from .realdata.kit4 import log_contrast

    if reference is None:
        default = path.with_name("datamat_1_0.mat")
        reference = default if default.is_file() and default.resolve() != path.resolve() else None
    mode = "absolute" if reference is None else "difference"
    if mode == "absolute" and method == "bp":
        raise ValueError("back-projection is a difference method: give --reference (the empty tank datamat_1_0.mat)")
    progress.stage(f"meshing the KIT4 tank (h = {h:g} m)")
    mesh = kit4_mesh(h=h)
    ds = load_kit4(path, reference, patterns=patterns)
    progress.stage("calibrating the background conductivity and contact impedances")
    cal = calibrate_dataset(ds, mesh, use="reference" if reference is not None else "voltages")
    print(f"{ds.name}: {mode} imaging on {mesh.n_elements} elements; {cal}")
    progress.stage(f"reconstructing with {method} (compiling first)")
    res = reconstruct_dataset(prepare(ds, mesh, calibration=cal, weights="ktc"), method=method, mode=mode,
                              **options)
    contrast = log_contrast(res.sigma, cal.sigma)
    image = np.asarray(mesh_to_grid_elements(mesh, Grid.square(KIT4_RADIUS, 128))(contrast))
    with atomic_path(target) as tmp:
        np.savez(tmp, sigma=res.sigma, contrast=contrast, image=image, sigma_bg=cal.sigma, nodes=mesh.nodes,
                 triangles=mesh.triangles)
    from . import plot

    plot.contrast_figure(mesh, contrast, title=f"{path.name}: {method} ({mode})", path=target.with_suffix(".png"))


def _reconstruct_ktc(path, target, *, method, h, options, reference, level, progress):
    import numpy as np

    from .io import load_ktc2023, load_ktc_truth, save_ktc_segmentation
    from .io_utils import atomic_path
    from .realdata import ktc_mesh
    from .realdata.ktc import reconstruct_ktc

    reference = Path(reference) if reference is not None else path.with_name("ref.mat")
    if not reference.is_file():
        raise FileNotFoundError(f"KTC2023 reference {reference} not found: give --reference (the empty tank ref.mat)")
    truth_path = path.with_name(path.name.replace("data", "true", 1))
    truth = load_ktc_truth(truth_path) if truth_path != path and truth_path.is_file() else None
    progress.stage(f"meshing the KTC2023 tank (h = {h:g} m)")
    mesh = ktc_mesh(h=h)
    ds = load_ktc2023(path, reference, level=level)
    calibration = None
    if method != "baseline":   # the same empty tank on every call: its fit is read from disk after the first
        from .realdata.calibrate import calibrate_dataset_cached

        progress.stage("calibrating on the empty tank (remembered on disk)")
        calibration = calibrate_dataset_cached(ds, mesh)
    progress.stage(f"reconstructing with {method} at level {level} (compiling first)")
    res = reconstruct_ktc(ds, mesh, method, truth=truth, calibration=calibration, **options)
    score = "" if truth is None else f", score {res.score:.3f} against {truth_path.name}"
    print(f"{ds.name}: level {level}, {mesh.n_elements} elements, {res.wall_time:.1f} s{score}")
    with atomic_path(target) as tmp:
        np.savez(tmp, contrast=res.contrast, image=res.image, segmentation=res.segmentation, score=res.score,
                 level=level, nodes=mesh.nodes, triangles=mesh.triangles)
    save_ktc_segmentation(target.with_suffix(".mat"), res.segmentation)
    from . import plot

    plot.ktc_figure(mesh, res.contrast, res.segmentation, truth=truth,
                    removed=plot.unused_electrodes(ds.protocol, ds.mask),
                    score=None if truth is None else res.score,
                    label={"baseline": "Δσ (S/m)", "unet": "P(conductive) − P(resistive)"}.get(method,
                                                                                         plot.CONTRAST_LABEL),
                    title=f"{path.name}: {method}, level {level}", path=target.with_suffix(".png"))


def _run_benchmark(name: str, args: list[str]):
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    script = root / f"{name}.py"
    if not script.exists():
        raise FileNotFoundError(f"benchmark script {script} not found (benchmarks run from a source checkout)")
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")


_RECONSTRUCT_EXAMPLES = """\
examples:
  # voltages saved with numpy.savez('data.npz', v=v) (optional reference=v_ref): unit disk,
  # 16 electrodes of width 0.2, adjacent protocol (208 measurements)
  jaxeit reconstruct data.npz --method gn --iterations 5 --h 0.1 --out out

  # real data: a path not found here is looked up in $JAXEIT_DATA (default ../shared/data beside the
  # source checkout), so these run from any folder
  # KIT4: difference image against datamat_1_0.mat found beside the file (coarse mesh, 16 patterns)
  jaxeit reconstruct kit4/datamat_4_1.mat --method gn --h 0.025 --patterns adjacent --iterations 3 --out out

  # KTC2023 at difficulty level 4, segmented and scored against true1.mat beside it
  jaxeit reconstruct ktc2023/training/data1.mat --method baseline --level 4 --h 0.025 --out out
  jaxeit reconstruct ktc2023/training/data1.mat --method gn-gaussian --out out

Writes <out>/<stem>_<method>.npz (conductivity and image; KTC2023: <stem>_L<level>_<method>, with
the segmentation and score) and a .png beside it; an existing output is kept unless --overwrite.

methods for .npz and KIT4 files:
{npz}

methods for KTC2023 files (each on the difference data against ref.mat from the calibrated
background, then segmented into three classes: by Otsu's rule unless the method's line names
another):
{ktc}
"""


def _method_lines(kind: str) -> str:
    """The methods of a file kind, one description each, as plain text (no markup) for ``--help``."""
    import re
    import textwrap

    lines = []
    for name, text in method_descriptions(kind).items():
        text = text.replace("`", "")
        if kind == "ktc" and name != "baseline":  # KTC runs every method on difference data: drop "(absolute)"
            text = re.sub(r"\s*\((absolute|difference[^)]*)\)(?=;|$)", "", text)
        lines += textwrap.wrap(text, 96, initial_indent=f"  {name:<12}", subsequent_indent=" " * 14,
                               break_on_hyphens=False)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxeit", description="JAX-native differentiable EIT. Compiled programs are "
                                 "cached on disk (~/.cache/jaxeit/xla, or $JAXEIT_CACHE_DIR) so a second run does "
                                 "not compile again; --no-compile-cache (or JAXEIT_COMPILE_CACHE=0) turns it off.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{demo,simulate,reconstruct,train-prior,benchmark}")
    raw = argparse.RawDescriptionHelpFormatter
    d = sub.add_parser("demo", help="thorax phantom: simulate (CEM) and reconstruct; writes a figure",
                       formatter_class=raw,
                       epilog="examples:\n  jaxeit demo --out out --quick     # coarser meshes, about 1 CPU-minute\n"
                              "  jaxeit demo --snr 40 --seed 1     # the full demo at 40 dB noise")
    d.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out/)")
    d.add_argument("--quick", action="store_true",
                   help="coarser meshes, 300 INR iterations (about two thirds of the CPU time of the full demo)")
    d.add_argument("--snr", type=float, default=50.0, help="noise level in dB (default 50)")
    d.add_argument("--seed", type=int, default=0, help="noise seed")
    d.add_argument("--quiet", action="store_true", help="no progress on stderr (also: JAXEIT_QUIET=1)")
    # simulate and train-prior have their own parsers: main() hands them the rest of the command line
    sub.add_parser("simulate", help="generate a paired simulated data set (DGM study); see `jaxeit simulate --help`",
                   add_help=False)
    r = sub.add_parser("reconstruct", help="reconstruct from an .npz of voltages, a KIT4 or a KTC2023 file",
                       formatter_class=raw,
                       epilog=_RECONSTRUCT_EXAMPLES.format(npz=_method_lines("npz"), ktc=_method_lines("ktc")))
    r.add_argument("data", type=Path, help="an .npz with 'v' (M,) and optionally 'reference' (M,), a KIT4 "
                                           "datamat_*.mat or a KTC2023 data*.mat")
    r.add_argument("--method", default="tv", help="reconstruction method (default tv; see below)")
    r.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out/)")
    r.add_argument("--h", type=float, default=None,
                   help="mesh size in the data's units (default: 0.1 for .npz, 0.013 m KIT4, 0.014 m KTC2023)")
    r.add_argument("--iterations", type=int, default=None, help="iterations of iterative and INR methods")
    r.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: stop if they exist)")
    r.add_argument("--quiet", action="store_true", help="no progress on stderr (also: JAXEIT_QUIET=1)")
    g = r.add_argument_group("real data (KIT4, KTC2023)")
    g.add_argument("--reference", type=Path, default=None,
                   help="empty-tank file (default: datamat_1_0.mat / ref.mat beside the data)")
    g.add_argument("--level", type=int, default=1, help="KTC2023 difficulty level 1-7 (default 1)")
    g.add_argument("--patterns", choices=("all", "adjacent"), default="all",
                   help="KIT4 current patterns: all 79 (default) or the 16 adjacent ones")
    g = r.add_argument_group(".npz input: the tank")
    g.add_argument("--radius", type=float, default=1.0, help="tank radius (default 1)")
    g.add_argument("--electrodes", type=int, default=16, help="number of electrodes (default 16)")
    g.add_argument("--width", type=float, default=0.2, help="electrode width, same units (default 0.2)")
    g.add_argument("--z", type=float, default=0.01, help="contact impedance (default 0.01)")
    g.add_argument("--electrode-model", choices=["cem", "point"], default="cem")
    g.add_argument("--weights", default=None,
                   help="learned methods (cnf, cvae, csd, dps): the shipped model to use (default: the one of its kind "
                        "marked default); the data must be of its training geometry, which replaces the tank options")
    sub.add_parser("train-prior", help="train the diffusion prior of Diff-INR; see `jaxeit train-prior --help`",
                   add_help=False)
    b = sub.add_parser("benchmark", help="run a benchmark script (source checkout)", formatter_class=raw,
                       epilog="examples:\n  jaxeit benchmark forward --quick    # forward solver speed, a few "
                              "minutes\n  jaxeit benchmark dgm --help         # a script's own options\n"
                              "  jaxeit benchmark gpu/diffinr_step --quick   # fused vs unfused Diff-INR step "
                              "(GPU scripts: benchmarks/gpu/)")
    b.add_argument("name", choices=_BENCHMARKS)
    b.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    return ap


_DELEGATED = {"simulate": "jaxeit.data", "train-prior": "jaxeit.priors.train"}


def _use_compilation_cache(argv: list) -> list:
    """Turn on the persistent compilation cache (:mod:`jaxeit.compilation_cache`) unless
    ``--no-compile-cache`` is on the command line or ``JAXEIT_COMPILE_CACHE=0``; returns ``argv``
    without the flag. A second run then loads the compiled programs instead of compiling them."""
    off = "--no-compile-cache" in argv or os.environ.get("JAXEIT_COMPILE_CACHE", "1") == "0"
    argv = [a for a in argv if a != "--no-compile-cache"]
    if not off:
        from . import compilation_cache

        try:
            compilation_cache.enable(min_compile_time_s=0.0)   # every program: a second run compiles nothing
        except ValueError as err:   # an unwritable cache folder must not stop the command
            print(f"jaxeit: compilation cache off: {err}", file=sys.stderr)
    return argv


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = _use_compilation_cache(argv)
    if argv and argv[0] in _DELEGATED:
        # the whole rest, --help included, goes to the command's own parser (argparse's REMAINDER
        # would stop at an option such as --help)
        import importlib

        try:
            code = int(importlib.import_module(_DELEGATED[argv[0]]).main(argv[1:]) or 0)
        except (ValueError, OSError) as err:  # expected errors the command did not report itself
            print(error_line(err, f"jaxeit {argv[0]}"), file=sys.stderr)
            return 2
        return 2 if code == 1 else code  # an error the command reported (with 1 or 2): jaxeit exits with 2
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            demo(args.out, quick=args.quick, snr_db=args.snr, seed=args.seed, quiet=args.quiet or None)
        elif args.command == "benchmark":
            _run_benchmark(args.name, args.args)
        elif args.command == "reconstruct":
            reconstruct_file(args.data, method=args.method, out=args.out, radius=args.radius,
                             n_electrodes=args.electrodes, width=args.width, h=args.h, contact_impedance=args.z,
                             electrode_model=args.electrode_model, iterations=args.iterations,
                             reference=args.reference, level=args.level, patterns=args.patterns,
                             overwrite=args.overwrite, quiet=args.quiet or None, weights=args.weights)
    except (ValueError, OSError) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
