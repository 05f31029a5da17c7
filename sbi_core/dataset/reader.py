"""Read-only access to a simulation store (format 1.0)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from jaxtyping import Float, Int

from sbi_core.batch import PosteriorBatch
from sbi_core.dataset.access import StoreArrays, load_arrays, open_group_readonly
from sbi_core.dataset.errors import StoreIncompleteError
from sbi_core.dataset.fingerprint import store_fingerprint
from sbi_core.dataset.layout import FORMAT_VERSION, PARAMETERS, SPLIT_NAMES, WRITER_ATTR, block_array_path
from sbi_core.dataset.manifest import parse_manifest
from sbi_core.dataset.rows import read_rows, row_nbytes
from sbi_core.dataset.schema import observation_schema_from_manifest, parameter_specs_from_manifest
from sbi_core.dataset.splits import check_explicit_splits, default_split_indices
from sbi_core.dataset.streaming import batches_from_rows, stream_batches
from sbi_core.observation import PreStackedObservations

DEFAULT_MEMORY_BUDGET_BYTES = 2 * 1024**3
# Blocks shuffled together when streaming ("a few chunks"); fewer when the budget is tight.
STREAM_WINDOW_BLOCKS = 4
SPLIT_CHOICES = (*SPLIT_NAMES, "all")


def open_store(path: str | os.PathLike, *, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES, dtype: Any = np.float32) -> SimulationStore:
    """Open a simulation store read-only (a Zarr v3 directory or a zip of one).

    Args:
        path: The store.
        memory_budget_bytes: A split is loaded into memory only when it needs at most this many
            bytes; otherwise ``iter_batches`` streams it.
        dtype: Float dtype of everything read (parameters, values, uncertainties).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StoreFormatError: the store does not follow format 1.0 (the message names the field).
        StoreIncompleteError: the store's writer has not finished (resume the simulation).
    """
    return SimulationStore(path, memory_budget_bytes=memory_budget_bytes, dtype=dtype)


class SimulationStore:
    """A read-only simulation store: metadata, splits, reads, batches and fingerprint.

    Reading never modifies the store: it is opened with a read-only Zarr store.
    """

    def __init__(self, path: str | os.PathLike, *, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES, dtype: Any = np.float32) -> None:
        if isinstance(memory_budget_bytes, bool) or not isinstance(memory_budget_bytes, int) or memory_budget_bytes < 0:
            raise ValueError(f"memory_budget_bytes: expected a non-negative integer, got {memory_budget_bytes!r}")
        if not np.issubdtype(np.dtype(dtype), np.floating):
            raise ValueError(f"dtype: expected a float dtype, got {dtype!r}")
        self.path = os.fspath(path)
        self.memory_budget_bytes = memory_budget_bytes
        self.dtype = np.dtype(dtype)
        self._group, self._backing = open_group_readonly(self.path)
        self._check_complete(dict(self._group.attrs))
        self.manifest: dict[str, Any] = parse_manifest(dict(self._group.attrs))
        self._arrays: StoreArrays = load_arrays(self._group, self.manifest)
        self._splits = None if self._arrays.splits is None else check_explicit_splits(self._arrays.splits, self.n_samples)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, PreStackedObservations]] = {}
        self._split_cache: dict[str, np.ndarray] = {}

    def _check_complete(self, attrs: dict[str, Any]) -> None:
        writer = attrs.get(WRITER_ATTR)
        if isinstance(writer, dict) and writer.get("complete") is False:
            raise StoreIncompleteError(
                f"{self.path!r}: the simulation writing this store has not finished "
                f"({WRITER_ATTR}.complete is false); re-run the same `sbi-ops simulate` command to resume it"
            )

    # -- metadata -------------------------------------------------------------------------
    @property
    def format_version(self) -> str:
        return FORMAT_VERSION

    @property
    def task_name(self) -> str:
        return self.manifest["task"]["name"]

    @property
    def task_version(self) -> str:
        return self.manifest["task"]["version"]

    @property
    def n_samples(self) -> int:
        return int(self.manifest["n_samples"])

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p["name"] for p in self.manifest["parameters"])

    @property
    def parameter_dim(self) -> int:
        return len(self.manifest["parameters"])

    @property
    def noise_model(self) -> dict[str, Any] | None:
        return self.manifest["noise_model"]

    @functools.cached_property
    def parameter_specs(self) -> tuple[Any, ...]:
        """``ParameterSpec`` per parameter (column order), priors rebuilt from the manifest."""
        return parameter_specs_from_manifest(self.manifest)

    @functools.cached_property
    def coordinates(self) -> dict[str, np.ndarray]:
        """``{block: (L,) coordinates}`` for blocks that store them."""
        return {n: np.asarray(k["coordinates"][...], np.float64) for n, k in self._arrays.blocks.items() if "coordinates" in k}

    @functools.cached_property
    def observation_schema(self) -> Any:
        """The ``ObservationSchema`` of the store's blocks (with stored coordinates)."""
        return observation_schema_from_manifest(self.manifest, self.coordinates)

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 (hex) over the canonical manifest and array contents; see docs/store-format.md."""
        return store_fingerprint(self.manifest, self._fingerprint_arrays(), self._splits)

    def _fingerprint_arrays(self) -> list[tuple[str, Any]]:
        arrays: list[tuple[str, Any]] = [(PARAMETERS, self._arrays.parameters)]
        for name, kinds in self._arrays.blocks.items():
            arrays += [(block_array_path(name, k), kinds[k]) for k in ("values", "uncertainties", "mask", "coordinates") if k in kinds]
        return arrays

    @property
    def has_explicit_splits(self) -> bool:
        """True when the store carries ``splits/*`` arrays."""
        return self._splits is not None

    # -- splits and reads -------------------------------------------------------------------
    def split_indices(self, split: str) -> Int[np.ndarray, " M"]:
        """Sorted int64 indices of ``split`` ("train", "validation", "test" or "all")."""
        _check_split(split)
        if split not in self._split_cache:
            if split == "all":
                idx = np.arange(self.n_samples, dtype=np.int64)
            elif self._splits is not None:
                idx = self._splits[split]
            else:
                idx = default_split_indices(self.n_samples, split)
            self._split_cache[split] = idx
        return self._split_cache[split].copy()

    def read(self, split: str | np.ndarray = "all") -> tuple[Float[np.ndarray, "n P"], PreStackedObservations]:
        """Read a split (or explicit indices, in the given order) into memory."""
        if isinstance(split, str):
            idx = self.split_indices(split)
            return read_rows(self._arrays, slice(None) if split == "all" else idx, self.dtype)
        idx = self._checked_indices(split)
        unique, inverse = np.unique(idx, return_inverse=True)
        params, obs = read_rows(self._arrays, unique, self.dtype)
        return params[inverse], obs[inverse]

    def _checked_indices(self, indices: Any) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"read: expected a split name or a 1-D integer index array, got {idx.dtype} {idx.shape}")
        bad = (idx < 0) | (idx >= self.n_samples)
        if bad.any():
            raise IndexError(f"read: index {int(idx[bad][0])} out of range [0, {self.n_samples})")
        return idx.astype(np.int64)

    def split_nbytes(self, split: str) -> int:
        """Bytes the split occupies in memory once read."""
        return len(self.split_indices(split)) * row_nbytes(self._arrays, self.dtype)

    def fits_in_memory(self, split: str) -> bool:
        """Whether the split fits ``memory_budget_bytes``."""
        return self.split_nbytes(split) <= self.memory_budget_bytes

    # -- iteration --------------------------------------------------------------------------
    @functools.cached_property
    def read_block_rows(self) -> int:
        """Rows per read block: the largest sample-axis chunk of any array (whole chunks only)."""
        arrays = [self._arrays.parameters] + [a for k in self._arrays.blocks.values() for n, a in k.items() if n != "coordinates"]
        return max(int(a.chunks[0]) for a in arrays)

    def _read_blocks(self, split: str) -> list[tuple[int, int]]:
        idx, step = self.split_indices(split), self.read_block_rows
        starts = np.unique(idx // step) * step
        return [(int(s), int(min(s + step, self.n_samples))) for s in starts]

    def _read_block(self, split: str, split_idx: np.ndarray, start: int, stop: int) -> tuple | None:
        lo, hi = np.searchsorted(split_idx, [start, stop])
        if lo == hi:
            return None
        idx = split_idx[lo:hi]
        params, obs = read_rows(self._arrays, slice(start, stop), self.dtype)
        if hi - lo < stop - start:
            params, obs = params[idx - start], obs[idx - start]
        return idx, params, obs

    def iter_chunks(self, split: str = "all") -> Iterator[tuple[np.ndarray, np.ndarray, PreStackedObservations]]:
        """Yield ``(indices, parameters, observations)`` per read block, in stored order."""
        split_idx = self.split_indices(split)
        for start, stop in self._read_blocks(split):
            rows = self._read_block(split, split_idx, start, stop)
            if rows is not None:
                yield rows

    def iter_batches(self, split: str = "train", batch_size: int = 256, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> Iterator[PosteriorBatch]:
        """Yield :class:`PosteriorBatch` es of ``split``.

        In memory (one read, cached) when the split fits ``memory_budget_bytes``; otherwise
        streamed with block-level shuffling (see :mod:`sbi_core.dataset.streaming`).
        ``metadata["indices"]`` holds the store row of each sample.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"iter_batches: batch_size must be a positive integer, got {batch_size!r}")
        rng = np.random.default_rng(seed) if shuffle else None
        if self.fits_in_memory(split):
            return batches_from_rows(self._in_memory(split), int(batch_size), rng, drop_last, split)
        split_idx = self.split_indices(split)
        # A window costs ~3 copies of its blocks at peak (reads, concatenation, shuffled copy).
        block_bytes = self.read_block_rows * row_nbytes(self._arrays, self.dtype)
        window = int(max(1, min(STREAM_WINDOW_BLOCKS, self.memory_budget_bytes // max(3 * block_bytes, 1))))
        reader = functools.partial(self._read_block, split, split_idx)
        return stream_batches(self._read_blocks(split), reader, int(batch_size), window, rng, drop_last, split)

    def _in_memory(self, split: str) -> tuple[np.ndarray, np.ndarray, PreStackedObservations]:
        if split not in self._cache:
            nbytes = self.split_nbytes(split)
            # Keep cached splits within the budget together: evict the others first.
            if sum(self.split_nbytes(s) for s in self._cache) + nbytes > self.memory_budget_bytes:
                self._cache.clear()
            idx = self.split_indices(split)
            self._cache[split] = (idx, *self.read(split))
        return self._cache[split]

    def close(self) -> None:
        """Drop cached data and close a zip store."""
        self._cache.clear()
        close = getattr(self._backing, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> SimulationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SimulationStore({self.path!r}, task={self.task_name}@{self.task_version}, n_samples={self.n_samples}, parameters={self.parameter_dim})"


def _check_split(split: Any) -> None:
    if split not in SPLIT_CHOICES:
        raise ValueError(f"split: {split!r}, expected one of {list(SPLIT_CHOICES)}")
