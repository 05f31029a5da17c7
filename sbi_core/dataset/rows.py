"""Reading rows of a store into numpy: parameters plus stacked observation blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from sbi_core.dataset.access import StoreArrays
from sbi_core.observation import PreStackedObservations


def _take(array: Any, selection: slice | np.ndarray) -> np.ndarray:
    """Rows of a zarr array: one contiguous read for a slice, chunk-wise for an index array."""
    if isinstance(selection, slice):
        return np.asarray(array[selection])
    return np.asarray(array.oindex[(selection,) + (slice(None),) * (array.ndim - 1)])


def read_rows(arrays: StoreArrays, selection: slice | np.ndarray, dtype: Any) -> tuple[np.ndarray, PreStackedObservations]:
    """Read parameters and blocks at ``selection`` (a slice or sorted unique indices).

    Masked elements come back as value 0 and uncertainty 1, so no NaN written into an invalid
    element can reach a network or a gradient.
    """
    params = _take(arrays.parameters, selection).astype(dtype)
    values, unc, masks = {}, {}, {}
    for name, kinds in arrays.blocks.items():
        values[name] = _take(kinds["values"], selection).astype(dtype)
        if "uncertainties" in kinds:
            unc[name] = _take(kinds["uncertainties"], selection).astype(dtype)
        if "mask" in kinds:
            mask = _take(kinds["mask"], selection).astype(bool)
            masks[name] = mask
            values[name] = np.where(mask, values[name], 0).astype(dtype)
            if name in unc:
                unc[name] = np.where(mask, unc[name], 1).astype(dtype)
    return params, PreStackedObservations(values=values, uncertainties=unc, masks=masks)


def row_nbytes(arrays: StoreArrays, dtype: Any) -> int:
    """Bytes one row occupies in memory once read (parameters + every block array)."""
    item = np.dtype(dtype).itemsize
    total = arrays.parameters.shape[1] * item
    for kinds in arrays.blocks.values():
        length = kinds["values"].shape[1]
        total += length * item * (1 + ("uncertainties" in kinds)) + length * ("mask" in kinds)
    return int(total)


def concat_rows(pieces: Sequence[tuple[np.ndarray, np.ndarray, PreStackedObservations]]) -> tuple[np.ndarray, np.ndarray, PreStackedObservations]:
    """Concatenate ``(indices, parameters, observations)`` pieces along the batch axis."""
    if len(pieces) == 1:
        return pieces[0]
    idx = np.concatenate([p[0] for p in pieces])
    params = np.concatenate([p[1] for p in pieces])
    obs = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *[p[2] for p in pieces])
    return idx, params, obs


def take_rows(rows: tuple[np.ndarray, np.ndarray, PreStackedObservations], index: Any) -> tuple[np.ndarray, np.ndarray, PreStackedObservations]:
    """Index an in-memory ``(indices, parameters, observations)`` triple along the batch axis."""
    idx, params, obs = rows
    return idx[index], params[index], obs[index]
