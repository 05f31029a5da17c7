"""Open a store read-only and check its arrays against the manifest (structure, not contents).

Content checks (finite values, positive uncertainties) belong to ``validation/``; reading the
whole store here would make every open as slow as a validation run.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore, ZipStore

from sbi_core.dataset.errors import StoreFormatError
from sbi_core.dataset.layout import PARAMETERS, SPLIT_NAMES, SPLITS_GROUP, block_array_path, split_array_path


def open_group_readonly(path: str | os.PathLike) -> tuple[zarr.Group, Any]:
    """Open a directory or zip store read-only; return ``(root group, backing store)``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        StoreFormatError: when it is not a Zarr v3 group.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"simulation store {path!r}: no such file or directory")
    if os.path.isfile(path):
        if not zipfile.is_zipfile(path):
            raise StoreFormatError(f"{path!r}: a file that is not a zip archive; expected a Zarr directory or .zip store")
        backing: Any = ZipStore(path, mode="r")
    else:
        backing = LocalStore(path, read_only=True)
    try:
        group = zarr.open_group(store=backing, mode="r", zarr_format=3)
    except Exception as exc:  # zarr raises several types for "not a group"
        raise StoreFormatError(f"{path!r}: not a readable Zarr v3 group ({type(exc).__name__}: {exc})") from None
    return group, backing


@dataclass(frozen=True)
class StoreArrays:
    """Handles of the arrays of a store, checked against the manifest."""

    parameters: zarr.Array
    blocks: dict[str, dict[str, zarr.Array]]  # block -> kind -> array
    splits: dict[str, np.ndarray] | None  # raw explicit splits (unvalidated), or None


def _get_array(group: zarr.Group, path: str) -> zarr.Array | None:
    try:
        node = group[path]
    except KeyError:
        return None
    if not isinstance(node, zarr.Array):
        raise StoreFormatError(f"{path}: expected an array, found a group")
    return node


def _check(array: zarr.Array | None, path: str, shape: tuple[int, ...], kind: str, required: bool) -> None:
    if array is None:
        if required:
            raise StoreFormatError(f"{path}: missing array (expected {kind} of shape {shape})")
        return
    if tuple(array.shape) != shape:
        raise StoreFormatError(f"{path}: shape {tuple(array.shape)}, expected {shape}")
    dtype = np.dtype(array.dtype)
    ok = dtype == np.bool_ if kind == "bool" else np.issubdtype(dtype, np.floating)
    if not ok:
        raise StoreFormatError(f"{path}: dtype {dtype}, expected {kind}")


def load_arrays(group: zarr.Group, manifest: Mapping[str, Any]) -> StoreArrays:
    """Collect and check every array named by the manifest.

    Raises:
        StoreFormatError: naming the array, its shape/dtype and what was expected.
    """
    n, n_params = manifest["n_samples"], len(manifest["parameters"])
    params = _get_array(group, PARAMETERS)
    _check(params, PARAMETERS, (n, n_params), "float", True)
    blocks: dict[str, dict[str, zarr.Array]] = {}
    for b in manifest["blocks"]:
        name, length, arrays = b["name"], b["length"], {}
        for kind, shape, dkind, required in (
            ("values", (n, length), "float", True),
            ("uncertainties", (n, length), "float", b["has_uncertainties"]),
            ("mask", (n, length), "bool", False),
            ("coordinates", (length,), "float", False),
        ):
            path = block_array_path(name, kind)
            arr = _get_array(group, path)
            if kind == "uncertainties" and arr is not None and not required:
                raise StoreFormatError(f"{path}: present but sbi_store.blocks[{name!r}].has_uncertainties is false")
            _check(arr, path, shape, dkind, required)
            if arr is not None:
                arrays[kind] = arr
        if "coordinates" in arrays:
            _check_coordinates(arrays["coordinates"], block_array_path(name, "coordinates"))
        blocks[name] = arrays
    return StoreArrays(parameters=params, blocks=blocks, splits=_raw_splits(group))


def _check_coordinates(array: zarr.Array, path: str) -> None:
    coords = np.asarray(array[...], dtype=np.float64)
    if not np.all(np.isfinite(coords)) or np.any(np.diff(coords) <= 0):
        raise StoreFormatError(f"{path}: expected finite, strictly increasing coordinates")


def _raw_splits(group: zarr.Group) -> dict[str, np.ndarray] | None:
    if SPLITS_GROUP not in group:
        return None
    node = group[SPLITS_GROUP]
    if not isinstance(node, zarr.Group):
        raise StoreFormatError(f"{SPLITS_GROUP}: expected a group of index arrays, found an array")
    out = {}
    for name in SPLIT_NAMES:
        arr = _get_array(group, split_array_path(name))
        if arr is not None:
            out[name] = np.asarray(arr[...])
    return out
