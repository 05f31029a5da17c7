"""Hypothesis fuzz of the whole pyfunc ``predict`` (flows/pyfunc_model.py) on a small trained model.

``tests/flows/test_units.py`` fuzzes the request parser alone; here arbitrary JSON-like tables,
mappings and scalars, with arbitrary params, go through ``SbiPosteriorModel.predict`` end to end
(parse, encode, sample, convert to physical units). Every call must either return the documented
output (one column per parameter plus ``observation_index``, ``num_samples`` finite rows per
observation) or raise ``MlflowException`` with ``INVALID_PARAMETER_VALUE`` (HTTP 400) and a
message: never another exception, which the scoring server would turn into a 500.

The model is a 2-parameter ``gaussian_linear`` posterior trained for 3 epochs once per module.
``MAX_EXAMPLES`` bounds the run; valid requests ask for at most 20 samples so only a few shapes
are ever compiled.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("mlflow")
#: Training the model once costs ~25 s on the shared 2-core machine (the fuzz itself ~8 s).
pytestmark = pytest.mark.slow

MAX_EXAMPLES = 100
TINY = {"flow_family": "affine", "embedding_dim": 4, "hidden_dim": 8, "num_coupling_layers": 2,
        "num_epochs": 3, "batch_size": 64, "early_stopping_patience": None}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from flows.pyfunc_model import POSTERIOR_ARTIFACT, SbiPosteriorModel
    from sbi_core.posterior import ConditionalFlowPosterior
    from tests.sbi_core.posterior_helpers import gaussian_linear_store

    base = tmp_path_factory.mktemp("pyfunc-fuzz")
    store = gaussian_linear_store(base / "gl.zarr", n=256)
    posterior = ConditionalFlowPosterior(parameter_dim=store.parameter_dim, **TINY)
    posterior.fit(store)
    posterior.save(str(base / "posterior"))
    pyfunc = SbiPosteriorModel()
    pyfunc.load_context(SimpleNamespace(artifacts={POSTERIOR_ARTIFACT: str(base / "posterior")}))
    return pyfunc


#: Values JSON can carry that are easy to mishandle: integers beyond float64 and int64, numeric
#: strings (Unicode digits, double signs, more digits than int() accepts).
_edges = st.sampled_from([10**400, -10**400, 2**63, 2**64, -2**63 - 1, "1.5", "nan", "-inf", "1e400", "",
                          " 2 ", "--5", "\u00b2", "\u0663", "9" * 5000, "0x10"])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=4), _edges)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8)
#: Cells: mostly near-valid (2 numbers) so that many examples reach sampling, plus anything JSON.
_cells = st.one_of(st.lists(st.floats(-5, 5), min_size=2, max_size=2),
                   st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), _edges),
                            min_size=1, max_size=3),
                   _json)
_columns = st.sampled_from(["x", "x", "x", "x_uncertainties", "y", "", "0"])


@st.composite
def _tables(draw):
    rows = draw(st.integers(0, 3))
    names = draw(st.lists(_columns, max_size=3, unique=True))
    frame = pd.DataFrame({name: pd.Series([draw(_cells) for _ in range(rows)], dtype=object) for name in names},
                         index=range(rows))
    return pd.concat([frame, frame], axis=1) if names and draw(st.booleans()) else frame  # duplicate columns


#: Well-formed observations, so that the params (and the sampling path) get fuzzed too.
_valid_tables = st.lists(st.lists(st.floats(-3, 3), min_size=2, max_size=2), min_size=1, max_size=3).map(
    lambda rows: pd.DataFrame({"x": pd.Series(rows, dtype=object)}))

_inputs = st.one_of(_valid_tables, _valid_tables, _valid_tables, _tables(), _tables(),
                    st.dictionaries(_columns, st.one_of(_cells, st.lists(_cells, max_size=3)), max_size=3),
                    _json)
_params = st.one_of(st.none(), _json, st.fixed_dictionaries(
    {}, optional={"num_samples": st.integers(1, 20), "seed": st.integers(0, 2**32 - 1)}), st.dictionaries(
    st.sampled_from(["num_samples", "seed", "other"]),
    st.one_of(st.integers(1, 20), st.integers(0, 2**32 - 1), _scalars), max_size=3))


def _expected_rows(model_input, params) -> int:
    from flows.pyfunc_io import parse_params

    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(dict(model_input))
    return len(frame) * parse_params(params)[0]  # predict succeeded, so both parse


def _one(cell) -> pd.DataFrame:
    return pd.DataFrame({"x": pd.Series([cell], dtype=object)})


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          database=None)
@given(model_input=_inputs, params=_params)
# What the fuzz found (each a 500 before the fix in flows/pyfunc_io.py), pinned so every run checks it:
@example(model_input=_one([10**400, 1.0]), params=None)  # OverflowError from numpy
@example(model_input=_one([0.0, 1.0]), params=[1, 2])  # TypeError: params not a mapping
@example(model_input=_one([0.0, 1.0]), params={"seed": "--5"})  # ValueError naming no param
@example(model_input=_one([0.0, 1.0]), params={"num_samples": "9" * 5000})  # int() digit limit
def test_fuzz_predict_returns_samples_or_a_400(model, model_input, params):
    from mlflow.exceptions import MlflowException

    try:
        result = model.predict(None, model_input, params=params)
    except MlflowException as exc:
        assert exc.error_code == "INVALID_PARAMETER_VALUE" and exc.get_http_status_code() == 400, exc
        assert str(exc.message).strip()
        return
    assert isinstance(result, pd.DataFrame)
    assert list(result.columns) == ["theta_0", "theta_1", "observation_index"]
    assert len(result) == _expected_rows(model_input, params)
    assert np.isfinite(result[["theta_0", "theta_1"]].to_numpy()).all()


def test_a_valid_request_is_answered(model):
    """Guards the fuzz against a model that refuses everything."""
    frame = pd.DataFrame({"x": [[0.1, -0.2], [0.3, 0.0]]})
    result = model.predict(None, frame, params={"num_samples": 5, "seed": 3})
    assert len(result) == 10 and sorted(set(result["observation_index"])) == [0, 1]
    assert math.isfinite(float(result["theta_0"].mean()))
