"""Split index checks, streamed: in range, unique within a split, disjoint across splits."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import zarr

from validation.report import FailureCollector

_READ_ROWS = 1 << 20  # split arrays are read a million indices at a time


def check_split_indices(splits: Mapping[str, zarr.Array], n: int, out: FailureCollector) -> None:
    """Check every split array against ``n`` samples.

    Memory is one byte per sample (``owner``: which split claimed each sample) plus one read.
    """
    owner = np.zeros(n, dtype=np.uint8)
    names = list(splits)
    for code, name in enumerate(names, start=1):
        path = f"splits/{name}"
        array = splits[name]
        for start in range(0, array.shape[0], _READ_ROWS):
            try:
                idx = np.asarray(array[start:start + _READ_ROWS], dtype=np.int64)
            except Exception as exc:  # noqa: BLE001 - corrupted chunk
                out.add("chunk_read", path, f"elements {start}.. cannot be read "
                        f"({type(exc).__name__}: {exc})")
                break
            _check_chunk(idx, start, path, code, names, owner, out)


def _check_chunk(idx: np.ndarray, start: int, path: str, code: int, names: list[str],
                 owner: np.ndarray, out: FailureCollector) -> None:
    n = owner.shape[0]
    outside = (idx < 0) | (idx >= n)
    if outside.any():
        out.add_indexed("splits", path, "sample index out of range", idx[outside],
                        expected=f"0 <= index < {n}", found=str(idx[outside][0]))
    idx = idx[~outside]
    uniq, counts = np.unique(idx, return_counts=True)
    claimed = owner[uniq]
    repeated = uniq[(counts > 1) | (claimed == code)]
    if repeated.size:
        out.add_indexed("splits", path, "sample listed more than once in the split", repeated,
                        expected="unique indices", found=str(repeated[0]))
    for other in np.unique(claimed[(claimed != 0) & (claimed != code)]):
        shared = uniq[claimed == other]
        out.add_indexed("splits", path, f"sample also in split {names[other - 1]!r}", shared,
                        expected="disjoint splits", found=str(shared[0]))
    owner[uniq[claimed == 0]] = code
