"""Data parallelism on JAX's own engine: a device mesh, multi-host start-up, sharded batches.

jaxcalc does no parallelism of its own. ``fit(..., mesh=data_mesh())`` places each batch sharded
along the mesh axis ``"data"`` and the parameters and trainer state replicated; XLA's SPMD
partitioner then splits every per-example computation (losses, gradients, Jacobians, HVPs,
Fisher-vector products) across the devices and inserts the all-reduces that the batch means
need. The same program runs on one CPU, on the GPUs of one host, and across hosts.

Multi-host ("multi-controller") runs start one process per host (or per GPU); each calls
``initialize`` before touching any device, builds the mesh over *all* processes' devices and
passes ``fit`` only its own shard of the data (``process_shard``): ``fit`` assembles the global
batch with ``jax.make_array_from_process_local_data``.

Reference: JAX, "Distributed arrays and automatic parallelization" and "Multi-process
environments" (jax.readthedocs.io).
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcalc._types import Batch, PyTree

logger = logging.getLogger(__name__)

DATA_AXIS = "data"

# Environment variables read by ``initialize`` when an argument is not given. JAX itself reads
# JAX_COORDINATOR_ADDRESS (and JAX_LOCAL_DEVICE_IDS); the other two are this module's.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def data_mesh(devices: Optional[Sequence[jax.Device]] = None, *,
              axis_name: str = DATA_AXIS) -> Mesh:
    """A one-axis ``Mesh`` over ``devices`` (default: ``jax.devices()``, every process's).

    Args:
      devices: the devices to spread the batch over, in order.
      axis_name: the mesh axis name; ``fit`` shards batches along ``"data"``.

    Returns:
      ``Mesh(np.array(devices), (axis_name,))``.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh: devices must name at least one device, got none")
    if not isinstance(axis_name, str) or not axis_name:
        raise TypeError(f"data_mesh: axis_name must be a non-empty string, got {axis_name!r}")
    return Mesh(np.array(devices), (axis_name,))


def data_axis_size(mesh: Mesh) -> int:
    """The number of devices along the mesh's ``"data"`` axis (ValueError if it has none)."""
    check_mesh("data_axis_size", mesh)
    return int(mesh.shape[DATA_AXIS])


def check_mesh(fn: str, mesh) -> Mesh:
    """Return ``mesh`` if it is a ``jax.sharding.Mesh`` with a ``"data"`` axis."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{fn}: mesh must be a jax.sharding.Mesh (see "
                        f"jaxcalc.distributed.data_mesh), got {type(mesh).__name__}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"{fn}: mesh must have an axis named {DATA_AXIS!r}, got axes "
                         f"{tuple(mesh.axis_names)}")
    return mesh


def batch_sharding(mesh: Mesh, ndim: int = 1, leading: int = 0) -> NamedSharding:
    """Sharding of an array whose axis ``leading`` is the example axis, split over ``"data"``."""
    spec = [None] * ndim
    spec[leading] = DATA_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    """The fully replicated sharding on ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every array leaf of ``tree`` as a global array replicated on all devices of ``mesh``.

    Works across processes: every process must pass the same values (as after loading the same
    checkpoint or initialising from the same key). Typed PRNG keys stay typed keys.
    """
    sharding = replicated(mesh)

    def leaf(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(leaf(jax.random.key_data(x)), impl=impl)
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, (jax.Array, np.ndarray, np.generic)):
            host = np.asarray(x)
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
        return x

    return jax.tree_util.tree_map(leaf, tree)


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
    """Global arrays split along ``"data"`` from this process's rows of a batch.

    With one process, ``batch`` is the whole batch. With several, each passes its own equal-sized
    shard (``process_shard``) and the global leading dimension is the sum over processes.

    Raises:
      ValueError: if a process's leading dimension is not a multiple of its devices on the mesh.
    """
    local_devices = local_data_devices(mesh)
    out = []
    for i, a in enumerate(batch):
        host = np.asarray(a)
        if host.ndim == 0 or host.shape[0] % local_devices:
            raise ValueError(f"shard_batch: batch[{i}] must have a leading dimension that is a "
                             f"multiple of the {local_devices} local devices of the mesh's "
                             f"{DATA_AXIS!r} axis, got shape {host.shape}")
        out.append(jax.make_array_from_process_local_data(batch_sharding(mesh, host.ndim), host))
    return tuple(out)


def process_shard(data: Batch, *, process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> Batch:
    """This process's contiguous, equal-sized share of every array in ``data``.

    ``N // process_count`` rows each; the last ``N mod process_count`` rows are dropped so that
    every process holds the same number (which ``make_array_from_process_local_data`` needs).
    Use it when every host can read the whole dataset; a loader that reads only its own files
    does the same job.
    """
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process_shard: need 0 <= process_index < process_count, got "
                         f"process_index={index}, process_count={count}")
    data = tuple(data)
    if not data:
        raise ValueError("process_shard: data must be a non-empty tuple of arrays, got ()")
    n = np.shape(data[0])[0] if np.ndim(data[0]) else 0
    per = n // count
    if per == 0:
        raise ValueError(f"process_shard: {n} examples cannot be split over {count} processes")
    return tuple(np.asarray(a)[index * per:(index + 1) * per] for a in data)


def local_data_devices(mesh: Mesh) -> int:
    """How many of this process's devices lie along the ``"data"`` axis of ``mesh``."""
    check_mesh("local_data_devices", mesh)
    total = int(mesh.shape[DATA_AXIS])
    processes = len({d.process_index for d in mesh.devices.flat})
    return max(total // processes, 1)


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *,
               local_device_ids: Optional[Sequence[int]] = None,
               initialization_timeout: int = 300) -> bool:
    """Start JAX's multi-process runtime (``jax.distributed.initialize``) once per process.

    Arguments left ``None`` come from the environment — ``JAX_COORDINATOR_ADDRESS``
    (``host:port`` of process 0), ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` — and, where those are
    unset too, from JAX's cluster auto-detection (SLURM, Open MPI, Cloud TPU, Kubernetes). Call it
    before any other JAX call in the process.

    Returns:
      ``True`` if this call initialised the runtime, ``False`` if it already was.
    """
    if jax.distributed.is_initialized():
        return False
    if coordinator_address is None:
        coordinator_address = os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = _env_int(ENV_PROCESS_ID)
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"initialize: num_processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"initialize: process_id must be in [0, {num_processes}), got {process_id}")
    logger.info("initialize: coordinator=%s num_processes=%s process_id=%s", coordinator_address,
                num_processes, process_id)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids,
                               initialization_timeout=initialization_timeout)
    return True


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"initialize: environment variable {name} must be an integer, got "
                         f"{value!r}") from None


def is_main_process() -> bool:
    """``True`` on process 0 (the one that writes checkpoints and results)."""
    return jax.process_index() == 0


__all__ = ["DATA_AXIS", "data_mesh", "data_axis_size", "local_data_devices", "check_mesh",
           "batch_sharding", "replicated", "replicate", "shard_batch", "process_shard",
           "initialize", "is_main_process"]
