"""Checks on an output path before anything is written, and what already lives there."""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from sbi_core.dataset.errors import StorePathError
from sbi_core.dataset.layout import MANIFEST_ATTR, WRITER_ATTR

ExistingKind = Literal["absent", "complete", "partial", "foreign"]


def check_writable_target(path: str) -> None:
    """Raise :class:`StorePathError` unless a store can be created at ``path``."""
    if path.lower().endswith(".zip"):
        raise StorePathError(f"{path!r}: the writer creates directory stores; zip stores are read-only (zip a finished store instead)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise StorePathError(f"{path!r}: parent directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorePathError(f"{path!r}: parent directory {parent!r} is not writable")
    if os.path.exists(path) and not os.path.isdir(path):
        raise StorePathError(f"{path!r}: exists and is a file, not a store directory")


def root_attributes(path: str) -> dict[str, Any] | None:
    """Attributes of the Zarr v3 group at ``path``, or None when it is not one."""
    try:
        with open(os.path.join(path, "zarr.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    attrs = meta.get("attributes") or {}
    return attrs if isinstance(attrs, dict) else None


def existing_kind(path: str) -> ExistingKind:
    """What is at ``path``: nothing, a finished store, an unfinished store, or something else."""
    if not os.path.lexists(path):
        return "absent"
    attrs = root_attributes(path) if os.path.isdir(path) else None
    if attrs is None or MANIFEST_ATTR not in attrs:
        return "foreign"
    writer = attrs.get(WRITER_ATTR)
    if isinstance(writer, dict) and writer.get("complete") is False:
        return "partial"
    return "complete"
