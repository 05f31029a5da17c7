"""Writing a format 1.0 store chunk by chunk, resumable, never destroying data on bad input.

Rules:
- Inputs are validated before anything on disk is touched.
- ``<store>.lock`` keeps two writers apart.
- Every chunk along the sample axis is written, then marked done in ``_sbi_writer_progress``;
  ``sbi_writer.complete`` turns true only once all chunks are done, and readers refuse a store
  that is not complete.
- Overwriting builds the new store beside the old one (``<store>.overwrite-partial``) and swaps
  it in only when it is complete: an interrupted overwrite leaves the old store intact.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from sbi_core.dataset.errors import StoreIncompleteError
from sbi_core.dataset.layout import MANIFEST_ATTR, PARAMETERS, PROGRESS_ARRAY, WRITER_ATTR, block_array_path, split_array_path
from sbi_core.dataset.locking import WriterLock
from sbi_core.dataset.splits import check_explicit_splits
from sbi_core.fsutil import replace_directory


def staging_path(path: str) -> str:
    """Where an overwrite builds the new store before swapping it in."""
    return path.rstrip("/\\") + ".overwrite-partial"


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


class StoreWriter:
    """Fills a store chunk by chunk. Obtain one from :func:`create_store`; use as a context manager."""

    def __init__(self, path: str, final_path: str, lock: WriterLock | None, *, attached: bool = False) -> None:
        self.path, self.final_path, self._lock = path, final_path, lock
        #: True for a chunk writer obtained with :meth:`attach` (no lock; cannot finalize).
        self.attached = attached
        self._group = zarr.open_group(path, mode="r+", zarr_format=3)
        attrs = dict(self._group.attrs)
        self.manifest: dict[str, Any] = attrs[MANIFEST_ATTR]
        self.writer_attrs: dict[str, Any] = attrs[WRITER_ATTR]
        self.n_samples = int(self.manifest["n_samples"])
        self.chunk_size = int(self.writer_attrs["chunk_size"])
        self.n_chunks = -(-self.n_samples // self.chunk_size)
        self.mask_blocks = tuple(self.writer_attrs.get("mask_blocks", ()))

    @classmethod
    def attach(cls, path: str | os.PathLike) -> StoreWriter:
        """A chunk writer for an unfinished store whose coordinator (another process) holds the lock.

        Scale-out: the coordinator calls :func:`create_store` (taking ``<store>.lock``) and hands
        ``writer.path`` to workers, which ``attach`` and write *disjoint* chunks with
        :meth:`write_chunk`. Zarr writes to disjoint chunks (and the per-chunk progress entries,
        one Zarr chunk each) never touch the same file, so workers need no lock of their own.
        Only the coordinator may :meth:`finalize`.

        Raises:
            StoreIncompleteError: ``path`` holds no unfinished store (absent, foreign or complete).
        """
        path = os.path.normpath(os.fspath(path))
        try:
            group = zarr.open_group(path, mode="r", zarr_format=3)
            attrs = dict(group.attrs)
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise StoreIncompleteError(f"{path!r}: no unfinished simulation store to attach to ({err})") from None
        if MANIFEST_ATTR not in attrs or attrs.get(WRITER_ATTR, {}).get("complete", True) or PROGRESS_ARRAY not in group:
            raise StoreIncompleteError(f"{path!r}: not an unfinished simulation store (attach only to a store its coordinator is still writing)")
        return cls(path, path, None, attached=True)

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of chunk ``index``."""
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk index {index} out of range [0, {self.n_chunks})")
        return index * self.chunk_size, min(self.n_samples, (index + 1) * self.chunk_size)

    def completed_chunks(self) -> np.ndarray:
        """Bool ``(n_chunks,)``: which chunks are already written."""
        return np.asarray(self._group[PROGRESS_ARRAY][...]).astype(bool)

    def pending_chunks(self) -> list[int]:
        """Indices of chunks still to write."""
        return [int(i) for i in np.flatnonzero(~self.completed_chunks())]

    def write_chunk(self, index: int, parameters: np.ndarray, blocks: Mapping[str, Mapping[str, Any]]) -> None:
        """Write chunk ``index`` (all of its rows), then mark it done.

        Args:
            index: Chunk number; rows ``chunk_bounds(index)``.
            parameters: ``(n, P)`` physical-unit parameters.
            blocks: ``{block: {"values": (n, L), "uncertainties": (n, L), "mask": (n, L)}}`` with
                uncertainties iff the block has them and a mask iff the block was created with one.

        Raises:
            ValueError: naming the block/array whose shape or presence is wrong (nothing written).
        """
        start, stop = self.chunk_bounds(index)
        arrays = self._checked_chunk(stop - start, parameters, blocks)
        for path, data in arrays.items():
            self._group[path][start:stop] = data
        # Marked only after the data, so a crash in between just redoes this chunk.
        self._group[PROGRESS_ARRAY][index] = 1

    def _checked_chunk(self, n: int, parameters: Any, blocks: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
        out = {PARAMETERS: _shaped(parameters, (n, len(self.manifest["parameters"])), PARAMETERS)}
        names = [b["name"] for b in self.manifest["blocks"]]
        if set(blocks) != set(names):
            raise ValueError(f"write_chunk: blocks {sorted(blocks)}, expected exactly {sorted(names)}")
        for b in self.manifest["blocks"]:
            given, name = blocks[b["name"]], b["name"]
            expected = {"values"} | ({"uncertainties"} if b["has_uncertainties"] else set()) | ({"mask"} if name in self.mask_blocks else set())
            found = {k for k, v in given.items() if v is not None}
            if found != expected:
                raise ValueError(f"write_chunk: block {name!r} has arrays {sorted(found)}, expected {sorted(expected)}")
            for kind in expected:
                out[block_array_path(name, kind)] = _shaped(given[kind], (n, b["length"]), block_array_path(name, kind), kind == "mask")
        return out

    def write_splits(self, splits: Mapping[str, Sequence[int] | np.ndarray]) -> None:
        """Write explicit ``splits/<name>`` index arrays (validated: in range, unique, disjoint)."""
        unknown = set(splits) - {"train", "validation", "test"}
        if unknown:
            raise ValueError(f"write_splits: unknown split(s) {sorted(unknown)}; expected train, validation, test")
        checked = check_explicit_splits({k: np.asarray(v) for k, v in splits.items()}, self.n_samples)
        for name in splits:
            self._group.create_array(split_array_path(name), data=checked[name], dimension_names=("split_sample",), overwrite=True)

    def finalize(self) -> Any:
        """Mark the store complete (swapping it in for an overwritten one) and open it for reading.

        Raises:
            StoreIncompleteError: listing chunks that were never written.
        """
        if self.attached:
            raise RuntimeError(f"{self.path!r}: an attached chunk writer cannot finalize; the coordinator that created the store does")
        pending = self.pending_chunks()
        if pending:
            raise StoreIncompleteError(f"{self.path!r}: chunks {pending[:10]}{'...' if len(pending) > 10 else ''} not written ({len(pending)} of {self.n_chunks})")
        self._group.attrs[WRITER_ATTR] = {**self.writer_attrs, "complete": True}
        del self._group[PROGRESS_ARRAY]
        if self.path != self.final_path:
            _swap_in(self.path, self.final_path)
        self.close()
        from sbi_core.dataset.reader import open_store

        return open_store(self.final_path)

    def close(self) -> None:
        """Release the lock (an unfinished store stays on disk, resumable)."""
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shaped(data: Any, shape: tuple[int, int], what: str, boolean: bool = False) -> np.ndarray:
    arr = np.asarray(data)
    if arr.shape != shape:
        raise ValueError(f"write_chunk: {what} has shape {arr.shape}, expected {shape}")
    if boolean and arr.dtype != np.bool_:
        raise ValueError(f"write_chunk: {what} has dtype {arr.dtype}, expected bool")
    return arr


def replaced_path(final: str) -> str:
    """Where an overwrite moves the old store before deleting it (``<store>.replaced-<pid>``)."""
    return f"{final.rstrip('/')}.replaced-{os.getpid()}"


def remove_replaced_debris(final: str) -> None:
    """Delete old stores an earlier, killed overwrite moved aside but did not finish deleting.

    Call only while holding the writer lock of ``final``.
    """
    prefix = f"{os.path.basename(final.rstrip('/'))}.replaced-"
    parent = os.path.dirname(os.path.abspath(final))
    for name in os.listdir(parent):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _swap_in(staging: str, final: str) -> None:
    """Replace ``final`` by the complete ``staging`` store; the old store is removed last.

    The swap is one atomic exchange where the platform allows (see :mod:`sbi_core.fsutil`), so a
    process killed at any point leaves a complete store, old or new, at ``final``.
    """
    old = replaced_path(final)
    replace_directory(staging, final, old)
    shutil.rmtree(old)
