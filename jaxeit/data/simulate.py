"""Simulate paired EIT data sets: conductivity, image, noisy voltages, Gauss–Newton image.

:func:`simulate` writes a data set of :class:`~jaxeit.data.SimulationConfig`
into a folder (layout: :mod:`jaxeit.data.store`) and returns its path. It is

* **deterministic per sample**: sample ``i`` is drawn from
  ``fold_in(PRNGKey(seed), i)`` (split into a phantom key and a noise key), so
  any shard can be regenerated alone and gives the same samples;
* **batched**: a chunk of ``chunk_size`` samples is one jitted call (phantoms
  by ``vmap``, element averages, pixel averages, the batched forward solve,
  noise, the linearised GN as one matrix product, rendering); the last chunk of
  a shard is padded so every chunk runs the same compiled program;
* **data-parallel**: with N devices (default: all devices of this process)
  the keys of N consecutive chunks are split over a
  :func:`~jaxeit.parallel.data_mesh` and each device runs the single-device
  program on its chunk (same boundaries, same padding), so a data set is bit
  for bit the same on 1 or N devices and can be resumed on another count;
* **resumable**: complete, verified shards (sidecar present, SHA-256 and
  index range match) are skipped; anything else is (re)written;
* **atomic**: every file goes to a temporary name and is moved into place.

:class:`Simulator` exposes the per-chunk computation for tests and notebooks.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import phantoms
from ..forward import ForwardModel
from ..grid import Grid, domain_mask, elements_to_nodes, mesh_to_grid_elements, mesh_to_grid_nodes
from ..io_utils import atomic_path, atomic_write_text
from ..mesh import Mesh, cache_path, cached, disk, from_pyeit
from ..noise import add_noise
from ..parallel import batch_sharding, data_mesh, shard_batch
from ..protocol import adjacent
from ..signals import Interrupted, StopSignals
from ..machine import cpu_model
from . import store
from .config import SimulationConfig
from ..recon.linear import LinearGN, apply_step

__all__ = ["PAPER_VALUES", "Operators", "Simulator", "make_mesh", "simulate", "default_name", "sample_keys"]

#: Conductivity sets of the paper (§4.1): circle k of a phantom gets value k ("fixed").
PAPER_VALUES = {2: (0.5, 1.5), 4: (0.01, 0.1, 0.5, 1.5)}

SNR_DEFINITION = ("per sample, white Gaussian noise n with std ||v||_2/sqrt(M) * 10^(-SNR/20) on each of the "
                  "M measurements, so that SNR = 20 log10(||v||/||n||) in expectation (of the squared norms); "
                  "jaxeit.noise.add_noise")


# -----------------------------------------------------------------------------------
# Geometry
# -----------------------------------------------------------------------------------

def _have_pyeit() -> bool:
    try:
        import pyeit.mesh  # noqa: F401
    except ImportError:
        return False
    return True


def make_mesh(config: SimulationConfig) -> tuple[Mesh, dict]:
    """The forward (and GN) mesh of ``config`` and a JSON-able description of it.

    With the environment variable ``JAXEIT_MESH_CACHE`` set to a folder, meshes
    are saved there (:meth:`Mesh.save`) and reloaded instead of rebuilt, so a
    machine without pyeit or gmsh (e.g. an accelerator host) can use meshes
    made elsewhere; with ``mesh="auto"`` a cached pyEIT mesh counts as pyeit
    being available.
    """
    kind = config.mesh
    pyeit_name = f"pyeit_{config.n_electrodes}el_h0{config.h0:g}"
    disk_name = f"disk_{config.n_electrodes}el_w{config.electrode_width:g}_h{config.h0:g}"
    pyeit_cached = (p := cache_path(pyeit_name)) is not None and p.exists()
    if kind == "auto":
        kind = "pyeit" if (config.electrode_model == "point" and (pyeit_cached or _have_pyeit())) else "disk"
    if kind == "pyeit":
        if not (pyeit_cached or _have_pyeit()):
            raise ValueError("mesh='pyeit' needs the pyeit package (pip install pyeit), or use mesh='disk'")
        source = f"pyeit.mesh.create({config.n_electrodes}, h0={config.h0}) -> jaxeit.mesh.from_pyeit"

        def build():
            import pyeit.mesh

            m = pyeit.mesh.create(config.n_electrodes, h0=config.h0)
            return from_pyeit(m.node, m.element, m.el_pos)
        name = pyeit_name
    else:
        source = (f"jaxeit.mesh.disk(n_electrodes={config.n_electrodes}, "
                  f"electrode_width={config.electrode_width}, h={config.h0})")

        def build():
            return disk(n_electrodes=config.n_electrodes, electrode_width=config.electrode_width, h=config.h0)
        name = disk_name
    mesh = cached(name, build)
    digest = hashlib.sha256(np.ascontiguousarray(mesh.nodes).tobytes()
                            + np.ascontiguousarray(mesh.triangles).tobytes()).hexdigest()
    info = {"source": source, "kind": kind, "n_nodes": mesh.n_nodes, "n_elements": mesh.n_elements,
            "n_electrodes": mesh.n_electrodes, "ref_node": mesh.ref_node, "sha256": digest}
    return mesh, info


def sample_keys(seed: int, indices) -> jax.Array:
    """(B, 2) uint32 keys ``fold_in(PRNGKey(seed), i)`` of the samples ``indices``."""
    base = jax.random.PRNGKey(int(seed))
    idx = jnp.asarray(np.asarray(indices, np.int64).astype(np.uint32))
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(idx)


# -----------------------------------------------------------------------------------
# The per-chunk computation
# -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Simulator:
    """Everything needed to compute samples of a config (build with :meth:`build`).

    Attributes:
        config: the :class:`SimulationConfig`.
        mesh, mesh_info: the forward mesh and its description.
        model: the :class:`~jaxeit.ForwardModel` (float64).
        gn: the :class:`~jaxeit.recon.linear.LinearGN` operator.
        grid: the image :class:`~jaxeit.grid.Grid` over [-1, 1]².
        mask: (H, W) bool, pixel centre inside the mesh.
        device_mesh: the 1-D :class:`jax.sharding.Mesh` the chunks are spread over.
    """

    config: SimulationConfig
    mesh: Mesh
    mesh_info: dict
    model: ForwardModel
    gn: LinearGN
    grid: Grid
    mask: np.ndarray
    _render: object
    _fn: object
    device_mesh: jax.sharding.Mesh
    _constants: dict

    @classmethod
    def build(cls, config: SimulationConfig, devices=None) -> "Simulator":
        """Mesh, forward model, GN operator, grid and the jitted chunk function of ``config``.

        Everything but the sizes and the seed is cached (the last few physics /
        geometry configurations), so rebuilding, e.g. to resume, reuses the
        compiled code.

        Args:
            config: the data set's :class:`SimulationConfig`.
            devices: where chunks run (see :func:`jaxeit.parallel.data_mesh`):
                ``None`` for all devices of this process, an int n for the
                first n, a sequence of devices or a mesh. The samples do not
                depend on it.
        """
        parts = _static_parts(_static_key(config))
        mesh = data_mesh(jax.local_devices() if devices is None else devices)
        model, gn, mask = parts[2], parts[3], parts[5]
        constants = {d: jax.device_put((model, jnp.asarray(gn.h), jnp.asarray(gn.v_bg), jnp.asarray(mask)), d)
                     for d in mesh.devices.ravel()}
        return cls(config, *parts, mesh, constants)

    def render(self, sigma) -> np.ndarray:
        """(..., E) element values → (..., H, W) float32 image (``gn_render`` interpolation)."""
        return np.asarray(self._render(jnp.asarray(sigma, jnp.float64)), np.float32)

    def __call__(self, indices) -> dict[str, np.ndarray]:
        """Samples ``indices`` (any 1-D ints ≥ 0) as a dict of numpy arrays (see :mod:`.store`)."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("no sample indices given")
        if indices.min() < 0 or indices.max() >= 2**32:
            raise ValueError("sample indices must lie in [0, 2**32)")
        # one chunk per device: chunk boundaries stay at multiples of chunk_size and padding repeats the
        # last index, exactly as on one device, so every sample is computed by the same program
        step = self.config.chunk_size * self.device_mesh.size
        out = {}
        for lo in range(0, len(indices), step):
            part = indices[lo: lo + step]
            padded = np.concatenate([part, np.full(step - len(part), part[-1])])  # same shapes every call
            res = self.chunks(padded)
            res = {k: np.asarray(v)[: len(part)] for k, v in res.items()}
            for k, v in res.items():
                out.setdefault(k, []).append(v)
        out = {k: np.concatenate(v) for k, v in out.items()}
        if self.config.gn_method == "iterative":
            out["gn_sigma"] = self.gn.iterative(out["voltages"], max_iter=self.config.gn_iterations)
        out["gn_image"] = self.render(out["gn_sigma"])
        out["index"] = indices
        out["image"] = out["image"].astype(np.float32)
        return out

    def chunks(self, indices) -> dict[str, jax.Array]:
        """The raw chunk outputs (no GN image) of ``chunk_size × n_devices`` sample indices.

        The (B, 2) uint32 keys are split over :attr:`device_mesh` (chunk d on
        device d) and every device runs the jitted single-device chunk function
        on its own keys and a copy of the constants (computation follows data).

        Returns:
            ``{name: (B, ...) jax.Array}`` split over the devices like the keys
            (fields as in :mod:`.store`, without ``gn_image`` and ``index``).
        """
        mesh = self.device_mesh
        indices = np.asarray(indices, np.int64).reshape(-1)
        if len(indices) != self.config.chunk_size * mesh.size:
            raise ValueError(f"chunks() takes chunk_size x devices = {self.config.chunk_size * mesh.size} "
                             f"indices, got {len(indices)}")
        keys = shard_batch(np.asarray(sample_keys(self.config.seed, indices)), mesh)
        parts = []
        for shard in keys.addressable_shards:
            res = self._fn(*self._constants[shard.device], shard.data)
            if shard.device.platform == "cpu":
                # jaxlib 0.10's batched LAPACK kernels (the forward solve's Cholesky) wait for work queued on
                # the shared CPU thread pool: concurrent programs of several host devices can fill the pool
                # and deadlock, so host devices run one after another (they share the same cores anyway)
                jax.block_until_ready(res)
            parts.append(res)
        return {k: jax.make_array_from_single_device_arrays((len(indices),) + parts[0][k].shape[1:],
                                                            batch_sharding(mesh), [p[k] for p in parts])
                for k in parts[0]}


def _static_key(config: SimulationConfig) -> SimulationConfig:
    """``config`` with the fields that do not change the compiled computation normalised (sizes, seed,
    file options, the iterative GN's settings): the cache key of :func:`_static_parts`."""
    return config.replace(n_train=1, n_val=0, n_test=0, shard_size=config.chunk_size, seed=0, compress=False,
                          gn_method="linear", gn_iterations=1)


#: the data set configuration's prior names → those of jaxeit.recon.linear ("lm" is the NOSER diagonal)
_GN_PRIOR_NAMES = {"lm": "noser"}


@functools.lru_cache(maxsize=4)
def _static_parts(config: SimulationConfig):
    mesh, info = make_mesh(config)
    ops = Operators.build(config, mesh)
    return mesh, info, ops.model, ops.gn, ops.grid, ops.mask, ops.render_fn, _make_chunk_fn(config, mesh, ops.grid)


@dataclasses.dataclass(frozen=True)
class Operators:
    """The physics of a configuration on a given mesh: what turns voltages into a data set's GN image.

    Attributes:
        model: the :class:`~jaxeit.ForwardModel` (adjacent protocol, the configured electrode model).
        gn: the :class:`~jaxeit.recon.linear.LinearGN` operator of the GN images.
        grid: the image :class:`~jaxeit.grid.Grid` over [-1, 1]².
        mask: (H, W) bool, pixel centre inside the mesh (read-only).
        render_fn: jitted (..., E) element values → (..., H, W) image (``gn_render``).
    """

    model: ForwardModel
    gn: LinearGN
    grid: Grid
    mask: np.ndarray
    render_fn: object

    @classmethod
    def build(cls, config: SimulationConfig, mesh: Mesh) -> "Operators":
        """The operators of ``config`` on ``mesh`` (one Jacobian at the background)."""
        model = ForwardModel(mesh, adjacent(config.n_electrodes), electrode_model=config.electrode_model,
                             contact_impedance=config.contact_impedance)
        gn = LinearGN.build(model, background=config.background, param=config.gn_param,
                            prior=_GN_PRIOR_NAMES.get(config.gn_prior, config.gn_prior),
                            alpha=config.gn_alpha, p=config.gn_p)
        grid = Grid.square(1.0, config.image_size)
        mask = domain_mask(grid, mesh)
        mask.setflags(write=False)
        fill = float(config.exterior_value)
        if config.gn_render == "nodes":
            to_nodes = elements_to_nodes(mesh)
            to_grid = mesh_to_grid_nodes(mesh, grid, fill=fill)
            render = jax.jit(lambda s, a=to_nodes, b=to_grid: b(a(s)))
        else:
            op = mesh_to_grid_elements(mesh, grid, fill=fill)
            render = jax.jit(lambda s, a=op: a(s))
        return cls(model, gn, grid, mask, render)

    def gn_image(self, v) -> np.ndarray:
        """(..., M) voltages → (..., H, W) float32 linearised GN images, exactly as in the data sets."""
        return np.asarray(self.render_fn(self.gn(v)), np.float32)

    def lm_image(self, v, *, alpha: float, max_iter: int = 10, progress: bool = False) -> np.ndarray:
        """(B, M) or (M,) voltages → (B, H, W) or (H, W) float32 iterative Levenberg–Marquardt images.

        The DGM comparison paper's GN baseline (eqs. 5–9): :meth:`LinearGN.iterative` with ``lm=True``
        on log σ from the known background, the data set's prior R (diag(JᵀJ) for ``gn_prior="lm"``) at
        weight ``alpha`` (λ = alpha · mean diag(JᵀJ) / mean diag(R)), stopped when the objective decreases
        by less than 1e-4 relative or after ``max_iter`` iterations; rendered as the GN images. About
        0.1–0.3 s per sample on one CPU core (686 elements).
        """
        sigma = self.gn.iterative(v, max_iter=max_iter, alpha=alpha, lm=True, progress=progress)
        return np.asarray(self.render_fn(jnp.asarray(sigma)), np.float32)


def _make_chunk_fn(config: SimulationConfig, mesh: Mesh, grid: Grid):
    """The jitted ``fn(model, h, v_bg, mask, keys) -> dict`` of one chunk."""
    n_circles = config.n_circles
    value_set = PAPER_VALUES[n_circles]
    fixed = config.circle_values == "fixed"
    exterior = float(config.exterior_value)

    def one_phantom(key):
        k_ph, k_noise = jax.random.split(key)
        ph = phantoms.random_circles(k_ph, n_circles, values=value_set, background=config.background)
        return ph, k_noise

    @jax.jit
    def fn(model, h, v_bg, mask, keys):
        ph, k_noise = jax.vmap(one_phantom)(keys)
        circ = ph.shapes[0]
        if fixed:
            vals = jnp.broadcast_to(jnp.asarray(value_set, circ.value.dtype), circ.value.shape)
            circ = phantoms.Circles(circ.centre, circ.radius, vals)
            ph = phantoms.Phantom(ph.background, (circ,))
        sigma = phantoms.on_mesh(ph, mesh, samples=config.mesh_samples)
        image = phantoms.on_grid(ph, grid, supersample=config.image_supersample)
        image = jnp.where(mask, image, exterior)
        v_clean = model.voltages(sigma)
        v = jax.vmap(lambda vi, ki: add_noise(vi, config.snr_db, ki))(v_clean, k_noise)
        gn_sigma = apply_step(h, v_bg, v, config.background, config.gn_param)
        return {"sigma": sigma, "v_clean": v_clean, "voltages": v, "image": image, "gn_sigma": gn_sigma,
                "centres": circ.centre, "radii": circ.radius, "values": circ.value}

    return fn


# -----------------------------------------------------------------------------------
# Writing a data set
# -----------------------------------------------------------------------------------

def default_name(config: SimulationConfig) -> str:
    """A folder name such as ``circles2_40dB_point_128px_seed0``."""
    return (f"circles{config.n_circles}_{config.snr_db:g}dB_{config.electrode_model}_"
            f"{config.image_size}px_seed{config.seed}")


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("jaxeit", "jax", "jaxlib", "numpy", "scipy", "pyeit"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _metadata(config: SimulationConfig, sim: Simulator, status: str, extra: dict | None = None) -> dict:
    prot = sim.model.protocol
    meta = {
        "format": "jaxeit.data/1",
        "status": status,
        "config": config.to_dict(),
        "mesh": sim.mesh_info,
        "electrode_model": config.electrode_model,
        "protocol": {"kind": "adjacent (pyEIT std parser: dist_exc=1, step_meas=1, driven electrodes excluded)",
                     "n_electrodes": prot.n_electrodes, "n_patterns": prot.n_patterns,
                     "n_measurements": prot.n_measurements, "current_amplitude": 1.0},
        "snr": {"snr_db": config.snr_db, "definition": SNR_DEFINITION},
        "phantoms": {"generator": "jaxeit.phantoms.random_circles", "n_circles": config.n_circles,
                     "values": list(PAPER_VALUES[config.n_circles]), "assignment": config.circle_values,
                     "background": config.background},
        "image": {"size": config.image_size, "box": [-1.0, 1.0, -1.0, 1.0],
                  "convention": "image[i, j] at (x[j], y[i]); row index = y (imshow origin='lower')",
                  "truth": f"pixel averages of the phantom ({config.image_supersample}^2 sub-pixels)",
                  "exterior_value": config.exterior_value, "n_domain_pixels": int(sim.mask.sum())},
        "gn": dict(sim.gn.describe(), method=config.gn_method, render=config.gn_render,
                   iterations=config.gn_iterations if config.gn_method == "iterative" else 1),
        "seed": {"seed": config.seed, "rule": "sample i uses fold_in(PRNGKey(seed), i), split into "
                 "(phantom key, noise key)"},
        "splits": {name: list(r) for name, r in config.splits.items()},
        "shards": {name: [list(s) for s in config.shards(name)] for name in config.splits},
        "versions": _versions(),
    }
    meta.update(extra or {})
    return meta


def _write_geometry(root: Path, sim: Simulator) -> None:
    m = sim.mesh
    with atomic_path(root / "geometry.npz") as tmp:
        np.savez(tmp, nodes=m.nodes, triangles=m.triangles, electrode_nodes=m.electrode_nodes,
                 electrode_edges=m.electrode_edges, edge_electrode=m.edge_electrode,
                 ref_node=np.asarray(m.ref_node), grid_box=np.asarray(sim.grid.extent),
                 grid_size=np.asarray(sim.grid.shape), mask=sim.mask)
        os.chmod(tmp, 0o644)


def _write_shard(path, arrays, *, start, stop, compress):
    """Indirection so tests can interrupt a run between shards."""
    return store.write_shard(path, arrays, start=start, stop=stop, compress=compress)


def simulate(config: SimulationConfig, out=None, *, progress: bool = True, overwrite: bool = False,
             log=print, devices=None, handle_signals: bool = True) -> Path:
    """Generate (or finish) the data set of ``config`` in ``out``; returns the folder.

    Args:
        config: the data set's :class:`SimulationConfig`.
        out: the folder (default ``out/data/<default_name(config)>``).
        progress: show a tqdm bar.
        overwrite: if ``out`` holds a data set of another config, replace it
            (its shard files are deleted) instead of raising.
        log: one-line messages (``None`` for silence).
        devices: the devices to spread the chunks over (``None``: all devices
            of this process; see :meth:`Simulator.build`). The data do not
            depend on it, so a run may be resumed on another device count.
        handle_signals: on SIGINT/SIGTERM, finish the shard being computed, keep it,
            and raise :class:`jaxeit.signals.Interrupted` (main thread only).

    Returns:
        The data set folder; ``metadata.json`` then has ``status: "complete"``
        and ``throughput`` (samples/s of this run, excluding compilation).

    Raises:
        ValueError: if ``out`` holds a data set of a different config (or mesh)
            and ``overwrite`` is False.
        jaxeit.signals.Interrupted: on SIGINT/SIGTERM, after the last complete shard
            (run again to resume).
    """
    from tqdm.auto import tqdm

    log = log or (lambda *a, **k: None)
    root = Path(out) if out is not None else Path("out") / "data" / default_name(config)
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    sim = Simulator.build(config, devices)
    meta_path = root / "metadata.json"
    old = {}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        same = old.get("config") == config.to_dict() and old.get("mesh", {}).get("sha256") == sim.mesh_info["sha256"]
        if not same:
            if not overwrite:
                raise ValueError(f"{root} holds a data set with a different config or mesh; choose another "
                                 "folder or pass overwrite=True (--overwrite)")
            for split in ("train", "val", "test"):
                for f in sorted((root / split).glob("shard_*.*")) if (root / split).exists() else []:
                    f.unlink()
            log(f"[simulate] overwriting the data set in {root}")
    atomic_write_text(meta_path, json.dumps(_metadata(config, sim, "incomplete"), indent=1))
    _write_geometry(root, sim)
    t_setup = time.perf_counter() - t_start

    for split in ("train", "val", "test"):   # temporary files of an interrupted writer
        for f in (root / split).glob(".shard_*") if (root / split).exists() else []:
            f.unlink()
    todo, done = [], 0
    for split in ("train", "val", "test"):
        for k, (start, stop) in enumerate(config.shards(split)):
            if store.verify_shard(store.shard_path(root, split, k), start, stop):
                done += stop - start
            else:
                todo.append((split, k, start, stop))
    n_todo = sum(b - a for _, _, a, b in todo)
    log(f"[simulate] {root}: {config.n_samples} samples ({done} already complete, {n_todo} to do) on "
        f"{sim.mesh_info['n_elements']} elements, {config.image_size}x{config.image_size} px, "
        f"{config.snr_db:g} dB, GN {config.gn_method}/{config.gn_param}/{config.gn_prior}, "
        f"{sim.device_mesh.size} device(s)")
    bar = tqdm(total=config.n_samples, initial=done, disable=not progress, unit="sample", desc="simulate",
               dynamic_ncols=True, mininterval=2.0)
    t_compute, n_timed, t_first = 0.0, 0, None
    with StopSignals(handle_signals) as stop_signals:
        try:
            for split, k, start, stop in todo:
                if stop_signals.stopped:
                    name = signal.Signals(stop_signals.signum).name
                    log(f"[simulate] {name}: stopped after the last complete shard")
                    raise Interrupted(stop_signals.signum, "between shards; the complete shards are kept")
                t0 = time.perf_counter()
                arrays = sim(np.arange(start, stop))
                dt = time.perf_counter() - t0
                if t_first is None:          # the first shard includes compilation
                    t_first = dt
                else:
                    t_compute += dt
                    n_timed += stop - start
                _write_shard(store.shard_path(root, split, k), arrays, start=start, stop=stop,
                             compress=config.compress)
                bar.update(stop - start)
        finally:
            bar.close()
    wall = time.perf_counter() - t_start
    throughput = {"samples_this_run": n_todo, "setup_s": round(t_setup, 3),
                  "first_shard_s": None if t_first is None else round(t_first, 3),
                  "samples_per_s": round(n_timed / t_compute, 2) if n_timed else None,
                  "cpu": cpu_model(), "devices": [str(d) for d in sim.device_mesh.devices.ravel()],
                  "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    if not n_todo and old.get("throughput"):
        throughput = old["throughput"]          # nothing generated now: keep the generating run's record
    extra = {"throughput": throughput}
    atomic_write_text(meta_path, json.dumps(_metadata(config, sim, "complete", extra), indent=1))
    if n_todo:
        rate = throughput["samples_per_s"]
        log(f"[simulate] wrote {n_todo} samples in {wall:.1f} s" + (f" ({rate:.1f} samples/s after compilation)"
                                                                     if rate else ""))
    return root


