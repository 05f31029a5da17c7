"""Importance sampling against a conjugate Gaussian model with closed-form evidence."""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from sbi_core.importance_sampling import (
    ImportanceSamplingResult,
    LowImportanceSamplingEfficiencyWarning,
    effective_sample_size,
    importance_sample,
    log_evidence,
    log_importance_weights,
)

PRIOR_MEAN, PRIOR_STD, NOISE_STD = 0.0, 2.0, 0.5
OBSERVED = jnp.array([1.0, -0.7])
POST_VAR = 1.0 / (1.0 / PRIOR_STD**2 + 1.0 / NOISE_STD**2)
POST_MEAN = POST_VAR * (PRIOR_MEAN / PRIOR_STD**2 + OBSERVED / NOISE_STD**2)
EXACT_LOG_Z = float(jnp.sum(norm.logpdf(OBSERVED, PRIOR_MEAN, jnp.sqrt(PRIOR_STD**2 + NOISE_STD**2))))


def log_likelihood(theta):
    return jnp.sum(norm.logpdf(OBSERVED, theta, NOISE_STD), axis=-1)


def log_prior(theta):
    return jnp.sum(norm.logpdf(theta, PRIOR_MEAN, PRIOR_STD), axis=-1)


def gaussian_proposal(mean, std):
    def sample_and_log_prob(key, n):
        theta = mean + std * jax.random.normal(key, (n, 2))
        return theta, jnp.sum(norm.logpdf(theta, mean, std), axis=-1)

    return sample_and_log_prob


def test_exact_proposal_gives_full_ess_and_exact_evidence():
    proposal = gaussian_proposal(POST_MEAN, jnp.sqrt(POST_VAR))
    result = importance_sample(proposal, log_likelihood, log_prior, jax.random.key(0), 2000)
    assert result.effective_sample_size == pytest.approx(2000, rel=1e-4)
    assert result.sampling_efficiency == pytest.approx(1.0, rel=1e-4)
    assert result.log_evidence == pytest.approx(EXACT_LOG_Z, abs=1e-4)
    assert result.log_evidence_standard_error < 1e-4
    assert not result.low_efficiency and result.num_invalid == 0


def test_wider_proposal_evidence_within_standard_error():
    proposal = gaussian_proposal(POST_MEAN + 0.1, 2.0 * jnp.sqrt(POST_VAR))
    result = importance_sample(proposal, log_likelihood, log_prior, jax.random.key(1), 4000,
                               num_resampled=3000)
    assert 0.1 < result.sampling_efficiency < 0.9
    assert abs(result.log_evidence - EXACT_LOG_Z) < 4 * result.log_evidence_standard_error
    assert result.resampled.shape == (3000, 2)
    # The resampled draws are (asymptotically) from the exact posterior.
    se = np.sqrt(POST_VAR / result.effective_sample_size)
    assert np.all(np.abs(result.resampled.mean(0) - np.asarray(POST_MEAN)) < 5 * se + 0.02)
    np.testing.assert_allclose(result.normalized_weights.sum(), 1.0, rtol=1e-5)


def test_poor_proposal_warns_and_flags():
    proposal = gaussian_proposal(POST_MEAN + 3.0, 0.1)
    with pytest.warns(LowImportanceSamplingEfficiencyWarning, match="unreliable"):
        result = importance_sample(proposal, log_likelihood, log_prior, jax.random.key(2), 500)
    assert result.low_efficiency
    assert result.sampling_efficiency < result.efficiency_threshold == 0.01


def test_summary_is_json_serialisable():
    proposal = gaussian_proposal(POST_MEAN, jnp.sqrt(POST_VAR))
    result = importance_sample(proposal, log_likelihood, log_prior, jax.random.key(3), 64)
    summary = json.loads(json.dumps(result.summary()))
    assert summary["num_samples"] == 64 and summary["num_resampled"] == 64
    assert set(summary) >= {"effective_sample_size", "sampling_efficiency", "log_evidence",
                            "log_evidence_standard_error", "low_efficiency"}


def test_invalid_draws_get_zero_weight():
    log_w = log_importance_weights(jnp.array([0.0, jnp.nan, 1.0]), jnp.array([0.0, 0.0, -jnp.inf]),
                                   jnp.array([0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(np.isfinite(log_w), [True, False, False])
    assert float(effective_sample_size(log_w)) == pytest.approx(1.0)


def test_all_invalid_draws():
    def outside(key, n):
        return jnp.zeros((n, 2)), jnp.zeros(n)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowImportanceSamplingEfficiencyWarning)
        result = importance_sample(outside, log_likelihood, lambda th: jnp.full(th.shape[0], -jnp.inf),
                                   jax.random.key(4), 10)
    assert isinstance(result, ImportanceSamplingResult)
    assert result.effective_sample_size == 0.0 and result.resampled.shape == (0, 2)
    assert result.summary()["log_evidence"] is None


def test_log_evidence_standard_error_matches_delta_method():
    log_w = jnp.log(jnp.array([1.0, 2.0, 3.0, 4.0]))
    log_z, se = log_evidence(log_w)
    assert float(log_z) == pytest.approx(np.log(2.5))
    assert float(se) == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / (2.0 * 2.5), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"num_samples": 0}, "num_samples"), ({"num_samples": 4, "num_resampled": -1}, "num_resampled"),
     ({"num_samples": 4, "efficiency_threshold": 1.5}, "efficiency_threshold")],
)
def test_bad_arguments_raise(kwargs, match):
    proposal = gaussian_proposal(POST_MEAN, 1.0)
    with pytest.raises(ValueError, match=match):
        importance_sample(proposal, log_likelihood, log_prior, jax.random.key(0), **kwargs)


def test_wrong_shapes_raise():
    def bad(key, n):
        return jnp.zeros((n, 2)), jnp.zeros((n, 1))

    with pytest.raises(ValueError, match="log_q must have shape"):
        importance_sample(bad, log_likelihood, log_prior, jax.random.key(0), 4)


class _ExactPosterior:
    """Stub posterior that proposes from the exact gaussian_linear posterior (physical)."""

    def __init__(self, task, x, inflate=1.0):
        self.mean, cov = task.exact_posterior(jnp.asarray(x))
        self.std = float(jnp.sqrt(cov[0, 0])) * inflate

    def sample_posterior(self, observation, n, seed=None):
        from sbi_core.posterior_base import PosteriorSamples

        theta = self.mean + self.std * jax.random.normal(jax.random.PRNGKey(seed), (n, self.mean.shape[0]))
        return PosteriorSamples(np.asarray(theta), metadata={"parameter_space": "physical"})

    def log_prob(self, observation, theta):
        return np.sum(norm.logpdf(theta, self.mean, self.std), axis=-1)

    def to_physical(self, samples):
        return samples


@pytest.mark.parametrize("inflate", [1.0, 1.5])
def test_gaussian_linear_evidence_matches_closed_form(inflate):
    from sbi_core.importance_sampling import importance_sample_posterior
    from sbi_core.observation import ObservationBlock
    from sbi_core.simulators.gaussian_linear import gaussian_linear

    task = gaussian_linear(dim=3)
    x = np.array([0.4, -0.1, 0.2])
    blocks = [ObservationBlock("x", "auxiliary", x)]
    result = importance_sample_posterior(_ExactPosterior(task, x, inflate), None, task, blocks,
                                         jax.random.key(0), 3000)
    exact = float(task.log_evidence(jnp.asarray(x)))
    if inflate == 1.0:
        assert result.sampling_efficiency == pytest.approx(1.0, abs=1e-3)
        assert result.log_evidence == pytest.approx(exact, abs=1e-3)
    else:
        assert result.sampling_efficiency < 1.0
        assert abs(result.log_evidence - exact) < 4 * result.log_evidence_standard_error + 1e-3


def test_task_without_likelihood_raises():
    from sbi_core.importance_sampling import task_log_likelihood

    class NoLikelihood:
        name, likelihood = "nolik", None

    with pytest.raises(ValueError, match="exposes no likelihood"):
        task_log_likelihood(NoLikelihood(), {})


def test_single_dominant_draw_is_flagged_whatever_n():
    def one_heavy(key, n):
        theta = jnp.zeros((n, 2))
        return theta, jnp.where(jnp.arange(n) == 0, -100.0, 0.0)  # draw 0: weight e^100 larger

    with pytest.warns(LowImportanceSamplingEfficiencyWarning):
        result = importance_sample(one_heavy, lambda th: jnp.zeros(th.shape[0]),
                                   lambda th: jnp.zeros(th.shape[0]), jax.random.key(0), 50,
                                   efficiency_threshold=0.0)
    assert result.low_efficiency and result.effective_sample_size == pytest.approx(1.0)
