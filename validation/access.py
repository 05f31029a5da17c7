"""Open a store read-only, whether a directory or a zip file, without any writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zarr
from zarr.storage import ZipStore


@contextmanager
def open_group_readonly(path: str | Path) -> Iterator[zarr.Group]:
    """Yield the root group of the store at ``path`` opened with ``mode="r"``.

    A regular file is read as a zip store; a directory as a local store. Nothing is created,
    locked or written: this is what lets validation promise identical bytes before and after.

    Raises:
        FileNotFoundError: no such path.
        Exception: whatever zarr or zipfile raise for an unreadable store; callers report it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such store: {path}")
    if path.is_file():
        store = ZipStore(path, mode="r")
        try:
            yield _open_v3(store)
        finally:
            store.close()
    else:
        yield _open_v3(str(path))


def _open_v3(store: Any) -> zarr.Group:
    group = zarr.open_group(store, mode="r", zarr_format=3)
    return group


def get_member(group: zarr.Group, key: str) -> Any:
    """``group[key]``, or None when it does not exist (other errors propagate)."""
    try:
        return group[key]
    except KeyError:
        return None


def list_member_paths(group: zarr.Group) -> list[str] | None:
    """Every member path of the store, or None when the listing itself fails."""
    try:
        return [name for name, _ in group.members(max_depth=None)]
    except Exception:  # noqa: BLE001 - a broken child is reported by the per-array checks
        return None
