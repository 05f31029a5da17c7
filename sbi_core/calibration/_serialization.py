"""JSON helpers for the report dataclasses: numpy arrays <-> lists, NaN/inf <-> null."""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Recursively convert dataclasses, numpy arrays and scalars into JSON-ready Python objects.

    Non-finite floats become ``None`` so that the output is strict JSON (``json.dumps`` with
    ``allow_nan=False`` accepts it); :func:`float_array` turns ``None`` back into NaN.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def float_array(value: Any) -> np.ndarray:
    """A float64 array from JSON lists (``None`` -> NaN)."""
    return np.array(value, dtype=np.float64)


def optional_float(value: Any) -> float:
    """A float from JSON (``None`` -> NaN)."""
    return float("nan") if value is None else float(value)


def check_keys(name: str, payload: dict, expected: set[str]) -> None:
    """Raise ``ValueError`` naming missing or unknown keys of a report payload."""
    missing, unknown = expected - set(payload), set(payload) - expected
    if missing or unknown:
        raise ValueError(f"{name} payload: missing keys {sorted(missing)}, "
                         f"unknown keys {sorted(unknown)}")


def field_names(cls: type) -> set[str]:
    """Names of a dataclass's fields."""
    return {f.name for f in dataclasses.fields(cls)}
