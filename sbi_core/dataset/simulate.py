"""``simulate_to_store``: run a task's simulator into a store, chunk by chunk, resumably.

Chunk ``i`` is simulated from ``fold_in(PRNGKey(seed), i)`` and always at full ``chunk_size``
(the last chunk is trimmed), so a chunk's content depends only on (task, seed, chunk_size, i):
a resumed run writes exactly what an uninterrupted one would have written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from sbi_core.dataset.create import create_store
from sbi_core.dataset.writer import _positive_int

GENERATOR = "sbi_core.dataset.simulate_to_store/1"


def chunk_key(seed: int, index: Any) -> jax.Array:
    """PRNG key of chunk ``index``: independent of where a run was resumed."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), index)


def chunk_simulator(task: Any, chunk_size: int, seed: int) -> Callable[[int], tuple[Any, Any]]:
    """A jitted ``chunk index -> (theta (C, P), simulate output)`` for one full chunk.

    The key derivation lives inside the compiled function: one compilation per run instead of
    one per eager PRNG operation (compilation dominates small runs on a busy CPU).
    """

    def run(index):
        k_prior, k_sim = jax.random.split(chunk_key(seed, index))
        theta = task.sample_prior(k_prior, chunk_size)
        return theta, task.simulate(k_sim, theta)

    compiled = jax.jit(run)
    return lambda index: compiled(np.uint32(index))


def _trim(theta: Any, output: Any, n: int) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    blocks = {b: {k: np.asarray(v)[:n] for k, v in arrays.items() if v is not None} for b, arrays in output.items()}
    return np.asarray(theta)[:n], blocks


def create_simulation_store(
    task: Any,
    num_simulations: int,
    path: str | os.PathLike,
    *,
    seed: int = 0,
    chunk_size: int = 1024,
    overwrite: bool = False,
    dtype: Any = np.float32,
) -> Any:
    """Validate the arguments and create (or resume) the store ``simulate_to_store`` fills.

    The returned :class:`~sbi_core.dataset.StoreWriter` holds the writer lock; fill its
    ``pending_chunks()`` with :func:`simulate_chunks` (here or, after ``StoreWriter.attach``, in
    other processes) and then ``finalize()`` it. Arguments as in :func:`simulate_to_store`.
    """
    num_simulations = _positive_int(num_simulations, "num_simulations")
    chunk_size = _positive_int(chunk_size, "chunk_size")
    # PRNGKey keeps only 32 bits of the seed without x64: larger seeds would silently collide.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed: expected an integer in [0, 2**32), got {seed!r}")
    info = {"generator": GENERATOR, "seed": int(seed), "task_fingerprint": task.fingerprint()}
    return create_store(path, task_payload=task.to_payload(), n_samples=num_simulations, chunk_size=chunk_size, overwrite=overwrite, resume=True, dtype=dtype, writer_info=info)


def simulate_chunks(task: Any, writer: Any, indices: Iterable[int], *, progress: Any = None) -> int:
    """Simulate and write chunks ``indices`` of ``writer``'s store; returns the rows written.

    The seed and chunk size are read from the store (``sbi_writer``), so a worker that attached
    to the store writes exactly what a serial :func:`simulate_to_store` would have written.

    Args:
        task: The store's task (its fingerprint must match the one recorded at creation).
        writer: A ``StoreWriter`` (the coordinator's, or one from ``StoreWriter.attach``).
        indices: Chunk numbers to write.
        progress: Optional object with ``update(rows)`` (a tqdm bar).

    Raises:
        ValueError: the store was not made by ``simulate_to_store`` for this task.
    """
    info = writer.writer_attrs.get("writer_info", {})
    if info.get("generator") != GENERATOR or info.get("task_fingerprint") != task.fingerprint():
        raise ValueError(f"{writer.path!r}: sbi_writer.writer_info {info!r} was not written by {GENERATOR} for task {getattr(task, 'name', task)!r}")
    simulate = chunk_simulator(task, writer.chunk_size, int(info["seed"]))
    rows = 0
    for index in indices:
        start, stop = writer.chunk_bounds(index)
        theta, blocks = _trim(*simulate(index), stop - start)
        writer.write_chunk(index, theta, blocks)
        rows += stop - start
        if progress is not None:
            progress.update(stop - start)
    return rows


def simulate_to_store(
    task: Any,
    num_simulations: int,
    path: str | os.PathLike,
    *,
    seed: int = 0,
    chunk_size: int = 1024,
    overwrite: bool = False,
    progress: bool = True,
    dtype: Any = np.float32,
) -> Any:
    """Simulate ``num_simulations`` (theta, x) pairs of ``task`` into a store at ``path``.

    Re-running with the same arguments on an interrupted store resumes it (finished chunks are
    kept); a complete store at ``path`` is an error unless ``overwrite``.

    Args:
        task: An ``SBITask`` (``sample_prior``, ``simulate``, ``to_payload``, ``fingerprint``).
        num_simulations: Rows to simulate.
        path: Directory store to write.
        seed: Base seed; chunk ``i`` uses ``fold_in(PRNGKey(seed), i)``.
        chunk_size: Rows per chunk (and per Zarr chunk).
        overwrite: Replace an existing store (only once the new one is complete).
        progress: Show a tqdm progress bar.
        dtype: Storage float dtype.

    Returns:
        The finished store, opened read-only.
    """
    writer = create_simulation_store(task, num_simulations, path, seed=seed, chunk_size=chunk_size, overwrite=overwrite, dtype=dtype)
    with writer:
        pending = writer.pending_chunks()
        bar = _progress_bar(progress, writer, pending)
        simulate_chunks(task, writer, pending, progress=bar)
        bar.close()
        return writer.finalize()


def _progress_bar(enabled: bool, writer: Any, pending: list[int]) -> Any:
    from tqdm.auto import tqdm

    done = writer.n_samples - sum(writer.chunk_bounds(i)[1] - writer.chunk_bounds(i)[0] for i in pending)
    return tqdm(total=writer.n_samples, initial=done, unit="sim", desc="simulating", disable=not enabled, dynamic_ncols=True)
