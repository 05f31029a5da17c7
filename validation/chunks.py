"""Missing chunk files: zarr silently reads a missing chunk as the array's fill value."""

from __future__ import annotations

import itertools

import numpy as np
import zarr
from zarr.core.sync import sync

from validation.report import FailureCollector


def check_chunks_present(array: zarr.Array, path: str, out: FailureCollector) -> bool:
    """Report every chunk of ``array`` with no stored object; return True when none is missing.

    A deleted chunk file would otherwise validate as a block of zeros (or whatever the fill
    value is). Boolean masks are exempt from the caller: an absent mask chunk means "all masked",
    which the content checks already flag. The store listing is one call; individual chunks are
    only probed when some are missing.
    """
    try:
        if array.nchunks_initialized >= array.nchunks:
            return True
        missing = [c for c in itertools.product(*(range(n) for n in array.cdata_shape))
                   if not _stored(array, c)]
    except Exception:  # noqa: BLE001 - an exotic layout (e.g. sharding): the reads still check it
        return True
    if not missing:
        return True
    rows = int((array.shards or array.chunks)[0])
    first = missing[0]
    samples = sorted({i for c in missing for i in range(c[0] * rows,
                                                        min((c[0] + 1) * rows, array.shape[0]))})
    out.add_indexed("chunk_missing", path,
                    f"{len(missing)} chunk file(s) missing (would read as fill value "
                    f"{array.fill_value})", np.asarray(samples, dtype=np.int64),
                    expected="every chunk stored",
                    found=f"chunk {array.metadata.encode_chunk_key(first)} absent",
                    index_kind="sample" if array.ndim == 2 else "element")
    return False


def _stored(array: zarr.Array, coords: tuple[int, ...]) -> bool:
    key = array.metadata.encode_chunk_key(coords)
    prefix = f"{array.path}/" if array.path else ""
    return bool(sync(array.store.exists(prefix + key)))
