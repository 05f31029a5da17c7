"""Names of the groups and arrays of a format 1.0 store (one place, so reader and writer agree)."""

from __future__ import annotations

FORMAT_VERSION = "1.0"
MANIFEST_ATTR = "sbi_store"
# Writer bookkeeping (not part of the data contract; readers ignore it except `complete`).
WRITER_ATTR = "sbi_writer"
PROGRESS_ARRAY = "_sbi_writer_progress"

PARAMETERS = "parameters"
BLOCKS_GROUP = "blocks"
SPLITS_GROUP = "splits"
SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")
BLOCK_ARRAY_KINDS: tuple[str, ...] = ("values", "uncertainties", "mask", "coordinates")
MODALITIES: tuple[str, ...] = ("spectrum", "photometry", "time_series", "auxiliary")


def block_array_path(block: str, kind: str) -> str:
    """Path of array ``kind`` (values, uncertainties, mask, coordinates) of ``block``."""
    return f"{BLOCKS_GROUP}/{block}/{kind}"


def split_array_path(split: str) -> str:
    """Path of the explicit index array of ``split``."""
    return f"{SPLITS_GROUP}/{split}"


def dimension_names(block: str | None, kind: str) -> tuple[str, ...]:
    """The ``dimension_names`` recorded on each array."""
    if block is None:
        return ("sample", "parameter")
    if kind == "coordinates":
        return (f"{block}_element",)
    return ("sample", f"{block}_element")
