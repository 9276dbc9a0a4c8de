"""Data parallelism over devices with :mod:`jax.sharding`.

One pattern serves data generation and training on 1 or N devices: a 1-D
:class:`~jax.sharding.Mesh` with the axis ``"data"`` (:func:`data_mesh`), the
leading (sample) axis of every batch split over it (:func:`shard_batch`) and
everything else, parameters and optimiser state included, copied to every
device (:func:`replicate`). A function ``jax.jit``-ed once then runs where its
inputs live ("computation follows data"): each device works on its slice of
the batch and XLA inserts the collectives, e.g. the all-reduce of a mean
gradient. With one device the mesh has one entry and nothing changes.

Several processes (hosts): call :func:`initialize_distributed` first thing in
every process; :func:`jax.devices` then lists the devices of all processes,
and :func:`shard_batch` / :func:`replicate` expect every process to pass the
same global arrays (each keeps the slices of its own devices).

Testing on a CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set
before JAX starts) makes the host look like N devices.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["DATA_AXIS", "data_mesh", "shard_batch", "replicate", "batch_sharding", "initialize_distributed"]

#: Name of the mesh axis over which batches are split.
DATA_AXIS = "data"


def data_mesh(devices: Mesh | int | Sequence | None = None) -> Mesh:
    """A 1-D device mesh with the axis :data:`DATA_AXIS`.

    Args:
        devices: ``None`` (all visible devices, :func:`jax.devices`), an int n
            (the first n of them), a sequence of :class:`jax.Device`, or a
            ``Mesh`` (returned unchanged if it is 1-D over :data:`DATA_AXIS`).

    Returns:
        ``Mesh(devices, ("data",))``.

    Raises:
        ValueError: for no devices, more than are visible, or a mesh with other axes.
    """
    if isinstance(devices, Mesh):
        if devices.axis_names != (DATA_AXIS,):
            raise ValueError(f"need a 1-D mesh with the axis {DATA_AXIS!r}, got axes {devices.axis_names}")
        return devices
    if devices is None:
        devs = jax.devices()
    elif isinstance(devices, (int, np.integer)):
        avail = jax.devices()
        if not 1 <= devices <= len(avail):
            raise ValueError(f"asked for {devices} devices, {len(avail)} are visible")
        devs = avail[:int(devices)]
    else:
        devs = list(devices)
    if not devs:
        raise ValueError("no devices given")
    return Mesh(np.asarray(devs, dtype=object), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch: leading axis split over :data:`DATA_AXIS`, the others whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(tree, mesh: Mesh):
    """Place every leaf of ``tree`` with its leading axis split evenly over the mesh's devices.

    Args:
        tree: a pytree of (B, ...) arrays (numpy or JAX, any dtype), all with
            the same B; every process passes the same global arrays.
        mesh: from :func:`data_mesh`; B must be a multiple of its size.

    Returns:
        The same pytree of global ``jax.Array`` s of shape (B, ...), device
        ``d`` holding rows ``[d B/N, (d+1) B/N)``.

    Raises:
        ValueError: if a leaf is a scalar or B is not divisible by the number of devices.
    """
    n = mesh.size
    for leaf in jax.tree_util.tree_leaves(tree):
        shape = np.shape(leaf)
        if not shape:
            raise ValueError("shard_batch needs arrays with a leading batch axis, got a scalar")
        if shape[0] % n:
            raise ValueError(f"a batch of {shape[0]} cannot be split evenly over {n} devices: make the batch "
                             f"size a multiple of {n}, or use fewer devices (devices=...)")
    return jax.device_put(tree, batch_sharding(mesh))


def replicate(tree, mesh: Mesh):
    """A full copy of every leaf of ``tree`` (arrays of any shape and dtype) on each device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def initialize_distributed(**kwargs) -> bool:
    """Start :func:`jax.distributed.initialize` when this process is one of several.

    Call it before any other JAX call. It acts only when the environment
    describes a multi-process job, so the same script runs unchanged on one
    machine:

    * ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), with
      ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``;
    * a SLURM job step with more than one task (``SLURM_STEP_NUM_TASKS`` or
      ``SLURM_NTASKS`` > 1), or Open MPI with ``OMPI_COMM_WORLD_SIZE`` > 1
      (JAX reads the rest from the cluster's variables).

    Args:
        **kwargs: passed on to :func:`jax.distributed.initialize` (e.g.
            ``coordinator_address``, ``num_processes``, ``process_id``);
            giving ``coordinator_address`` forces initialisation.

    Returns:
        True if :func:`jax.distributed.initialize` was called, False for a
        single-process run.
    """
    env = os.environ
    kwargs = dict(kwargs)
    explicit = "JAX_COORDINATOR_ADDRESS" in env
    if explicit:
        # jax reads the address itself but not the process count or rank
        for name, var in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
            if var in env:
                kwargs.setdefault(name, int(env[var]))
    slurm = "SLURM_JOB_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))) > 1
    mpi = int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    if not (explicit or slurm or mpi or kwargs.get("coordinator_address")):
        return False
    jax.distributed.initialize(**kwargs)
    return True
