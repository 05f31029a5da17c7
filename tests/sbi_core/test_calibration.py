"""Calibration diagnostics on a Gaussian toy with a known exact posterior.

Toy (gaussian_linear-like, generated with numpy only): theta ~ N(0, 0.1 I), x = theta + N(0, 0.1 I),
exact posterior N(x / 2, 0.05 I). "Overconfident" scales the posterior sd by 0.5, "biased" shifts
the mean by +1 posterior sd in every dimension. Thresholds are the defaults of
``CalibrationThresholds`` (calibration error <= MC floor + 0.01; SBC family-wise alpha 0.01 with
Bonferroni; TARP KS alpha 0.01 and |ATC| <= 0.05); see its docstring for why.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbi_core.calibration import (
    CalibrationThresholds,
    LocalSensitivityReport,
    PosteriorPredictiveReport,
    SimulationBasedCalibrationReport,
    expected_coverage,
    local_sensitivity,
    posterior_predictive_check,
    run_calibration,
    sbc_test,
    tarp_test,
)

NAMES = ("theta_0", "theta_1")
PRIOR_VAR, NOISE_VAR, POST_VAR = 0.1, 0.1, 0.05


def gaussian_toy(n_obs=400, n_samples=500, dim=2, scale=1.0, shift=0.0, seed=0):
    """Draws and log-densities of a (possibly mis-specified) Gaussian posterior."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, np.sqrt(PRIOR_VAR), (n_obs, dim))
    x = theta + rng.normal(0.0, np.sqrt(NOISE_VAR), (n_obs, dim))
    sd = np.sqrt(POST_VAR) * scale
    mean = x / 2.0 + shift * np.sqrt(POST_VAR)
    samples = mean[:, None, :] + sd * rng.standard_normal((n_obs, n_samples, dim))

    def log_q(z, m):
        return -0.5 * np.sum(((z - m) / sd) ** 2, axis=-1) - dim * np.log(sd)

    return samples, theta, log_q(samples, mean[:, None, :]), log_q(theta, mean)


@pytest.fixture(scope="module")
def reports():
    out = {}
    for name, kwargs in {"exact": {}, "overconfident": {"scale": 0.5},
                         "biased": {"shift": 1.0}}.items():
        s, t, lps, lpt = gaussian_toy(**kwargs)
        out[name] = run_calibration(s, t, lps, lpt, parameter_names=NAMES, seed=0)
    return out


def test_exact_posterior_is_calibrated(reports):
    report = reports["exact"]
    cov = report.coverage
    assert cov.calibration_error <= cov.calibration_error_floor + 0.01
    assert report.passed, report.failures
    assert np.all(np.abs(report.pp.z_score_mean) < 0.15)
    assert np.all(np.abs(report.pp.z_score_std - 1.0) < 0.1)
    # Posterior var 0.05 against prior var 0.1: contraction 0.5.
    np.testing.assert_allclose(report.pp.contraction, 0.5, atol=0.08)


@pytest.mark.parametrize("case", ["overconfident", "biased"])
def test_miscalibrated_posterior_is_flagged_by_each_method(reports, case):
    failures = reports[case].failures
    assert not reports[case].passed
    for method in ("coverage:", "sbc:", "tarp:"):
        assert any(f.startswith(method) for f in failures), (method, failures)


def test_overconfident_coverage_is_below_nominal(reports):
    cov = reports["overconfident"].coverage
    mid = np.argmin(np.abs(cov.levels - 0.68))
    assert cov.coverage[mid] < 0.5  # 68% HPD region of a half-width posterior covers far less


def test_gaussian_approximation_without_log_prob_matches():
    s, t, lps, lpt = gaussian_toy(n_obs=300)
    exact = expected_coverage(s, t, lps, lpt)
    approx = expected_coverage(s, t)
    assert approx.density_source == "gaussian_approximation"
    assert exact.density_source == "log_prob"
    assert abs(exact.calibration_error - approx.calibration_error) < 0.01


def test_sbc_ranks_and_tarp_on_exact_posterior():
    s, t, _, _ = gaussian_toy(n_obs=300, n_samples=200)
    sbc = sbc_test(s, t)
    assert sbc.ranks.shape == (300, 2) and sbc.ranks.min() >= 0 and sbc.ranks.max() <= 200
    assert np.all(sbc.ks_p_value > 0.01)
    tarp = tarp_test(s, t, seed=3)
    assert tarp.ks_p_value > 0.01 and abs(tarp.atc) < 0.05
    # References given in physical units go through the same z-scoring as samples and truths:
    # shifting and scaling every input leaves TARP unchanged.
    refs = np.random.default_rng(1).uniform(-0.5, 0.5, t.shape)
    a = tarp_test(s, t, references=refs)
    b = tarp_test(10.0 * s + 3.0, 10.0 * t + 3.0, references=10.0 * refs + 3.0)
    np.testing.assert_allclose(a.coverage_values, b.coverage_values)


def test_report_json_round_trip_and_thresholds(reports):
    report = reports["biased"]
    text = report.to_json()
    payload = json.loads(text)
    assert payload["passed"] is False and payload["parameter_names"] == list(NAMES)
    back = SimulationBasedCalibrationReport.from_json(text)
    assert back.failures == report.failures and back.passed == report.passed
    np.testing.assert_array_equal(back.sbc.ranks, report.sbc.ranks)
    np.testing.assert_allclose(back.coverage.coverage, report.coverage.coverage)
    lenient = CalibrationThresholds(max_calibration_error_excess=1.0, sbc_alpha=0.0,
                                    tarp_alpha=0.0, max_abs_tarp_atc=0.5)
    assert report.with_thresholds(lenient).passed
    strict = CalibrationThresholds(max_calibration_error=0.0)
    assert not reports["exact"].with_thresholds(strict).passed


@pytest.mark.parametrize("bad", [{"sbc_alpha": 1.5}, {"max_abs_tarp_atc": -1.0}])
def test_thresholds_reject_bad_values(bad):
    with pytest.raises(ValueError, match="CalibrationThresholds"):
        CalibrationThresholds(**bad)
    with pytest.raises(ValueError, match="unknown CalibrationThresholds keys"):
        CalibrationThresholds.from_dict({"nope": 1})


def test_run_calibration_rejects_bad_shapes():
    s, t, lps, lpt = gaussian_toy(n_obs=20, n_samples=10)
    with pytest.raises(ValueError, match="true_parameters must have shape"):
        run_calibration(s, t[:5], parameter_names=NAMES)
    with pytest.raises(ValueError, match="parameter_names has 1 names"):
        run_calibration(s, t, parameter_names=["a"])
    with pytest.raises(ValueError, match="log_prob_samples must have shape"):
        run_calibration(s, t, lps[:, :3], lpt, parameter_names=NAMES)
    with pytest.raises(ValueError, match="both log_prob_samples and log_prob_true"):
        run_calibration(s, t, lps, None, parameter_names=NAMES)
    s[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"samples must be finite; first non-finite entry"):
        run_calibration(s, t, parameter_names=NAMES)


def linear_gaussian_posterior(n_obs, n_samples, length, sigma, seed=2):
    """y = A theta + N(0, sigma^2 I), theta ~ N(0, 0.1 I): exact posterior draws and data."""
    rng = np.random.default_rng(seed)
    design = rng.normal(size=(length, 2))
    theta = rng.normal(0.0, np.sqrt(PRIOR_VAR), (n_obs, 2))
    observed = theta @ design.T + sigma * rng.standard_normal((n_obs, length))
    cov = np.linalg.inv(np.eye(2) / PRIOR_VAR + design.T @ design / sigma**2)
    mean = observed @ design @ cov / sigma**2  # cov is symmetric
    chol = np.linalg.cholesky(cov)
    samples = mean[:, None, :] + rng.standard_normal((n_obs, n_samples, 2)) @ chol.T
    return samples, observed, design


def test_posterior_predictive_check_on_linear_gaussian_model():
    n_obs, length, sigma = 100, 20, 0.3
    s, observed, design = linear_gaussian_posterior(n_obs, 300, length, sigma)
    unc = np.full((n_obs, length), sigma)
    report = posterior_predictive_check(s, observed, lambda th: th @ design.T, unc)
    assert report.num_points == length and report.noise_added
    # Exact posterior + right noise: bands cover about nominal (slightly more: the data are
    # used twice, Gelman et al. 1996), reduced chi-square about 1.
    assert 0.66 < report.fraction_in_68 < 0.78
    assert 0.93 < report.fraction_in_95 < 0.99
    assert 0.7 < np.median(report.reduced_chi2) < 1.2
    back = PosteriorPredictiveReport.from_dict(json.loads(report.to_json()))
    np.testing.assert_allclose(back.reduced_chi2, report.reduced_chi2)
    with pytest.raises(ValueError, match="simulator must return shape"):
        posterior_predictive_check(s, observed, lambda th: th[:3] @ design.T, unc)


def test_local_sensitivity_finds_the_driving_elements():
    # Posterior mean is linear: parameter 0 depends on element 2, parameter 1 on element 5.
    weights = np.zeros((8, 2))
    weights[2, 0], weights[5, 1] = 1.0, -2.0
    values, sigma = np.zeros(8), np.full(8, 0.1)
    report = local_sensitivity(values, sigma, lambda obs: obs @ weights,
                               parameter_names=NAMES, coordinates=np.linspace(1, 2, 8),
                               baseline_std=np.array([0.1, 0.1]))
    assert report.most_influential("theta_0", k=1)[0].element_index == 2
    assert report.most_influential("theta_1", k=1)[0].element_index == 5
    np.testing.assert_allclose(report.shift_matrix()[5], [0.0, -0.2])
    np.testing.assert_allclose(report.shift_matrix(normalised=True)[5], [0.0, -2.0])
    back = LocalSensitivityReport.from_dict(json.loads(report.to_json()))
    np.testing.assert_allclose(back.shift_matrix(), report.shift_matrix())
