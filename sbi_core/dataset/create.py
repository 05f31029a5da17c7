"""``create_store``: validate, lock, then create (or resume) a store for :class:`StoreWriter`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from sbi_core import __version__
from sbi_core.dataset.errors import StoreExistsError
from sbi_core.dataset.layout import MANIFEST_ATTR, PARAMETERS, PROGRESS_ARRAY, WRITER_ATTR, block_array_path, dimension_names
from sbi_core.dataset.locking import WriterLock
from sbi_core.dataset.manifest import canonical_json, manifest_from_task_payload
from sbi_core.dataset.paths import check_writable_target, existing_kind, root_attributes
from sbi_core.dataset.writer import StoreWriter, _positive_int, remove_replaced_debris, staging_path


def create_store(
    path: str | os.PathLike,
    *,
    task_payload: Mapping[str, Any],
    n_samples: int,
    chunk_size: int = 1024,
    overwrite: bool = False,
    resume: bool = False,
    dtype: Any = np.float32,
    mask_blocks: Sequence[str] = (),
    writer_info: Mapping[str, Any] | None = None,
) -> StoreWriter:
    """Create a store at ``path`` (or resume an unfinished one) and return its writer.

    Args:
        path: Directory store to create.
        task_payload: ``SBITask.to_payload()`` or a dict of that shape (name, version,
            parameters, blocks, noise_model); block ``coordinates`` become arrays.
        n_samples: Rows ``N``.
        chunk_size: Rows per chunk along the sample axis.
        overwrite: Replace an existing store (built beside it, swapped in when complete).
        resume: Attach to an unfinished store at ``path`` made with the same settings.
        dtype: Storage float dtype.
        mask_blocks: Blocks that get a ``mask`` array.
        writer_info: JSON facts that must match for a resume (e.g. generator, seed).

    Raises:
        ValueError / StoreFormatError: bad arguments (nothing touched).
        StorePathError: the path cannot be written. StoreLockedError: another writer is active.
        StoreExistsError: something is at ``path`` and it may not be replaced or resumed.
    """
    path = os.path.normpath(os.fspath(path))  # "out.zarr/" and "out.zarr" are one store
    settings = _settings(task_payload, n_samples, chunk_size, dtype, mask_blocks, writer_info)
    check_writable_target(path)
    lock = WriterLock(path)
    lock.acquire()
    try:
        remove_replaced_debris(path)
        target = _choose_target(path, settings, overwrite, resume)
        if not os.path.exists(target):
            _initialise(target, settings)
        return StoreWriter(target, path, lock)
    except BaseException:
        lock.release()
        raise


def _settings(task_payload, n_samples, chunk_size, dtype, mask_blocks, writer_info) -> dict[str, Any]:
    """Validate every argument up front; returns what ``_initialise`` needs."""
    n_samples, chunk_size = _positive_int(n_samples, "n_samples"), _positive_int(chunk_size, "chunk_size")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise ValueError(f"dtype: expected a float dtype, got {dtype!r}")
    manifest, coords = manifest_from_task_payload(task_payload, n_samples)
    lengths = {b["name"]: b["length"] for b in manifest["blocks"]}
    for name, c in coords.items():
        if c.shape != (lengths.get(name, -1),):
            raise ValueError(f"task_payload.blocks[{name!r}].coordinates: shape {c.shape}, expected ({lengths.get(name)},)")
        if not np.all(np.isfinite(c)) or np.any(np.diff(c) <= 0):
            raise ValueError(f"task_payload.blocks[{name!r}].coordinates: expected finite, strictly increasing values")
    unknown = set(mask_blocks) - set(lengths)
    if unknown:
        raise ValueError(f"mask_blocks: unknown block(s) {sorted(unknown)}; blocks are {sorted(lengths)}")
    writer = {
        "complete": False,
        "chunk_size": chunk_size,
        "dtype": np.dtype(dtype).name,
        "mask_blocks": sorted(mask_blocks),
        "writer_info": dict(writer_info or {}),
    }
    canonical_json(writer)  # raises now if writer_info is not JSON
    return {"manifest": manifest, "coordinates": coords, "writer": writer}


def _resume_problems(path: str, settings: Mapping[str, Any]) -> list[str]:
    attrs = root_attributes(path) or {}
    problems = []
    if canonical_json(attrs.get(MANIFEST_ATTR)) != canonical_json(settings["manifest"]):
        problems.append("task / parameters / blocks / n_samples differ")
    old = attrs.get(WRITER_ATTR) or {}
    for key in ("chunk_size", "dtype", "mask_blocks", "writer_info"):
        if canonical_json(old.get(key)) != canonical_json(settings["writer"][key]):
            problems.append(f"{key}: stored {old.get(key)!r}, requested {settings['writer'][key]!r}")
    return problems


def _choose_target(path: str, settings: Mapping[str, Any], overwrite: bool, resume: bool) -> str:
    """Where to write: ``path`` itself, or the staging path of an overwrite."""
    kind = existing_kind(path)
    if kind == "absent":
        return path
    if kind == "partial" and resume and not overwrite:
        problems = _resume_problems(path, settings)
        if not problems:
            return path
        raise StoreExistsError(f"{path!r} holds an unfinished store made with other settings ({'; '.join(problems)}); pass overwrite=True (--overwrite) to replace it")
    if not overwrite:
        what = {"complete": "a complete simulation store", "partial": "an unfinished simulation store", "foreign": "something that is not a simulation store"}[kind]
        raise StoreExistsError(f"{path!r} already holds {what}; pass overwrite=True (--overwrite) to replace it")
    if kind == "foreign":
        raise StoreExistsError(f"refusing to overwrite {path!r}: it is not a simulation store (no {MANIFEST_ATTR!r} attribute); remove it yourself if you mean to")
    staging = staging_path(path)
    staging_kind = existing_kind(staging)
    if staging_kind == "partial" and resume and not _resume_problems(staging, settings):
        return staging
    if staging_kind == "foreign":
        raise StoreExistsError(f"{staging!r} exists and is not a simulation store; remove it to overwrite {path!r}")
    if staging_kind != "absent":
        shutil.rmtree(staging)  # our own leftover from an earlier, abandoned overwrite
    return staging


def _initialise(target: str, settings: Mapping[str, Any]) -> None:
    """Create the empty store at ``target`` in one step (built beside it, then renamed).

    Creating the group, its arrays and the ``sbi_store`` attribute takes many writes; a process
    killed half-way through would leave a directory without the attribute, which later runs must
    treat as foreign (not resumable, not overwritable). Building it under a scratch name and
    renaming it into place makes ``target`` either absent or a resumable unfinished store.
    """
    scratch = target.rstrip("/\\") + ".init-partial"
    if os.path.lexists(scratch):
        shutil.rmtree(scratch)  # an earlier initialisation was killed; we hold the writer lock
    _build_empty_store(scratch, settings)
    os.rename(scratch, target)


def _build_empty_store(target: str, settings: Mapping[str, Any]) -> None:
    manifest, writer = settings["manifest"], settings["writer"]
    n, chunk, dtype = manifest["n_samples"], writer["chunk_size"], writer["dtype"]
    group = zarr.open_group(target, mode="w-", zarr_format=3)
    rows = min(chunk, n)
    group.create_array(PARAMETERS, shape=(n, len(manifest["parameters"])), chunks=(rows, len(manifest["parameters"])), dtype=dtype, fill_value=np.nan, dimension_names=dimension_names(None, "values"))
    for b in manifest["blocks"]:
        name, length = b["name"], b["length"]
        kinds = ["values"] + (["uncertainties"] if b["has_uncertainties"] else []) + (["mask"] if name in writer["mask_blocks"] else [])
        for kind in kinds:
            is_mask = kind == "mask"
            group.create_array(block_array_path(name, kind), shape=(n, length), chunks=(rows, length), dtype=bool if is_mask else dtype, fill_value=False if is_mask else np.nan, dimension_names=dimension_names(name, kind))
        if name in settings["coordinates"]:
            group.create_array(block_array_path(name, "coordinates"), data=settings["coordinates"][name], dimension_names=dimension_names(name, "coordinates"))
    n_chunks = -(-n // chunk)
    group.create_array(PROGRESS_ARRAY, shape=(n_chunks,), chunks=(1,), dtype="uint8", fill_value=0)
    group.attrs.update({MANIFEST_ATTR: manifest, WRITER_ATTR: {**writer, "library": f"sbi_core {__version__}"}})
