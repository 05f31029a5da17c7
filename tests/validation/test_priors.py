"""The validator's numpy prior views agree with sbi_core.priors (support and CDF)."""

from __future__ import annotations

import numpy as np
import pytest

from validation.priors import prior_view

PAYLOADS = [{"kind": "uniform", "low": -2.0, "high": 5.0},
            {"kind": "log_uniform", "low": 0.01, "high": 100.0},
            {"kind": "normal", "loc": 1.5, "scale": 0.3}]


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p["kind"] for p in PAYLOADS])
def test_matches_sbi_core(payload: dict) -> None:
    priors = pytest.importorskip("sbi_core.priors")
    ours, theirs = prior_view(payload), priors.prior_from_payload(payload)
    np.testing.assert_allclose(ours.support, tuple(float(s) for s in theirs.support))
    low, high = ours.support
    x = np.linspace(max(low, -1.0), min(high, 4.0), 9)
    np.testing.assert_allclose(ours.cdf(x), np.asarray(theirs.cdf(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("payload, field", [
    ({"kind": "beta"}, "kind"), ({"kind": "uniform", "low": 1.0}, "high"),
    ({"kind": "log_uniform", "low": 0.0, "high": 1.0}, "low"),
    ({"kind": "normal", "loc": 0.0, "scale": -1.0}, "scale"), ("uniform", "JSON object")])
def test_bad_payload_names_the_field(payload: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        prior_view(payload)
