"""Simulation fanned out over a Dask cluster with Prefect's ``DaskTaskRunner`` (prefect-dask).

One store, many writers::

    coordinator (the flow)                         Dask workers (processes or threads)
    create_simulation_store(...)  -> writer.lock   StoreWriter.attach(store)
    split pending chunks into n_workers ranges  -> simulate_chunks(task, attached, range)
    wait for every range, then writer.finalize()

The coordinator creates the store once (taking ``<store>.lock`` for the whole run) and is the only
one to finalize it. Each worker opens the unfinished store itself and writes only its own chunks:
disjoint Zarr chunks are separate files, so no two workers ever write the same file. Chunk ``i``
is simulated from ``fold_in(PRNGKey(seed), i)`` whatever process runs it, so the finished store is
identical (fingerprint and array bytes) to a serial ``simulate_to_store`` with the same seed and
chunk size. A failed worker leaves the store unfinished and resumable: running the flow again
simulates only the chunks still missing.

Plain functions first, thin Prefect wrappers after (as in ``flows/tasks.py``). To use an existing
Dask cluster (several machines sharing a filesystem or object store), pass its scheduler
``address``; the store path must then be reachable from every worker.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task


# ------------------------------------------------------------------------------ plain functions
def plan_chunk_ranges(pending: list[int], n_workers: int) -> list[list[int]]:
    """Split chunk indices into at most ``n_workers`` contiguous, disjoint, near-equal ranges.

    Raises:
        ValueError: ``n_workers`` is not a positive integer.
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers: expected a positive integer, got {n_workers!r}")
    pending = [int(i) for i in pending]
    parts = min(n_workers, len(pending))
    if parts == 0:
        return []
    base, extra = divmod(len(pending), parts)
    ranges, start = [], 0
    for k in range(parts):
        stop = start + base + (1 if k < extra else 0)
        ranges.append(pending[start:stop])
        start = stop
    return ranges


def simulate_chunk_range(task_name: str, store_path: str, chunks: list[int]) -> dict[str, Any]:
    """Worker side: attach to the unfinished store and simulate/write ``chunks`` of it.

    Returns:
        ``chunks``, ``rows`` written, and the ``pid``/``host`` that wrote them.
    """
    from sbi_core.dataset import StoreWriter, simulate_chunks
    from sbi_core.simulators import get_task

    writer = StoreWriter.attach(store_path)
    rows = simulate_chunks(get_task(task_name), writer, chunks)
    return {"chunks": list(chunks), "rows": int(rows), "pid": os.getpid(), "host": socket.gethostname()}


def _check_arguments(num_simulations: Any, chunk_size: Any, n_workers: Any) -> None:
    for name, value in (("num_simulations", num_simulations), ("chunk_size", chunk_size), ("n_workers", n_workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")


# ------------------------------------------------------------------------------ Prefect wrappers
@task(name="simulate-chunk-range")
def simulate_chunk_range_task(task_name: str, store_path: str, chunks: list[int]) -> dict[str, Any]:
    """Prefect task over :func:`simulate_chunk_range` (runs on a Dask worker)."""
    return simulate_chunk_range(task_name, store_path, chunks)


@flow(name="simulate-dataset-parallel")
def simulate_dataset_parallel_flow(task_name: str, num_simulations: int, output: str, seed: int = 0,
                                   chunk_size: int = 1024, n_workers: int = 2,
                                   overwrite: bool = False) -> dict[str, Any]:
    """Create the store, fan the pending chunk ranges out to the task runner, finalize.

    Use :func:`simulate_dataset_parallel` to get a Dask task runner sized to ``n_workers``; this
    flow runs on whatever task runner it is given (``.with_options(task_runner=...)``).
    """
    from sbi_core.dataset import create_simulation_store
    from sbi_core.simulators import get_task

    logger = get_run_logger()
    writer = create_simulation_store(get_task(task_name), num_simulations, output, seed=seed,
                                     chunk_size=chunk_size, overwrite=overwrite)
    with writer:  # holds <store>.lock until the store is final (or the run fails, resumable)
        ranges = plan_chunk_ranges(writer.pending_chunks(), n_workers)
        logger.info("simulating %d chunk(s) of %s in %d range(s)", sum(map(len, ranges)), writer.path, len(ranges))
        futures = [simulate_chunk_range_task.submit(task_name, writer.path, r) for r in ranges]
        results = [f.result() for f in futures]
        store = writer.finalize()
    return {"store": str(Path(output).resolve()), "fingerprint": store.fingerprint, "n_samples": store.n_samples,
            "task": {"name": store.task_name, "version": store.task_version}, "workers": results}


def dask_task_runner(n_workers: int, *, processes: bool = True, address: str | None = None) -> Any:
    """A ``DaskTaskRunner``: a local cluster of ``n_workers`` single-threaded workers, or ``address``."""
    from prefect_dask import DaskTaskRunner

    if address is not None:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1,
                                          "processes": processes, "dashboard_address": None})


def simulate_dataset_parallel(task_name: str, num_simulations: int, output: str | os.PathLike, seed: int = 0,
                              chunk_size: int = 1024, n_workers: int = 2, *, overwrite: bool = False,
                              processes: bool = True, address: str | None = None) -> dict[str, Any]:
    """Simulate ``num_simulations`` of built-in task ``task_name`` into ``output`` on Dask workers.

    Args:
        task_name: A built-in task (``sbi_core.simulators.available_tasks()``).
        num_simulations: Rows.
        output: Store path (every worker must be able to reach it).
        seed: Base seed (chunk ``i`` uses ``fold_in(PRNGKey(seed), i)``).
        chunk_size: Rows per chunk, the unit of work handed to workers.
        n_workers: Local Dask workers (and the number of chunk ranges).
        overwrite: Replace a complete store at ``output`` (swapped in only once complete).
        processes: Local workers are processes (True) or threads (False).
        address: Use the Dask scheduler at this address instead of starting a local cluster.

    Returns:
        ``store``, ``fingerprint``, ``n_samples``, ``task`` and, per worker range, ``workers``
        (chunks, rows, pid, host).
    """
    _check_arguments(num_simulations, chunk_size, n_workers)
    runner = dask_task_runner(n_workers, processes=processes, address=address)
    return simulate_dataset_parallel_flow.with_options(task_runner=runner)(
        task_name, num_simulations, os.fspath(output), seed=seed, chunk_size=chunk_size,
        n_workers=n_workers, overwrite=overwrite)
