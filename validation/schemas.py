"""pandera schemas for the two tables the validator builds chunk by chunk.

Why tables and not pandera's xarray backend: that backend validates Dask-backed arrays at
``SCHEMA_ONLY`` depth unless told otherwise, so data checks can silently not run. Instead the
validator reduces each chunk with numpy to small pandas DataFrames indexed by *sample index*
(the parameter table itself, and one per-sample summary table per block) and validates those
eagerly with ``lazy=True``: every check runs on every row, and one report lists every failure.
Every check has ``ignore_na=False`` where NaN must fail it (pandera drops nulls before a check
by default, which would let NaN through a finiteness check).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from validation.manifest import BlockEntry, ParameterEntry
from validation.report import FailureCollector


@dataclass(frozen=True)
class Rule:
    """How a failing (column, check) pair becomes a report entry."""

    location: str
    description: str
    expected: str
    found_label: str = ""  # e.g. "finite fraction": what the table value means


@dataclass(frozen=True)
class TableSchema:
    """A pandera schema plus the rules that turn its failure cases into report entries."""

    schema: pa.DataFrameSchema
    rules: Mapping[tuple[str, str], Rule]

    def validate(self, table: pd.DataFrame, out: FailureCollector) -> None:
        """Validate ``table`` lazily and record every failure (index = sample index)."""
        try:
            self.schema.validate(table, lazy=True)
        except pa.errors.SchemaErrors as exc:
            record_failure_cases(exc.failure_cases, self.rules, out)


def record_failure_cases(cases: pd.DataFrame, rules: Mapping[tuple[str, str], Rule],
                         out: FailureCollector) -> None:
    """Group pandera's failure cases by (column, check) and record sample indices."""
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        rule = rules.get((column, check))
        if rule is None:  # a schema-level failure (missing column, dtype): not per sample
            out.add("internal", str(column), f"pandera check {check!r} failed",
                    found=str(group["failure_case"].iloc[0]))
            continue
        indices = group["index"].dropna().astype(np.int64).to_numpy()
        found = f"{rule.found_label} {group['failure_case'].iloc[0]}".strip()
        out.add_indexed(check, rule.location, rule.description, np.sort(indices),
                        expected=rule.expected, found=found)


def _finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(series.to_numpy()), index=series.index)


def _support_check(low: Any, high: Any) -> pa.Check:
    # Non-finite values are the finiteness check's business; report each problem once.
    return pa.Check(lambda s: ~np.isfinite(s) | ((s >= low) & (s <= high)),
                    name="parameters_in_support", ignore_na=False)


def parameter_schema(entries: list[ParameterEntry], dtype: np.dtype) -> TableSchema:
    """Schema of the parameter table: every column finite and inside its prior's support.

    Bounds are rounded to the array's dtype, so a float32 store holding ``float32(high)`` for a
    float64 bound ``high`` passes: that value is the nearest representable one.
    """
    columns, rules = {}, {}
    cast = np.dtype(dtype).type
    for p in entries:
        low, high = p.prior.support
        columns[p.name] = pa.Column(nullable=True, checks=[
            pa.Check(_finite, name="parameters_finite", ignore_na=False),
            _support_check(cast(low), cast(high)),
        ])
        where = f"parameters (column {p.index}, {p.name!r})"
        rules[(p.name, "parameters_finite")] = Rule(where, "non-finite parameter", "finite")
        rules[(p.name, "parameters_in_support")] = Rule(
            where, f"parameter outside the {p.prior.kind} prior's support",
            f"{low} <= value <= {high}")
    return TableSchema(pa.DataFrameSchema(columns), rules)


def block_summary_schema(block: BlockEntry, has_mask: bool) -> TableSchema:
    """Schema of one block's per-sample summary table (see ``content.summarise_block``)."""
    base = f"blocks/{block.name}"
    columns = {"finite_fraction": pa.Column(float, nullable=True, checks=[
        pa.Check(lambda s: s == 1.0, name="values_finite", ignore_na=False)])}
    rules = {("finite_fraction", "values_finite"): Rule(
        f"{base}/values", "non-finite value (NaN or inf)", "finite fraction 1.0",
        "finite fraction")}
    columns["value_min"], columns["value_max"] = _constraint_columns(block, base, rules)
    if block.has_uncertainties:
        columns["uncertainty_finite_fraction"] = pa.Column(float, nullable=True, checks=[
            pa.Check(lambda s: s == 1.0, name="uncertainties_finite", ignore_na=False)])
        columns["uncertainty_min"] = pa.Column(float, nullable=True, checks=[
            pa.Check(lambda s: s > 0, name="uncertainties_positive")])
        rules[("uncertainty_finite_fraction", "uncertainties_finite")] = Rule(
            f"{base}/uncertainties", "non-finite uncertainty", "finite fraction 1.0",
            "finite fraction")
        rules[("uncertainty_min", "uncertainties_positive")] = Rule(
            f"{base}/uncertainties", "non-positive uncertainty", "minimum > 0", "minimum")
    if has_mask:
        columns["masked_fraction"] = pa.Column(float, checks=[
            pa.Check(lambda s: s < 1.0, name="fully_masked")])
        rules[("masked_fraction", "fully_masked")] = Rule(
            f"{base}/mask", "every element masked", "masked fraction < 1", "masked fraction")
    return TableSchema(pa.DataFrameSchema(columns), rules)


def _constraint_columns(block: BlockEntry, base: str,
                        rules: dict[tuple[str, str], Rule]) -> tuple[pa.Column, pa.Column]:
    """value_min/value_max columns checked against the block's ObservationValueConstraint."""
    c = block.constraint or {}
    min_checks, max_checks = [], []
    if c.get("min_value") is not None:
        inclusive = c.get("min_inclusive", True)
        bound = float(c["min_value"])
        fn = (lambda s, b=bound: s >= b) if inclusive else (lambda s, b=bound: s > b)
        min_checks.append(pa.Check(fn, name="values_constraint"))
        rules[("value_min", "values_constraint")] = Rule(
            f"{base}/values", "value below the block's constraint",
            f"min {'>=' if inclusive else '>'} {bound}", "min")
    if c.get("max_value") is not None:
        inclusive = c.get("max_inclusive", True)
        bound = float(c["max_value"])
        fn = (lambda s, b=bound: s <= b) if inclusive else (lambda s, b=bound: s < b)
        max_checks.append(pa.Check(fn, name="values_constraint"))
        rules[("value_max", "values_constraint")] = Rule(
            f"{base}/values", "value above the block's constraint",
            f"max {'<=' if inclusive else '<'} {bound}", "max")
    return (pa.Column(float, nullable=True, checks=min_checks),
            pa.Column(float, nullable=True, checks=max_checks))
