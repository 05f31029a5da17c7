"""Saved posterior directories: atomic writes, checksums, safe loading (never pickle).

A saved posterior is a directory holding ``metadata.json`` (human-readable, versioned), its
checksum sidecar ``metadata.json.sha256`` (:mod:`sbi_core.metadata_checksum`) and the backend's
weight files (equinox ``tree_serialise_leaves`` ``.eqx`` files). ``metadata.json`` records the
SHA-256 and size of every weight file under ``"weights"``.

Writing goes into a temporary sibling directory; when it is complete it is renamed onto the target
(an existing posterior directory is first renamed aside and removed afterwards). A crash therefore
leaves either the old model or the new one at the target path, plus at most hidden ``.NAME.tmp-*``
/ ``.NAME.old-*`` siblings, which the next save of the same target removes
(:mod:`sbi_core.save_staging`). Reading verifies ``metadata.json`` against its sidecar, the schema
version, that every recorded file lies inside the directory, is not a pickle, and matches its
checksum; each failure raises :class:`PosteriorLoadError` naming the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from sbi_core.fsutil import replace_directory
from sbi_core.metadata_checksum import SIDECAR_NAME, sidecar_problem, write_sidecar
from sbi_core.save_staging import lock_directory, new_staging_path, remove_stale_staging, unlock

__all__ = [
    "METADATA_FILE_NAME",
    "PosteriorLoadError",
    "PosteriorSaveError",
    "file_sha256",
    "write_posterior_directory",
    "read_posterior_metadata",
    "resolve_inside",
    "check_finite_tree",
    "to_jsonable",
]

METADATA_FILE_NAME = "metadata.json"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle")


class PosteriorLoadError(ValueError):
    """A saved posterior directory is missing, corrupt, tampered with or of another schema."""


class PosteriorSaveError(ValueError):
    """A posterior cannot be saved (untrained, non-finite weights, unsafe target)."""


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file, streamed in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def to_jsonable(value: Any) -> Any:
    """Convert numpy/JAX scalars and arrays, tuples and Paths into plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return to_jsonable(np.asarray(value).tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


def check_finite_tree(tree: Any, what: str) -> None:
    """Raise :class:`PosteriorSaveError` if any inexact array leaf of ``tree`` is non-finite."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, eqx.is_inexact_array))
    for path, leaf in leaves:
        bad = ~np.isfinite(np.asarray(leaf))
        if bad.any():
            raise PosteriorSaveError(
                f"{what}: refusing to save non-finite weights: {int(bad.sum())} non-finite value(s) "
                f"in leaf {jax.tree_util.keystr(path)}"
            )


def resolve_inside(directory: Path, relative: str) -> Path:
    """Resolve ``relative`` under ``directory``; refuse absolute paths and escapes (``..``, links)."""
    root = directory.resolve()
    candidate = (root / relative).resolve()
    if Path(relative).is_absolute() or not candidate.is_relative_to(root):
        raise PosteriorLoadError(
            f"{directory / METADATA_FILE_NAME}: weight file {relative!r} points outside the "
            f"posterior directory {root}; refusing to read it"
        )
    return candidate


def _looks_like_pickle(path: Path) -> bool:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _weight_files(directory: Path) -> list[str]:
    files = sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.name not in (METADATA_FILE_NAME, SIDECAR_NAME)
    )
    for name in files:
        if _looks_like_pickle(directory / name):
            raise PosteriorSaveError(f"{name}: the backend wrote a pickle file; pickles are never saved")
    return files


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        return
    backup = new_staging_path(target, "old")
    # Locked so that a concurrent save's cleanup never takes the old model for a dead one's leftover.
    old = None if target.is_symlink() else lock_directory(target)
    try:
        # One atomic exchange where the platform allows: a process killed between two renames
        # would leave no model at ``target`` at all (see sbi_core.fsutil).
        replace_directory(tmp, target, backup)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        unlock(old)


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise PosteriorSaveError(f"{target}: exists and is not a directory; refusing to overwrite it")
    if target.is_dir() and any(target.iterdir()) and not (target / METADATA_FILE_NAME).is_file():
        raise PosteriorSaveError(
            f"{target}: is a non-empty directory without {METADATA_FILE_NAME} (not a saved "
            "posterior); refusing to overwrite it"
        )


def write_posterior_directory(
    target: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    write_weights: Callable[[Path], None],
) -> dict[str, Any]:
    """Atomically write a posterior directory.

    Args:
        target: Destination directory (replaced only if it is a saved posterior or empty).
        metadata: JSON-able metadata; ``"weights"`` is filled in here.
        write_weights: Writes the backend's weight files into the directory it is given.

    Returns:
        The metadata written to ``metadata.json`` (with the weight checksums).

    Raises:
        PosteriorSaveError: If the target is unsafe to replace or a pickle was written.
    """
    target = Path(target)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    tmp = new_staging_path(target, "tmp")
    tmp.mkdir()
    lock = None
    try:
        lock = lock_directory(tmp)  # held until the end: tells a concurrent cleanup we are alive
        write_weights(tmp)
        files = _weight_files(tmp)
        record = {n: {"sha256": file_sha256(tmp / n), "bytes": (tmp / n).stat().st_size} for n in files}
        payload = to_jsonable({**dict(metadata), "weights": {"files": record}})
        data = json.dumps(payload, indent=2, sort_keys=True).encode("utf-8")
        (tmp / METADATA_FILE_NAME).write_bytes(data)
        write_sidecar(tmp, data)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        unlock(lock)
    return payload


def _read_metadata_json(directory: Path) -> tuple[dict[str, Any], bytes]:
    if not directory.is_dir():
        leftovers = sorted(p.name for p in directory.parent.glob(f".{directory.name}.*")) if directory.parent.is_dir() else []
        hint = f" (found leftover {leftovers} from an interrupted save)" if leftovers else ""
        raise PosteriorLoadError(f"{directory}: no such posterior directory{hint}")
    path = directory / METADATA_FILE_NAME
    if not path.is_file():
        raise PosteriorLoadError(f"{path}: missing; {directory} is not a saved posterior directory")
    try:
        data = path.read_bytes()
        payload = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PosteriorLoadError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise PosteriorLoadError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    return payload, data


def _verify_weight_files(directory: Path, payload: Mapping[str, Any]) -> None:
    meta_path = directory / METADATA_FILE_NAME
    files = (payload.get("weights") or {}).get("files")
    if not isinstance(files, dict) or not files:
        raise PosteriorLoadError(f"{meta_path}: field 'weights.files' is missing or empty")
    for name, record in files.items():
        path = resolve_inside(directory, name)
        if not path.is_file():
            raise PosteriorLoadError(f"{path}: weight file listed in {METADATA_FILE_NAME} is missing")
        if _looks_like_pickle(path):
            raise PosteriorLoadError(f"{path}: is a pickle file; refusing to load it (pickles are never loaded)")
        expected = record.get("sha256") if isinstance(record, dict) else None
        actual = file_sha256(path)
        if actual != expected:
            raise PosteriorLoadError(
                f"{path}: SHA-256 checksum mismatch (metadata.json records {expected}, file has "
                f"{actual}); the file is corrupt or was modified"
            )
    for path in directory.rglob("*"):
        if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
            raise PosteriorLoadError(f"{path}: pickle file inside the posterior directory; refusing to load")


def read_posterior_metadata(
    directory: str | os.PathLike[str], supported_schema_versions: Iterable[str]
) -> dict[str, Any]:
    """Read and verify ``metadata.json`` and every weight file of a saved posterior.

    Args:
        directory: The saved posterior directory.
        supported_schema_versions: Schema versions this library can load.

    Returns:
        The parsed metadata.

    Raises:
        PosteriorLoadError: naming the file and the reason (missing, bad JSON, metadata.json
            not matching its sidecar, other schema version, path escaping the directory, pickle,
            checksum mismatch).
    """
    directory = Path(directory)
    payload, data = _read_metadata_json(directory)
    # After parsing (a torn file says "not valid JSON"), before any field is trusted.
    problem = sidecar_problem(directory, data)
    if problem is not None:
        raise PosteriorLoadError(problem)
    supported = tuple(supported_schema_versions)
    version = payload.get("schema_version")
    if version not in supported:
        raise PosteriorLoadError(
            f"{directory / METADATA_FILE_NAME}: schema_version {version!r} is not supported "
            f"(this library reads {list(supported)}); re-train or re-save the posterior"
        )
    _verify_weight_files(directory, payload)
    return payload
