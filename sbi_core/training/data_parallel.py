"""Data-parallel training over all JAX devices with ``jax.sharding``.

The scheme is plain synchronous data parallelism, written as shardings and left to XLA's SPMD
partitioner (no ``pmap``, no hand-written collectives):

- a 1-D :class:`jax.sharding.Mesh` over the devices, axis ``"data"``;
- every batch is sharded along its leading (sample) axis: ``NamedSharding(mesh, P("data"))``,
  so each device computes the loss and gradients of ``batch_size / n_devices`` samples;
- weights, optimiser state and in-memory splits are replicated: ``NamedSharding(mesh, P())``.
  The gradient of the batch mean is a sum over devices, which XLA inserts as an all-reduce, so
  every device applies the same update and the weights stay replicated.

The numbers are those of one device up to float summation order (the batch mean is reduced in a
different order), so loss curves agree to within float32 rounding; ``tests/sbi_core/
test_data_parallel.py`` checks this on 2 CPU devices.

In-memory splits are replicated (each device gathers its shard of every batch locally inside the
compiled epoch); a split that does not fit on every device streams from the store instead, with
each streamed batch placed sharded.

Use it through the trainer: ``SBITrainer(..., data_parallel=True)`` (all devices) or
``data_parallel="auto"`` (only when there is more than one device).

Multi-host (several processes, e.g. one per machine or per GPU node), untested here:

1. call ``jax.distributed.initialize()`` (coordinator address, process count and id, or the
   cluster's auto-detection) in every process *before* any other JAX call;
2. ``jax.devices()`` then lists the devices of all hosts and :func:`data_parallel_mesh` spans
   them; every process runs the same program with the same trainer seed;
3. the global batch is assembled per host: every process reads the same global batch (same
   shuffling seed) and contributes only the rows of its own devices
   (:func:`put_global_batch`, via ``jax.make_array_from_process_local_data``); replicated data
   must be identical on every process.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["DATA_AXIS", "Mesh", "batch_sharding", "check_batch_size", "constrain_batch", "data_parallel_mesh",
           "mesh_size", "put_global_batch", "replicate", "replicated_sharding", "resolve_mesh"]

PyTree = Any
DATA_AXIS = "data"
DataParallel = bool | Literal["auto"]


def data_parallel_mesh(devices: list[Any] | None = None) -> Mesh:
    """A 1-D mesh (axis ``"data"``) over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_parallel_mesh: no devices")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def resolve_mesh(data_parallel: DataParallel | Mesh) -> Mesh | None:
    """The trainer's ``data_parallel`` option as a mesh (None = ordinary single-device training).

    Args:
        data_parallel: ``False``; ``True`` (all devices, even if only one); ``"auto"`` (all
            devices when there are at least two); or a ready ``Mesh`` with one axis.

    Raises:
        ValueError: any other value, or a mesh with more than one axis.
    """
    if isinstance(data_parallel, Mesh):
        if len(data_parallel.axis_names) != 1:
            raise ValueError(f"data_parallel: expected a 1-D mesh, got axes {data_parallel.axis_names}")
        return data_parallel
    if data_parallel is False:
        return None
    if data_parallel is True:
        return data_parallel_mesh()
    if data_parallel == "auto":
        return data_parallel_mesh() if jax.device_count() > 1 else None
    raise ValueError(f"SBITrainer: data_parallel must be True, False, 'auto' or a jax.sharding.Mesh, got {data_parallel!r}")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split across the mesh; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def mesh_size(mesh: Mesh) -> int:
    """Devices in the mesh."""
    return int(mesh.devices.size)


def check_batch_size(mesh: Mesh, batch_size: int) -> None:
    """Every device gets the same number of samples per step.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the number of devices.
    """
    n = mesh_size(mesh)
    if batch_size % n:
        raise ValueError(f"data-parallel training over {n} devices needs a batch size that is a multiple of {n}, got {batch_size}; change batch_size or pass data_parallel=False")


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place ``tree`` replicated on the mesh (same value assumed on every process)."""
    sharding = replicated_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), tree)


def put_global_batch(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place a global batch sharded along its leading axis.

    Single process: a plain ``device_put``. Several processes: every process passes the same
    global batch and contributes the contiguous block of rows that belongs to its devices.
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    index, count = jax.process_index(), jax.process_count()

    def local(leaf: Any) -> jax.Array:
        leaf = np.asarray(leaf)
        rows = leaf.shape[0] // count
        part = leaf[index * rows:(index + 1) * rows]
        return jax.make_array_from_process_local_data(sharding, part, leaf.shape)

    return jax.tree.map(local, tree)


def constrain_batch(tree: PyTree, sharding: NamedSharding | None) -> PyTree:
    """Inside compiled code: ask XLA to split ``tree``'s batch axis as ``sharding`` says."""
    if sharding is None:
        return tree
    return jax.tree.map(lambda leaf: jax.lax.with_sharding_constraint(leaf, sharding), tree)
