"""Content checks: pandera runs at data level, chunk by chunk, and names sample indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
import zarr

from validation import validate_store
from validation.content import summarise_block
from validation.manifest import BlockEntry
from validation.schemas import block_summary_schema


def _set(path: Path, array: str, index: tuple, value: float) -> None:
    zarr.open_group(str(path), mode="r+")[array][index] = value


@pytest.mark.parametrize("chunk_size", [None, 5, 32])
def test_a_single_nan_is_reported_with_its_sample_index(valid_store: Path,
                                                        chunk_size: int | None) -> None:
    _set(valid_store, "blocks/spectrum/values", (45, 7), np.nan)
    report = validate_store(valid_store, chunk_size=chunk_size)
    [failure] = [f for f in report.errors if f.check == "values_finite"]
    assert failure.location == "blocks/spectrum/values"
    assert failure.sample_indices == (45,) and failure.count == 1
    assert "sample 45" in failure.message


def test_failures_are_merged_across_chunks_first_few_and_count(valid_store: Path) -> None:
    bad = [3, 17, 33, 40, 41, 50, 51, 52, 53, 60, 61, 62]
    for i in bad:
        _set(valid_store, "blocks/spectrum/uncertainties", (i, 0), -1.0)
    report = validate_store(valid_store, chunk_size=8)
    [failure] = [f for f in report.errors if f.check == "uncertainties_positive"]
    assert failure.count == len(bad)
    assert list(failure.sample_indices) == bad[:10]
    assert "+2 more" in failure.message


def test_every_failure_is_listed_lazily(valid_store: Path) -> None:
    _set(valid_store, "parameters", (1, 0), 1e9)
    _set(valid_store, "parameters", (2, 2), np.nan)
    _set(valid_store, "blocks/spectrum/values", (3, 0), np.inf)
    _set(valid_store, "blocks/spectrum/uncertainties", (4, 0), 0.0)
    _set(valid_store, "blocks/photometry/values", (5, 0), np.nan)
    report = validate_store(valid_store)
    found = {(f.check, f.sample_indices) for f in report.errors}
    assert {("parameters_in_support", (1,)), ("parameters_finite", (2,)),
            ("values_finite", (3,)), ("uncertainties_positive", (4,)),
            ("values_finite", (5,))} <= found


def test_masked_elements_are_not_checked(valid_store: Path) -> None:
    _set(valid_store, "blocks/spectrum/values", (10, 4), np.nan)
    _set(valid_store, "blocks/spectrum/mask", (10, 4), False)
    assert validate_store(valid_store).valid


def test_fully_masked_sample_is_a_warning(valid_store: Path) -> None:
    zarr.open_group(str(valid_store), mode="r+")["blocks/spectrum/mask"][12] = False
    report = validate_store(valid_store)
    assert report.valid
    [warning] = report.warnings
    assert warning.check == "fully_masked" and warning.sample_indices == (12,)


def test_summary_table_values() -> None:
    values = np.array([[1.0, np.nan, 3.0], [0.5, 0.5, 0.5]])
    unc = np.array([[0.1, 0.1, 0.0], [0.2, np.inf, 0.2]])
    mask = np.array([[True, True, True], [True, False, True]])
    table = summarise_block(values, unc, mask, start=100)
    assert list(table.index) == [100, 101]
    np.testing.assert_allclose(table["finite_fraction"], [2 / 3, 1.0])
    np.testing.assert_allclose(table["value_min"], [1.0, 0.5])
    np.testing.assert_allclose(table["uncertainty_min"], [0.0, 0.2])
    np.testing.assert_allclose(table["uncertainty_finite_fraction"], [1.0, 1.0])
    np.testing.assert_allclose(table["masked_fraction"], [0.0, 1 / 3])


def test_pandera_default_would_skip_nan_and_our_schema_does_not() -> None:
    """Why the schemas use ignore_na=False: pandera drops nulls before a check by default."""
    table = pd.DataFrame({"x": [1.0, np.nan]})
    naive = pa.DataFrameSchema({"x": pa.Column(nullable=True, checks=pa.Check(np.isfinite))})
    naive.validate(table, lazy=True)  # passes: the NaN is silently dropped
    block = BlockEntry("b", "auxiliary", 2, False)
    summary = summarise_block(np.array([[1.0, np.nan]]), None, None, start=0)
    with pytest.raises(pa.errors.SchemaErrors):
        block_summary_schema(block, has_mask=False).schema.validate(summary, lazy=True)


def test_exclusive_constraint_bound(valid_store: Path) -> None:
    group = zarr.open_group(str(valid_store), mode="r+")
    manifest = dict(group.attrs["sbi_store"])
    manifest["blocks"][0]["constraint"] = {"min_value": 0.0, "max_value": 1.0,
                                           "min_inclusive": False, "max_inclusive": True}
    group.attrs["sbi_store"] = manifest
    group["blocks/spectrum/values"][30, 2] = 0.0
    [failure] = [f for f in validate_store(valid_store).errors if f.check == "values_constraint"]
    assert failure.sample_indices == (30,) and failure.expected == "min > 0.0"
