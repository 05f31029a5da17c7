"""Train / validation / test splits of a store.

Without explicit ``splits/*`` arrays, sample ``i`` is assigned by an integer hash of ``i`` (and a
fixed seed): the assignment of a sample never depends on how many samples the store has, on
chunking, or on numpy's random generator, so it is stable across versions and resumed runs.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Int

from sbi_core.dataset.errors import StoreFormatError
from sbi_core.dataset.layout import SPLIT_NAMES

DEFAULT_SPLIT_SEED = 0
# Cumulative fractions: train [0, 0.8), validation [0.8, 0.9), test [0.9, 1.0).
DEFAULT_SPLIT_FRACTIONS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}

_MASK64 = (1 << 64) - 1


def splitmix64(x: Int[np.ndarray, " N"]) -> Int[np.ndarray, " N"]:
    """The SplitMix64 finaliser, vectorised over uint64 (wrap-around arithmetic is intended)."""
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def default_split_codes(indices: Int[np.ndarray, " N"], seed: int = DEFAULT_SPLIT_SEED) -> Int[np.ndarray, " N"]:
    """Split code per sample index: 0 = train, 1 = validation, 2 = test.

    ``u = (splitmix64(i XOR splitmix64(seed)) >> 11) / 2**53`` is uniform on [0, 1); the code is
    0 when ``u < 0.8``, 1 when ``u < 0.9``, else 2.
    """
    salt = splitmix64(np.array([seed & _MASK64], dtype=np.uint64))[0]
    h = splitmix64(np.asarray(indices, dtype=np.uint64) ^ salt)
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.searchsorted(np.array([0.8, 0.9]), u, side="right").astype(np.int8)


def default_split_indices(n_samples: int, split: str, seed: int = DEFAULT_SPLIT_SEED) -> Int[np.ndarray, " M"]:
    """Sorted indices of ``split`` among ``range(n_samples)`` under the default rule."""
    code = SPLIT_NAMES.index(split)
    idx = np.arange(n_samples, dtype=np.int64)
    return idx[default_split_codes(idx, seed) == code]


def check_explicit_splits(splits: dict[str, np.ndarray], n_samples: int) -> dict[str, np.ndarray]:
    """Validate explicit split arrays (1-D integers, in range, unique, disjoint); return them sorted.

    Splits that are absent from a store that has a ``splits`` group are empty.

    Raises:
        StoreFormatError: naming the split array and the offending index.
    """
    out, owner = {}, {}
    for name in SPLIT_NAMES:
        arr = np.asarray(splits.get(name, np.zeros(0, np.int64)))
        where = f"splits/{name}"
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise StoreFormatError(f"{where}: expected a 1-D integer array, got dtype {arr.dtype} shape {arr.shape}")
        arr = arr.astype(np.int64)
        bad = (arr < 0) | (arr >= n_samples)
        if bad.any():
            raise StoreFormatError(f"{where}: index {int(arr[bad][0])} out of range [0, {n_samples})")
        arr = np.sort(arr)
        if arr.size > 1 and np.any(arr[1:] == arr[:-1]):
            raise StoreFormatError(f"{where}: index {int(arr[1:][arr[1:] == arr[:-1]][0])} listed twice")
        for other, other_idx in owner.items():
            common = np.intersect1d(arr, other_idx)
            if common.size:
                raise StoreFormatError(f"{where}: index {int(common[0])} is also in splits/{other}; splits must be disjoint")
        owner[name] = arr
        out[name] = arr
    return out
