"""Duplicates, dead features, KS against the prior, chunk layout: the documented policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import stats

from tests.validation.store_factory import write_valid_store
from validation import ValidationPolicy, validate_store
from validation.manifest import ParameterEntry
from validation.priors import prior_view
from validation.report import FailureCollector
from validation.statistics import KS_BINS, DuplicateTracker, PriorKSTracker


def test_dead_feature_is_a_warning_naming_the_feature(valid_store: Path) -> None:
    zarr.open_group(str(valid_store), mode="r+")["blocks/photometry/values"][:, 2] = 7.0
    report = validate_store(valid_store, fingerprint=False)
    assert report.valid
    [warning] = report.warnings
    assert warning.check == "dead_features" and warning.index_kind == "feature"
    assert warning.sample_indices == (2,) and "feature 2" in warning.message


def test_policy_can_escalate_and_ignore(valid_store: Path) -> None:
    zarr.open_group(str(valid_store), mode="r+")["blocks/photometry/values"][:, 2] = 7.0
    strict = validate_store(valid_store, policy=ValidationPolicy(warnings_as_errors=True),
                            fingerprint=False)
    assert not strict.valid
    quiet = validate_store(valid_store, fingerprint=False,
                           policy=ValidationPolicy(overrides={"dead_features": "ignore"}))
    assert quiet.valid and not quiet.failures


def test_ks_failure_can_be_downgraded_to_a_warning(valid_store: Path) -> None:
    zarr.open_group(str(valid_store), mode="r+")["parameters"][:, 0] = np.linspace(
        500, 600, 64, dtype=np.float32)
    policy = ValidationPolicy(overrides={"prior_ks": "warning"})
    report = validate_store(valid_store, policy=policy, fingerprint=False)
    assert report.valid and [w.check for w in report.warnings] == ["prior_ks"]
    assert report.statistics["prior_ks"]["temperature"]["p_value"] < 1e-6


def test_unknown_policy_override_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown check 'nope'"):
        ValidationPolicy(overrides={"nope": "error"})
    with pytest.raises(ValueError, match="severity 'fatal'"):
        ValidationPolicy(overrides={"prior_ks": "fatal"})


@pytest.mark.parametrize("prior", [{"kind": "uniform", "low": -1.0, "high": 3.0},
                                   {"kind": "log_uniform", "low": 0.1, "high": 10.0},
                                   {"kind": "normal", "loc": 1.0, "scale": 2.0}])
def test_streamed_ks_statistic_brackets_scipy(prior: dict) -> None:
    rng = np.random.default_rng(3)
    view = prior_view(prior)
    x = rng.normal(1.2, 2.0, 3000) if prior["kind"] == "normal" else \
        np.exp(rng.uniform(np.log(0.1), np.log(10.0), 3000)) if prior["kind"] == "log_uniform" \
        else rng.uniform(-1.0, 2.5, 3000)
    tracker = PriorKSTracker([ParameterEntry(0, "x", view)])
    for part in np.array_split(x, 7):
        tracker.update(part[:, None])
    stats_ = tracker.report(FailureCollector(ValidationPolicy()), alpha=1e-6)["x"]
    exact = stats.kstest(view.cdf(x), "uniform").statistic
    assert stats_["ks_statistic"] <= exact + 1e-12
    assert exact <= stats_["ks_statistic"] + 1 / KS_BINS + 1e-12


def test_duplicates_name_the_later_sample() -> None:
    rows = np.arange(40, dtype=np.float64).reshape(10, 4)
    rows[7] = rows[2]
    rows[9] = rows[2]
    tracker = DuplicateTracker(10)
    tracker.update(0, [rows[:6]])
    tracker.update(6, [rows[6:]])
    out = FailureCollector(ValidationPolicy())
    assert tracker.report(out) == 2
    [failure] = out.failures()
    assert failure.sample_indices == (7, 9) and failure.found == "sample 7 == sample 2"


def test_chunks_of_one_sample_and_feature_splits_warn(tmp_path: Path) -> None:
    store = write_valid_store(tmp_path / "s.zarr")
    group = zarr.open_group(str(store), mode="r+")
    data = group["blocks/spectrum/values"][...]
    del group["blocks/spectrum"]["values"]
    group["blocks/spectrum"].create_array("values", data=data, chunks=(1, 16))
    data = group["blocks/photometry/values"][...]
    del group["blocks/photometry"]["values"]
    group["blocks/photometry"].create_array("values", data=data, chunks=(64, 2))
    report = validate_store(store, fingerprint=False)
    assert report.valid
    layout = {(w.location, "feature axis" in w.message) for w in report.warnings
              if w.check == "chunk_layout"}
    assert layout == {("blocks/spectrum/values", False), ("blocks/photometry/values", True)}
