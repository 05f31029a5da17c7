"""Fast unit tests of the plain pieces of flows/ (no Prefect server, no MLflow store, no JAX fit)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from flows.options import PromotionRule, RetrainOptions, config_hash, default_data_dir
from flows.pyfunc_io import (
    BlockColumn,
    bucket,
    RequestError,
    example_frame,
    parse_frame,
    parse_params,
    samples_frame,
)
from flows.registry import decide_promotion, registry_lock
from sbi_ops.commands.pipeline import split_config

COLUMNS = [BlockColumn("spectrum", 3, "spectrum", True), BlockColumn("x", 2, "auxiliary", False)]


def _frame(**overrides):
    data = {"spectrum": [[1.0, 2.0, 3.0]], "spectrum_uncertainties": [[0.1, 0.1, 0.1]], "x": [[0.0, 1.0]]}
    data.update(overrides)
    return pd.DataFrame(data)


def test_retrain_options_need_exactly_one_source(tmp_path):
    assert RetrainOptions(store=tmp_path).store == tmp_path
    assert RetrainOptions(task="two_moons", num_simulations=100).task == "two_moons"
    for bad in ({}, {"store": tmp_path, "task": "two_moons", "num_simulations": 100},
                {"task": "two_moons"}, {"store": tmp_path, "num_simulations": 100}):
        with pytest.raises(ValidationError):
            RetrainOptions(**bad)


def test_retrain_options_refuse_unknown_keys_and_estimator_options(tmp_path):
    with pytest.raises(ValidationError, match="extra"):
        RetrainOptions(store=tmp_path, stor=tmp_path)
    with pytest.raises(ValidationError, match="num_epoch"):
        RetrainOptions(store=tmp_path, estimator_config={"num_epoch": 3})
    with pytest.raises(ValidationError, match="sbc_alph"):
        RetrainOptions(store=tmp_path, diagnostics={"thresholds": {"sbc_alph": 0.1}})


def test_config_hash_resolves_defaults_first():
    assert config_hash({}) == config_hash({"num_epochs": 200})
    assert config_hash({}) != config_hash({"num_epochs": 3})


def test_data_dir_is_absolute_and_overridable(tmp_path, monkeypatch):
    monkeypatch.delenv("SBI_OPS_DATA_DIR", raising=False)
    assert default_data_dir().is_absolute()
    monkeypatch.setenv("SBI_OPS_DATA_DIR", str(tmp_path / "d"))
    assert default_data_dir() == (tmp_path / "d").resolve()


def test_parse_frame_accepts_the_contract():
    rows = parse_frame(_frame(), COLUMNS)
    assert rows[0]["spectrum"]["uncertainties"].tolist() == [0.1, 0.1, 0.1]
    assert "uncertainties" not in rows[0]["x"]


@pytest.mark.parametrize("overrides, message", [
    ({"spectrum": [[1.0, 2.0]]}, "expected 3 values"),
    ({"x": [[float("nan"), 0.0]]}, "non-finite"),
    ({"x": [[np.inf, 0.0]]}, "non-finite"),
    ({"x": [["a", "b"]]}, "list of 2 numbers"),
    ({"x": ["text"]}, "list of 2 numbers"),
    ({"spectrum_uncertainties": [[0.1, 0.0, 0.1]]}, "must be > 0"),
    ({"extra": [[1.0]]}, "unknown \\['extra'\\]"),
])
def test_parse_frame_names_the_problem(overrides, message):
    with pytest.raises(RequestError, match=message):
        parse_frame(_frame(**overrides), COLUMNS)


def test_parse_frame_missing_column_and_row_limit(monkeypatch):
    with pytest.raises(RequestError, match="missing \\['x'\\]"):
        parse_frame(_frame().drop(columns=["x"]), COLUMNS)
    monkeypatch.setenv("SBI_OPS_MAX_OBSERVATIONS", "2")
    with pytest.raises(RequestError, match="1 to 2 observations"):
        parse_frame(pd.concat([_frame()] * 3, ignore_index=True), COLUMNS)


def test_params_are_checked_and_capped(monkeypatch):
    assert parse_params(None, default_seed=7) == (1000, 7)
    assert parse_params({"num_samples": None, "seed": None}, default_seed=7) == (1000, 7)
    assert parse_params({"num_samples": "5", "seed": 3.0}) == (5, 3)
    monkeypatch.setenv("SBI_OPS_MAX_NUM_SAMPLES", "50")
    assert parse_params({"seed": 1}) == (50, 1)  # the default follows the cap
    for params, message in (({"num_samples": 51}, "between 1 and 50"), ({"num_samples": 0}, "between 1"),
                            ({"num_samples": True}, "integer"), ({"seed": -1}, "seed"),
                            ({"seed": 2**40}, "seed"), ({"num_samples": 1.5}, "integer")):
        with pytest.raises(RequestError, match=message):
            parse_params(params)


def test_shapes_are_bucketed_to_powers_of_two():
    assert [bucket(n) for n in (1, 8, 9, 500, 1000)] == [8, 8, 16, 512, 1024]


def test_samples_frame_and_example():
    frame = samples_frame(np.arange(12, dtype=float).reshape(2, 3, 2), ["a", "b"])
    assert list(frame.columns) == ["a", "b", "observation_index"]
    assert frame["observation_index"].tolist() == [0, 0, 0, 1, 1, 1]
    example = example_frame(COLUMNS)
    assert list(example.columns) == ["spectrum", "spectrum_uncertainties", "x"]
    assert parse_frame(example, COLUMNS)


def test_promotion_rule():
    rule = PromotionRule(min_nll_improvement=0.0, calibration_tolerance=0.01)
    new = {"heldout_nll": 1.0, "calibration_error": 0.05}
    assert decide_promotion(new, None, rule).promote
    better = decide_promotion(new, {"heldout_nll": 1.2, "calibration_error": 0.045}, rule, "3")
    assert better.promote and "1.0000 < champion v3's 1.2000" in better.reason
    worse_nll = decide_promotion(new, {"heldout_nll": 0.9, "calibration_error": 0.05}, rule, "3")
    assert not worse_nll.promote and "does not beat" in worse_nll.reason
    worse_cal = decide_promotion(new, {"heldout_nll": 1.2, "calibration_error": 0.03}, rule, "3")
    assert not worse_cal.promote and "exceeds" in worse_cal.reason
    assert not decide_promotion({"heldout_nll": float("inf"), "calibration_error": 0.0}, None, rule).promote
    assert not decide_promotion(new, {}, rule, "1").promote


def test_registry_lock_is_exclusive(tmp_path):
    inside, overlaps = [], []

    def worker():
        with registry_lock(tmp_path, "m/odel"):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [1, 1, 1, 1]
    assert (tmp_path / "registry-m_odel.lock").exists()


def test_pipeline_config_sections():
    est, diag, promo = split_config({"num_epochs": 3, "diagnostics": {"num_samples": 20}},
                                    {"diagnostics.thresholds.sbc_alpha": 0.001, "batch_size": 8,
                                     "promotion.calibration_tolerance": 0.02})
    assert est == {"num_epochs": 3, "batch_size": 8}
    assert diag == {"num_samples": 20, "thresholds": {"sbc_alpha": 0.001}}
    assert promo == {"calibration_tolerance": 0.02}


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_cells = st.one_of(st.none(), st.text(max_size=5), st.floats(allow_nan=True, allow_infinity=True),
                   st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                                      st.text(max_size=3), st.none()), max_size=5))


@settings(max_examples=150, deadline=None)
@given(columns=st.dictionaries(st.sampled_from(["spectrum", "spectrum_uncertainties", "x", "y"]),
                               st.lists(_cells, min_size=0, max_size=3), max_size=4),
       params=st.dictionaries(st.sampled_from(["num_samples", "seed", "other"]),
                              st.one_of(st.integers(), st.floats(), st.text(max_size=4), st.none(),
                                        st.booleans()), max_size=3))
def test_fuzz_request_parsing_only_raises_request_errors(columns, params):
    """Any table and params: parsed, or a RequestError with a message; never anything else."""
    try:
        frame = pd.DataFrame(columns)
    except ValueError:  # uneven columns: pandas refuses; the model sees the raw mapping
        frame = columns
    for call in (lambda: parse_frame(frame, COLUMNS), lambda: parse_params(params)):
        try:
            call()
        except RequestError as exc:
            assert str(exc)
