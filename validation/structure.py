"""Structure checks: arrays present, shaped, typed and chunked as the manifest declares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from validation.access import get_member, list_member_paths
from validation.chunks import check_chunks_present
from validation.manifest import BlockEntry, Manifest, ParameterEntry
from validation.report import FailureCollector

SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")
BLOCK_ARRAYS: tuple[str, ...] = ("values", "uncertainties", "coordinates", "mask")
# A chunk holding fewer samples than this makes every training batch touch many tiny files.
MIN_CHUNK_SAMPLES = 32
# A chunk larger than this cannot be streamed in bounded memory.
MAX_CHUNK_BYTES = 512 * 1024**2


@dataclass
class BlockArrays:
    """The arrays of one block that passed the structure checks (None when absent/broken)."""

    entry: BlockEntry
    values: zarr.Array
    uncertainties: zarr.Array | None = None
    mask: zarr.Array | None = None


@dataclass
class StoreArrays:
    """Everything the content and statistics checks may read."""

    n_samples: int
    parameters: zarr.Array | None
    parameter_entries: list[ParameterEntry]
    blocks: list[BlockArrays] = field(default_factory=list)
    splits: dict[str, zarr.Array] = field(default_factory=dict)


def check_structure(group: zarr.Group, manifest: Manifest, out: FailureCollector) -> StoreArrays:
    """Run every structure check; return the arrays that are safe to read for content."""
    n = manifest.n_samples if manifest.n_samples is not None else -1
    found = StoreArrays(n_samples=n, parameters=None, parameter_entries=manifest.parameters)
    dim = len(manifest.parameters) if manifest.complete else None
    found.parameters = _checked_array(group, "parameters", (n, dim), "float", out,
                                      required=True, itemsizes=(4, 8))
    for block in manifest.blocks:
        arrays = _check_block(group, block, n, out)
        if arrays is not None:
            found.blocks.append(arrays)
    _check_unexpected_members(group, manifest, out)
    found.splits = _check_splits(group, n, out)
    return found


def _checked_array(group: zarr.Group, path: str, shape: tuple[int | None, ...], kind: str,
                   out: FailureCollector, *, required: bool,
                   itemsizes: tuple[int, ...] | None = None) -> zarr.Array | None:
    """Fetch ``path`` and check it is an array of ``shape`` (None = any) and dtype ``kind``."""
    try:
        array = get_member(group, path)
    except Exception as exc:  # noqa: BLE001 - corrupt zarr.json of this array
        out.add("store_readable", path, f"array metadata unreadable ({type(exc).__name__}: "
                f"{exc})", expected="valid Zarr v3 array metadata")
        return None
    if array is None:
        if required:
            out.add("array_missing", path, "required array is missing", expected="present",
                    found="absent")
        return None
    if not isinstance(array, zarr.Array):
        out.add("array_missing", path, "is a group, not an array", expected="array",
                found="group")
        return None
    ok = _check_dtype(array, path, kind, itemsizes, out) and _check_shape(array, path, shape, out)
    if ok and array.ndim == 2:
        _check_chunks(array, path, out)
    if ok and kind != "bool":
        ok = check_chunks_present(array, path, out)
    return array if ok else None


_KIND_NAMES = {"float": ("f",), "bool": ("b",), "int": ("i", "u")}


def _check_dtype(array: zarr.Array, path: str, kind: str, itemsizes: tuple[int, ...] | None,
                 out: FailureCollector) -> bool:
    dtype = np.dtype(array.dtype)
    if dtype.kind in _KIND_NAMES[kind] and (itemsizes is None or dtype.itemsize in itemsizes):
        return True
    expected = {"float": "float32 or float64", "bool": "bool", "int": "int64"}[kind]
    out.add("array_dtype", path, f"wrong dtype {dtype}", expected=expected, found=str(dtype))
    return False


def _check_shape(array: zarr.Array, path: str, shape: tuple[int | None, ...],
                 out: FailureCollector) -> bool:
    found = tuple(array.shape)
    if len(found) != len(shape):
        out.add("array_shape", path, f"has {len(found)} dimension(s), shape {found}",
                expected=f"{len(shape)}-D {_shape_text(shape)}", found=str(found))
        return False
    ok = True
    for axis, (want, got) in enumerate(zip(shape, found)):
        if want is None or want < 0 or want == got:
            continue
        check = "n_samples" if axis == 0 and len(shape) == 2 else "array_shape"
        what = "sample axis (n_samples)" if check == "n_samples" else f"axis {axis}"
        out.add(check, path, f"{what} has length {got} but the manifest declares {want}",
                expected=_shape_text(shape), found=str(found))
        ok = False
    return ok


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if s is None or s < 0 else str(s) for s in shape) + ")"


def _check_chunks(array: zarr.Array, path: str, out: FailureCollector) -> None:
    """Warn about layouts that make sample-batched reads slow or memory-hungry."""
    chunks = tuple(array.shards or array.chunks)
    n, width = array.shape
    nbytes = int(np.prod(chunks)) * np.dtype(array.dtype).itemsize
    if chunks[1] < width:
        out.add("chunk_layout", path, f"chunks {chunks} split the feature axis (length {width}): "
                f"reading one sample touches {-(-width // chunks[1])} chunks",
                expected=f"chunks (k, {width}): along the sample axis only", found=str(chunks))
    if chunks[0] < min(n, MIN_CHUNK_SAMPLES):
        out.add("chunk_layout", path, f"chunks of {chunks[0]} sample(s) are too small: a "
                f"training batch reads many tiny chunks",
                expected=f">= {MIN_CHUNK_SAMPLES} samples per chunk", found=str(chunks))
    if nbytes > MAX_CHUNK_BYTES:
        out.add("chunk_layout", path, f"one chunk holds {nbytes / 1024**2:.0f} MiB: too large "
                "to stream in bounded memory",
                expected=f"<= {MAX_CHUNK_BYTES // 1024**2} MiB per chunk", found=str(chunks))


def _check_block(group: zarr.Group, block: BlockEntry, n: int,
                 out: FailureCollector) -> BlockArrays | None:
    base = f"blocks/{block.name}"
    values = _checked_array(group, f"{base}/values", (n, block.length), "float", out,
                            required=True)
    unc = _checked_array(group, f"{base}/uncertainties", (n, block.length), "float", out,
                         required=block.has_uncertainties)
    _check_uncertainty_declaration(group, block, base, out)
    mask = _checked_array(group, f"{base}/mask", (n, block.length), "bool", out, required=False)
    coords = _checked_array(group, f"{base}/coordinates", (block.length,), "float", out,
                            required=False)
    if coords is not None:
        _check_coordinates(coords, f"{base}/coordinates", out)
    if values is None:
        return None
    return BlockArrays(block, values, unc if block.has_uncertainties else None, mask)


def _check_uncertainty_declaration(group: zarr.Group, block: BlockEntry, base: str,
                                   out: FailureCollector) -> None:
    try:
        present = get_member(group, f"{base}/uncertainties") is not None
    except Exception:  # noqa: BLE001 - already reported as unreadable metadata
        return
    if present and not block.has_uncertainties:
        out.add("uncertainties_declared", f"{base}/uncertainties",
                "array present but the manifest declares has_uncertainties=false",
                expected="absent (or has_uncertainties=true)", found="present")


def _check_coordinates(coords: zarr.Array, path: str, out: FailureCollector) -> None:
    try:
        values = np.asarray(coords[...], dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - corrupted chunk
        out.add("chunk_read", path, f"cannot be read ({type(exc).__name__}: {exc})")
        return
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        out.add_indexed("coordinates", path, "non-finite coordinate", bad,
                        expected="finite values", found=str(values[bad[0]]), index_kind="feature")
        return
    steps = np.flatnonzero(np.diff(values) <= 0) + 1
    out.add_indexed("coordinates", path, "coordinates not strictly increasing", steps,
                    expected="strictly increasing",
                    found=f"{values[steps[0] - 1]} then {values[steps[0]]}" if steps.size else "",
                    index_kind="feature")


def _check_unexpected_members(group: zarr.Group, manifest: Manifest,
                              out: FailureCollector) -> None:
    paths = list_member_paths(group)
    if paths is None:
        return
    declared = {b.name for b in manifest.blocks}
    known = {"parameters", "blocks", "splits"} | {f"splits/{s}" for s in SPLIT_NAMES}
    for path in sorted(set(paths) - known):
        parts = path.split("/")
        if parts[0] == "splits" and len(parts) == 2:
            out.add("split_unknown", path, "unknown split name",
                    expected=f"one of {list(SPLIT_NAMES)}", found=parts[1])
        elif parts[0] != "blocks":
            out.add("array_unknown", path, "member not part of store format 1.0")
        elif parts[1] not in declared:
            # Only the block group is reported; an incomplete manifest may simply have lost it.
            if len(parts) == 2 and manifest.complete:
                out.add("array_unexpected", path, "block is not declared in the manifest",
                        expected=f"one of {sorted(declared)}", found=parts[1])
        elif len(parts) > 3 or (len(parts) == 3 and parts[2] not in BLOCK_ARRAYS):
            out.add("array_unknown", path, "member not part of store format 1.0")


def _check_splits(group: zarr.Group, n: int, out: FailureCollector) -> dict[str, Any]:
    splits = {}
    for name in SPLIT_NAMES:
        array = _checked_array(group, f"splits/{name}", (None,), "int", out, required=False)
        if array is not None:
            splits[name] = array
    if splits and n > 0:
        from validation.splits import check_split_indices

        check_split_indices(splits, n, out)
    return splits
