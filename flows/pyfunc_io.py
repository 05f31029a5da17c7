"""Request parsing and response building of the pyfunc model (plain pandas/numpy, unit-tested).

Input contract (DESIGN.md): a DataFrame with one row per observation, one list-valued column per
observation block named after the block, plus ``<block>_uncertainties`` where the schema has
uncertainties. Params ``num_samples`` and ``seed``. Output: physical-unit samples, one column per
parameter name plus ``observation_index``.

Every problem with a request raises :class:`RequestError` (a ``ValueError``) with a message that
names the row, column and what was expected; the model turns it into an ``MlflowException`` with
``INVALID_PARAMETER_VALUE`` so the scoring server answers 400 instead of 500.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Environment variables that bound the work one request may ask for.
MAX_NUM_SAMPLES_ENV = "SBI_OPS_MAX_NUM_SAMPLES"
MAX_OBSERVATIONS_ENV = "SBI_OPS_MAX_OBSERVATIONS"
DEFAULT_MAX_NUM_SAMPLES = 10_000
DEFAULT_MAX_OBSERVATIONS = 256
DEFAULT_NUM_SAMPLES = 1000
UNCERTAINTY_SUFFIX = "_uncertainties"
MAX_SEED = 2**32 - 1


class RequestError(ValueError):
    """A request the model cannot answer; the message is shown to the client."""


@dataclass(frozen=True)
class BlockColumn:
    """One expected block: its name, length, modality, coordinates and uncertainty column."""

    name: str
    length: int
    modality: str
    has_uncertainties: bool
    coordinates: Any = None

    @property
    def uncertainty_column(self) -> str:
        """Name of the uncertainty column."""
        return f"{self.name}{UNCERTAINTY_SUFFIX}"


def block_columns(schema: Any) -> list[BlockColumn]:
    """Expected columns from an observation schema (``ObservationSchema``-like object)."""
    out = []
    for spec in schema.blocks:
        modality = getattr(spec.modality, "value", spec.modality)
        out.append(BlockColumn(spec.name, int(spec.length), str(modality), bool(spec.has_uncertainties),
                               getattr(spec, "coordinates", None)))
    return out


def env_limit(name: str, default: int) -> int:
    """A positive integer limit from the environment (``default`` when unset or invalid)."""
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def bucket(n: int, smallest: int = 8) -> int:
    """The next power of two >= ``n`` (at least ``smallest``): the padded size actually computed."""
    size = smallest
    while size < n:
        size *= 2
    return size


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise RequestError(f"param {name!r} must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    # ASCII digits only, and not too many: str.isdigit() also accepts "²", lstrip("-") accepts
    # "--5", and int() refuses > 4300 digits; each raised a ValueError that did not name the param.
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,30}\s*", value):
        return int(value)
    raise RequestError(f"param {name!r} must be an integer, got {value!r}")


def parse_params(params: Mapping[str, Any] | None, default_seed: int = 0) -> tuple[int, int]:
    """``(num_samples, seed)`` from the request params, checked against the limits.

    Raises:
        RequestError: ``num_samples`` not in ``[1, $SBI_OPS_MAX_NUM_SAMPLES]`` or ``seed`` not in
            ``[0, 2**32 - 1]``.
    """
    if params is not None and not isinstance(params, Mapping):
        raise RequestError(f"params must be a mapping of name to value, got {type(params).__name__}")
    params = dict(params or {})
    limit = env_limit(MAX_NUM_SAMPLES_ENV, DEFAULT_MAX_NUM_SAMPLES)
    raw = params.get("num_samples")
    num_samples = min(DEFAULT_NUM_SAMPLES, limit) if raw is None else _as_int(raw, "num_samples")
    if not 1 <= num_samples <= limit:
        raise RequestError(f"num_samples must be between 1 and {limit} "
                           f"(limit set by ${MAX_NUM_SAMPLES_ENV}), got {num_samples}")
    seed = params.get("seed")
    seed = default_seed if seed is None else _as_int(seed, "seed")
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    return num_samples, seed


def _cell_array(value: Any, row: int, column: str, length: int) -> np.ndarray:
    """One list-valued cell as a finite float64 vector of ``length``."""
    if isinstance(value, str) or value is None or np.isscalar(value):
        raise RequestError(f"row {row}, column {column!r}: expected a list of {length} numbers, "
                           f"got {type(value).__name__} {str(value)[:40]!r}")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
        raise RequestError(f"row {row}, column {column!r}: expected a list of {length} numbers "
                           "(each within the float64 range)") from None
    if array.ndim != 1 or array.shape[0] != length:
        raise RequestError(f"row {row}, column {column!r}: expected {length} values, got shape "
                           f"{list(array.shape)}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise RequestError(f"row {row}, column {column!r}: non-finite value {array[bad[0]]} at "
                           f"position {int(bad[0])} ({bad.size} non-finite in total)")
    return array


def parse_frame(frame: Any, columns: Sequence[BlockColumn]) -> list[dict[str, dict[str, np.ndarray]]]:
    """Rows of the request as ``{block: {"values": (L,), "uncertainties": (L,)}}`` dicts.

    Raises:
        RequestError: Missing or unknown columns, too many rows, wrong lengths, non-finite or
            non-positive uncertainties.
    """
    import pandas as pd

    if isinstance(frame, Mapping):
        try:
            frame = pd.DataFrame(dict(frame))
        except (TypeError, ValueError) as exc:
            raise RequestError(f"cannot read the observations as a table: {exc}") from None
    if not isinstance(frame, pd.DataFrame):
        raise RequestError(f"expected a table of observations (a DataFrame), got {type(frame).__name__}")
    expected = [c.name for c in columns] + [c.uncertainty_column for c in columns if c.has_uncertainties]
    missing = [c for c in expected if c not in frame.columns]
    unknown = [str(c) for c in frame.columns if c not in expected]
    if missing or unknown:
        raise RequestError(f"columns must be exactly {expected}; missing {missing}, unknown {unknown}")
    limit = env_limit(MAX_OBSERVATIONS_ENV, DEFAULT_MAX_OBSERVATIONS)
    if not 1 <= len(frame) <= limit:
        raise RequestError(f"expected 1 to {limit} observations (rows) per request "
                           f"(limit set by ${MAX_OBSERVATIONS_ENV}), got {len(frame)}")
    return [_parse_row(frame, i, columns) for i in range(len(frame))]


def _parse_row(frame: Any, i: int, columns: Sequence[BlockColumn]) -> dict[str, dict[str, np.ndarray]]:
    row: dict[str, dict[str, np.ndarray]] = {}
    for col in columns:
        entry = {"values": _cell_array(frame[col.name].iloc[i], i, col.name, col.length)}
        if col.has_uncertainties:
            unc = _cell_array(frame[col.uncertainty_column].iloc[i], i, col.uncertainty_column, col.length)
            if np.any(unc <= 0):
                raise RequestError(f"row {i}, column {col.uncertainty_column!r}: uncertainties must "
                                   f"be > 0, found {unc[unc <= 0][0]}")
            entry["uncertainties"] = unc
        row[col.name] = entry
    return row


def observation_blocks(row: Mapping[str, Mapping[str, np.ndarray]], columns: Sequence[BlockColumn]) -> list[Any]:
    """``ObservationBlock`` objects for one parsed row (modality/coordinates from the schema)."""
    from sbi_core.observation import ObservationBlock

    return [ObservationBlock(name=c.name, modality=c.modality, values=row[c.name]["values"],
                             uncertainties=row[c.name].get("uncertainties"),
                             coordinates=None if c.coordinates is None else np.asarray(c.coordinates, np.float64))
            for c in columns]


def samples_frame(samples: np.ndarray, parameter_names: Sequence[str]) -> Any:
    """``(B, S, P)`` physical draws -> DataFrame with parameter columns and ``observation_index``."""
    import pandas as pd

    n_obs, n_samples, n_par = samples.shape
    frame = pd.DataFrame(samples.reshape(n_obs * n_samples, n_par).astype(np.float64),
                         columns=list(parameter_names))
    frame["observation_index"] = np.repeat(np.arange(n_obs, dtype=np.int64), n_samples)
    return frame


def example_frame(columns: Sequence[BlockColumn]) -> Any:
    """A one-row input example: zeros for values, ones for uncertainties."""
    import pandas as pd

    data: dict[str, list[list[float]]] = {}
    for col in columns:
        data[col.name] = [[0.0] * col.length]
        if col.has_uncertainties:
            data[col.uncertainty_column] = [[1.0] * col.length]
    return pd.DataFrame(data)
