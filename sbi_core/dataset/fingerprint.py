"""SHA-256 fingerprint of a store: canonical metadata plus array contents.

Arrays are hashed in a canonical dtype and byte order (floats as little-endian float64, masks as
uint8, indices as little-endian int64), row by row in row-major order, so the fingerprint does not
depend on chunking, compression, storage dtype width or store backend (directory or zip).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from sbi_core.dataset.manifest import canonical_json

FINGERPRINT_SCHEME = b"sbi-store-fingerprint/1\n"
# Rows read per step are bounded by bytes, not by the store's chunking.
_STEP_BYTES = 16 * 1024**2


def canonical_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype an array is hashed in."""
    if dtype == np.bool_:
        return np.dtype("u1")
    if np.issubdtype(dtype, np.integer):
        return np.dtype("<i8")
    return np.dtype("<f8")


def _row_steps(shape: tuple[int, ...]) -> Iterable[tuple[int, int]]:
    if not shape:
        yield 0, 0
        return
    row_bytes = 8 * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 8
    step = max(1, _STEP_BYTES // max(row_bytes, 1))
    for start in range(0, shape[0], step):
        yield start, min(shape[0], start + step)


def hash_array(h: Any, name: str, array: Any) -> None:
    """Feed one array (zarr or numpy) into the hash ``h``, streamed in row blocks."""
    dtype = canonical_dtype(np.dtype(array.dtype))
    h.update(f"{name}|{dtype.str}|{tuple(int(s) for s in array.shape)}\n".encode())
    for start, stop in _row_steps(tuple(array.shape)):
        block = np.asarray(array[start:stop]) if array.shape else np.asarray(array[...])
        h.update(np.ascontiguousarray(block.astype(dtype)).tobytes())


def store_fingerprint(
    manifest: Mapping[str, Any],
    arrays: Iterable[tuple[str, Any]],
    explicit_splits: Mapping[str, np.ndarray] | None,
) -> str:
    """Fingerprint of a store.

    Args:
        manifest: The normalised ``sbi_store`` attribute.
        arrays: ``(path, array)`` in canonical order: parameters, then per block (manifest order)
            values, uncertainties, mask, coordinates, whichever exist.
        explicit_splits: Validated sorted split indices, or None when the default rule applies.

    Returns:
        The 64-character lowercase hex digest.
    """
    h = hashlib.sha256()
    h.update(FINGERPRINT_SCHEME)
    h.update(canonical_json(manifest).encode("utf-8") + b"\n")
    for name, array in arrays:
        hash_array(h, name, array)
    if explicit_splits is None:
        h.update(b"splits|default|v1\n")
    else:
        for split in sorted(explicit_splits):
            hash_array(h, f"splits/{split}", np.asarray(explicit_splits[split], np.int64))
    return h.hexdigest()
