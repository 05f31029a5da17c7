"""Content checks, streamed chunk by chunk: pandera tables plus the statistics trackers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import zarr

from validation.report import FailureCollector
from validation.schemas import TableSchema, block_summary_schema, parameter_schema
from validation.statistics import DeadFeatureTracker, DuplicateTracker, PriorKSTracker
from validation.structure import BlockArrays, StoreArrays

# Default read size per step, over all arrays of a sample: bounds memory (a few times this, for
# numpy temporaries) independently of the store size.
TARGET_STEP_BYTES = 8 * 1024**2


@dataclass
class _Checks:
    """Schemas and trackers built once, fed every chunk."""

    param_schema: TableSchema | None
    block_schemas: list[TableSchema]
    dead: list[DeadFeatureTracker]
    ks: PriorKSTracker | None
    dupes: DuplicateTracker
    duplicates_complete: bool = True
    stats: dict[str, Any] = field(default_factory=dict)


def default_step(arrays: StoreArrays) -> int:
    """Samples per read: a whole number of the parameters' chunks, about TARGET_STEP_BYTES."""
    members = _all_arrays(arrays)
    row_bytes = sum(int(np.prod(a.shape[1:])) * np.dtype(a.dtype).itemsize for a in members)
    unit = int((arrays.parameters.shards or arrays.parameters.chunks)[0]) if \
        arrays.parameters is not None else 1024
    unit = max(unit, 1)
    rows = max(TARGET_STEP_BYTES // max(row_bytes, 1), 1)
    return max(unit, (rows // unit) * unit)


def _all_arrays(arrays: StoreArrays) -> list[zarr.Array]:
    found = [arrays.parameters] if arrays.parameters is not None else []
    for b in arrays.blocks:
        found += [a for a in (b.values, b.uncertainties, b.mask) if a is not None]
    return found


def run_content_checks(arrays: StoreArrays, out: FailureCollector, *, step: int | None,
                       ks_alpha: float) -> dict[str, Any]:
    """Stream the store once; record every content failure; return statistics."""
    checks = _build_checks(arrays)
    step = step or default_step(arrays)
    for start in range(0, arrays.n_samples, step):
        _check_step(arrays, checks, out, start, min(start + step, arrays.n_samples))
    stats: dict[str, Any] = {"read_step_samples": step}
    if checks.ks is not None:
        stats["prior_ks"] = checks.ks.report(out, ks_alpha)
    stats["dead_features"] = {t.path: t.report(out) for t in checks.dead}
    if checks.duplicates_complete:
        stats["duplicate_samples"] = checks.dupes.report(out)
    return stats


def _build_checks(arrays: StoreArrays) -> _Checks:
    params = arrays.parameters
    return _Checks(
        param_schema=parameter_schema(arrays.parameter_entries, params.dtype)
        if params is not None else None,
        block_schemas=[block_summary_schema(b.entry, b.mask is not None) for b in arrays.blocks],
        dead=[DeadFeatureTracker(f"blocks/{b.entry.name}/values", b.entry.length)
              for b in arrays.blocks],
        ks=PriorKSTracker(arrays.parameter_entries) if params is not None else None,
        dupes=DuplicateTracker(arrays.n_samples),
    )


def _check_step(arrays: StoreArrays, checks: _Checks, out: FailureCollector,
                start: int, stop: int) -> None:
    index = pd.RangeIndex(start, stop, name="sample")
    rows = []
    if arrays.parameters is not None:
        params = read_rows(arrays.parameters, "parameters", start, stop, out)
        if params is not None:
            table = pd.DataFrame(params, index=index,
                                 columns=[p.name for p in arrays.parameter_entries])
            checks.param_schema.validate(table, out)
            checks.ks.update(params)
        rows.append(params)
    for block, schema, dead in zip(arrays.blocks, checks.block_schemas, checks.dead):
        rows.append(_check_block_step(block, schema, dead, out, start, stop))
    if any(r is None for r in rows) or not rows:
        checks.duplicates_complete = False  # an unreadable chunk makes the comparison partial
    elif checks.duplicates_complete:
        checks.dupes.update(start, rows)


def _check_block_step(block: BlockArrays, schema: TableSchema, dead: DeadFeatureTracker,
                      out: FailureCollector, start: int, stop: int) -> np.ndarray | None:
    base = f"blocks/{block.entry.name}"
    values = read_rows(block.values, f"{base}/values", start, stop, out)
    unc = read_rows(block.uncertainties, f"{base}/uncertainties", start, stop, out) \
        if block.uncertainties is not None else None
    mask = read_rows(block.mask, f"{base}/mask", start, stop, out) \
        if block.mask is not None else None
    if values is None or (unc is None) != (block.uncertainties is None) \
            or (mask is None) != (block.mask is None):
        return None  # an unreadable chunk (already reported): these rows cannot be summarised
    schema.validate(summarise_block(values, unc, mask, start), out)
    dead.update(values, mask)
    return values


def read_rows(array: zarr.Array, path: str, start: int, stop: int,
              out: FailureCollector) -> np.ndarray | None:
    """Read samples ``start:stop``; on a decode failure, localise and report the bad chunks."""
    try:
        return np.asarray(array[start:stop])
    except Exception:  # noqa: BLE001 - truncated or corrupted chunk files raise many types
        pass
    unit = max(int((array.shards or array.chunks)[0]), 1)
    for lo in range(start - start % unit, stop, unit):
        lo_c, hi_c = max(lo, start), min(lo + unit, stop)
        try:
            array[lo_c:hi_c]
        except Exception as exc:  # noqa: BLE001
            out.add_indexed("chunk_read", path, f"chunk cannot be decoded ({type(exc).__name__}:"
                            f" {str(exc)[:120]})", range(lo_c, hi_c),
                            expected="a decodable chunk", found=f"samples {lo_c}..{hi_c - 1}")
    return None


def summarise_block(values: np.ndarray, unc: np.ndarray | None, mask: np.ndarray | None,
                    start: int) -> pd.DataFrame:
    """Per-sample summary of one block chunk, indexed by sample index.

    Masked elements (mask False) are ignored: a mask exists to mark missing data, which is often
    NaN. A sample with every element masked has finite fraction 1 (nothing to check) and is
    caught by ``masked_fraction``.
    """
    rows, length = values.shape
    valid = np.ones(values.shape, dtype=bool) if mask is None else mask.astype(bool)
    n_valid = valid.sum(axis=1)
    finite = np.isfinite(values) & valid
    table = {"finite_fraction": _fraction(finite.sum(axis=1), n_valid)}
    clean = np.where(finite, values, np.nan).astype(np.float64, copy=False)
    table["value_min"] = np.fmin.reduce(clean, axis=1)
    table["value_max"] = np.fmax.reduce(clean, axis=1)
    if unc is not None:
        unc_finite = np.isfinite(unc) & valid
        table["uncertainty_finite_fraction"] = _fraction(unc_finite.sum(axis=1), n_valid)
        table["uncertainty_min"] = np.fmin.reduce(
            np.where(unc_finite, unc, np.nan).astype(np.float64, copy=False), axis=1)
    if mask is not None:
        table["masked_fraction"] = 1.0 - n_valid / length
    return pd.DataFrame(table, index=pd.RangeIndex(start, start + rows, name="sample"))


def _fraction(count: np.ndarray, total: np.ndarray) -> np.ndarray:
    return np.where(total > 0, count / np.maximum(total, 1), 1.0).astype(np.float64)
