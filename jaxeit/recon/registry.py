"""The one registry of reconstruction methods and the one call shape, :func:`reconstruct`.

``METHODS`` maps each name to its options class (a frozen dataclass with
keyword-only fields, :class:`~jaxeit.recon.method.Method`); the CLI, the
real-data pipelines and the benchmarks read it. A method is given as an
object or, equivalently, by name with keyword options::

    reconstruct(fm, v, GaussNewton(alpha=1e-2, max_iter=15))
    reconstruct(fm, v, "gn", alpha=1e-2, max_iter=15)          # the same
"""

from __future__ import annotations

import jax
import numpy as np

from ..forward import ForwardModel
from ..grid import mesh_to_grid_elements
from .classical import TV, BackProjection, GaussNewton, GNGaussian, LevenbergMarquardt, OneStep, TVLog
from .diffinr import DiffINR
from .greit import GREIT
from .inr.fit import INRTV, INRFit, render
from .method import Method
from .result import Result

__all__ = ["METHODS", "reconstruct", "resolve", "describe", "check_signal", "register_method"]

#: name → options class of every reconstruction method
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    OneStep, GaussNewton, LevenbergMarquardt, TV, BackProjection, TVLog, GNGaussian, INRFit, INRTV, DiffINR, GREIT)}


#: methods that a higher layer registers when it is imported (name → module), for the error message
_REGISTERED_ON_IMPORT = {"cnf": "jaxeit.dgm", "cvae": "jaxeit.dgm", "csd": "jaxeit.dgm", "dps": "jaxeit.dgm"}


def register_method(cls: type[Method]) -> type[Method]:
    """Add a method class to :data:`METHODS` under ``cls.name`` (how :mod:`jaxeit.dgm` adds its learned
    methods, which sit above this package); a ValueError if another class has that name."""
    if not (isinstance(cls, type) and issubclass(cls, Method)) or not cls.name:
        raise ValueError(f"a method must be a Method subclass with a name, got {cls!r}")
    if METHODS.get(cls.name, cls) is not cls:
        raise ValueError(f"method name {cls.name!r} is taken by {METHODS[cls.name].__qualname__}")
    METHODS[cls.name] = cls
    return cls


def describe() -> dict[str, str]:
    """name → one-line description of every registered method."""
    return {name: cls.description for name, cls in METHODS.items()}


def resolve(method: str | Method, **options) -> Method:
    """The options object of ``method`` (a name of :data:`METHODS` or a :class:`Method`) with ``options``
    applied; a ValueError for an unknown method or option (listing the valid ones) or a bad value."""
    if isinstance(method, Method):
        return method.replace(**options) if options else method
    if isinstance(method, str):
        if method not in METHODS:
            hint = (f" ({method!r} is registered by `import {_REGISTERED_ON_IMPORT[method]}`)"
                    if method in _REGISTERED_ON_IMPORT else "")
            raise ValueError(f"unknown method {method!r}{hint}; choose one of: {', '.join(METHODS)}")
        return METHODS[method].from_options(**options)
    raise ValueError(f"method must be a name of jaxeit.recon.METHODS or a method object such as "
                     f"GaussNewton(), got {type(method).__name__}")


def check_signal(v, name: str = "v", reference=None) -> np.ndarray:
    """Voltages (M,) that carry information, as float64, or a ValueError naming ``name``.

    Rejects non-finite values, all-zero and constant data, and ``v`` equal to
    ``reference`` (no change to image). The model-free part of the input checks of
    :func:`reconstruct`, usable before a mesh exists (the command line calls it first).
    """
    arr = np.asarray(v, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: pass the measured voltages")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN/inf values (first at index "
                         f"{int(np.flatnonzero(bad)[0])}); drop them with Protocol.subset(mask)")
    if not np.any(arr):
        raise ValueError(f"{name} is all zero: no current reached the electrodes or the data were not recorded; "
                         "check the file and the measurement protocol")
    if arr.size > 1 and np.ptp(arr) == 0:
        raise ValueError(f"{name} is constant, the same value ({arr.ravel()[0]:.6g}) for every measurement: these "
                         "are not EIT measurements (differences of electrode potentials vary with the injection); "
                         "check the file")
    if reference is not None and np.array_equal(arr.ravel(), np.ravel(reference)):
        ref = "'reference'" if name.startswith("'") else "reference"
        raise ValueError(f"{name} equals {ref}: there is no change to image (the same file twice?); the target "
                         "measurement is v, the empty-tank one the reference")
    return arr


def _check_voltages(model: ForwardModel, v, name: str):
    if isinstance(v, jax.core.Tracer):
        return v
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape != (model.n_measurements,):
        raise ValueError(f"{name} must have shape ({model.n_measurements},) to match the protocol's "
                         f"measurements, got {arr.shape}; restrict the protocol with Protocol.subset if "
                         "some measurements are missing")
    return check_signal(arr, name)


def reconstruct(model: ForwardModel, v, method: str | Method = "gn", *, reference=None, grid=None,
                **options) -> Result:
    """Reconstruct element conductivities from voltages ``v`` (M,) float64.

    Args:
        model: the forward model on the reconstruction mesh.
        v: measured voltages, ordered as ``model.protocol``.
        method: a key of :data:`METHODS` or an options object (e.g. ``GaussNewton(max_iter=15)``).
        reference: reference voltages (M,) for difference imaging (methods whose
            ``uses_reference`` is "optional" or "required": ``"one-step"``, ``"bp"``).
        grid: optional :class:`jaxeit.grid.Grid`; the result then carries a
            rendering in ``Result.image`` (element lookup, or the INR sampled there).
        **options: the method's options (e.g. ``alpha``, ``prior``, ``max_iter``);
            with an object they replace its fields.

    Raises:
        ValueError: unknown method or option, a bad option value, data of the
        wrong shape, non-finite, all zero, constant or equal to the reference,
        a reference given to an absolute method or missing for a difference one.
    """
    spec = resolve(method, **options)
    v = _check_voltages(model, v, "v")
    if reference is not None:
        reference = _check_voltages(model, reference, "reference")
        if spec.uses_reference == "never":
            raise ValueError(f"{spec.name} is an absolute method and does not use reference; for difference "
                             "imaging use 'one-step' or 'bp', or fit F(σ_bg) + (v − reference) as "
                             "jaxeit.realdata.reconstruct_dataset does")
        if not isinstance(v, jax.core.Tracer) and not isinstance(reference, jax.core.Tracer) \
                and np.array_equal(v, reference):
            raise ValueError("v equals reference: there is no change to image (the same file twice?)")
    elif spec.uses_reference == "required":
        raise ValueError(f"{spec.name} is a difference method: pass reference=<reference voltages>")
    spec.check(model, v, reference)
    result = spec.run(model, v, reference)
    if grid is not None:
        if "inr" in result.extras:  # a continuous representation: sample it on the requested grid
            result.image = render(result.extras["inr"], grid, result.extras["frame"])
        else:
            result.image = np.asarray(mesh_to_grid_elements(model.mesh, grid)(result.sigma))
    return result
