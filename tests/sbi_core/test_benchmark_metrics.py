"""Benchmark metrics (C2ST, JSD, interval overlap) and the dynesty reference retrieval."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from sbi_core.benchmark import (
    RetrievalBenchmarkCase,
    RetrievalBenchmarkSuite,
    c2st,
    credible_interval_overlap,
    gaussian_log_likelihood,
    jensen_shannon_millinats,
    nested_sampling_reference,
    task_reference,
    wall_time_ratio,
)

MEAN = np.array([0.3, -0.2])
COV = np.array([[0.04, 0.01], [0.01, 0.02]])
BOX = 2.0  # uniform prior on [-2, 2]^2: Z = 1 / 16 (the Gaussian is far from the edges)


def normal(n, shift=0.0, scale=1.0, seed=0):
    return shift + scale * np.random.default_rng(seed).normal(size=(n, 2))


def test_c2st_identical_and_disjoint():
    assert abs(c2st(normal(800, seed=1), normal(800, seed=2)) - 0.5) < 0.06
    assert c2st(normal(800, seed=1), normal(800, shift=6.0, seed=2)) > 0.97


def test_jsd_same_small_different_large():
    same = jensen_shannon_millinats(normal(2000, seed=1), normal(2000, seed=2))
    assert np.all(same < 5.0)
    far = jensen_shannon_millinats(normal(2000, seed=1), normal(2000, shift=6.0, seed=2))
    assert np.all(far > 600.0) and np.all(far <= 1000 * np.log(2) + 1e-9)
    wider = jensen_shannon_millinats(normal(2000, seed=1), normal(2000, scale=2.0, seed=2),
                                     method="histogram", n_bins=40)
    assert np.all(wider > 50.0)
    with pytest.raises(ValueError, match="method must be"):
        jensen_shannon_millinats(normal(10), normal(10), method="nope")


def test_interval_overlap_and_wall_time_ratio():
    np.testing.assert_allclose(credible_interval_overlap(normal(4000, seed=1),
                                                         normal(4000, seed=2)), 1.0, atol=0.08)
    np.testing.assert_array_equal(credible_interval_overlap(normal(500), normal(500, 10.0)), 0.0)
    assert wall_time_ratio(100.0, 0.5) == 200.0
    with pytest.raises(ValueError, match="amortized_seconds > 0"):
        wall_time_ratio(1.0, 0.0)


def test_metrics_reject_mismatched_dimensions():
    with pytest.raises(ValueError, match="reference has P=3"):
        c2st(normal(10), np.zeros((10, 3)))


@pytest.fixture(scope="module")
def gaussian_reference():
    return nested_sampling_reference(gaussian_log_likelihood(MEAN, COV),
                                     lambda u: -BOX + 2 * BOX * u, 2, nlive=200, seed=0)


def test_dynesty_reference_recovers_gaussian(gaussian_reference):
    ref = gaussian_reference
    assert ref.samples.shape[1] == 2 and ref.samples.shape[0] > 500
    np.testing.assert_allclose(ref.samples.mean(axis=0), MEAN, atol=0.03)
    np.testing.assert_allclose(np.cov(ref.samples.T), COV, atol=0.008)
    # Closed form: Z = (1 / 16) * (Gaussian mass inside the box ~ 1).
    expected = -np.log((2 * BOX) ** 2)
    assert abs(ref.log_evidence - expected) < max(3 * ref.log_evidence_error, 0.3)
    assert ref.wall_time_s > 0 and ref.num_likelihood_calls > 0


def test_dynesty_reference_is_reproducible():
    kwargs = dict(nlive=50, seed=3, dlogz=1.0)
    like, pt = gaussian_log_likelihood(MEAN, COV), (lambda u: -BOX + 2 * BOX * u)
    a = nested_sampling_reference(like, pt, 2, **kwargs)
    b = nested_sampling_reference(like, pt, 2, **kwargs)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert a.log_evidence == b.log_evidence


@dataclass
class _Spec:
    prior: object


@dataclass
class _GaussianTask:
    """Duck-typed SBITask: uniform priors, Gaussian likelihood of the mean of the data."""

    name: str = "toy"
    has_likelihood: bool = True
    parameter_dim: int = 2

    @property
    def parameters(self):
        from sbi_core.priors import UniformPrior

        return tuple(_Spec(UniformPrior(-BOX, BOX)) for _ in range(2))

    def log_likelihood(self, theta, observation):
        import jax.numpy as jnp

        d = theta - jnp.asarray(observation["spectrum"]["values"])
        return -0.5 * jnp.sum(d**2 / jnp.asarray(observation["spectrum"]["uncertainties"]) ** 2)


def test_suite_compares_amortized_draws_with_task_reference():
    observation = {"spectrum": {"values": np.array([0.5, -0.5]), "uncertainties": np.array([0.1, 0.2])}}
    suite = RetrievalBenchmarkSuite(("a", "b"), (RetrievalBenchmarkCase("obs-0", observation),))
    suite = suite.run_references(lambda case: task_reference(_GaussianTask(), case.observation,
                                                             nlive=60, seed=0, dlogz=1.0))
    good = lambda case: np.array([0.5, -0.5]) + np.array([0.1, 0.2]) * normal(1000, seed=5)  # noqa: E731
    comparison = suite.compare(good)
    metrics = comparison.metrics[0]
    assert metrics.c2st < 0.62 and max(metrics.jsd_millinats.values()) < 30.0
    assert metrics.wall_time_ratio > 1.0
    table = comparison.table()
    assert "JSD a [mnat]" in table and "obs-0" in table
    payload = json.loads(comparison.to_json())
    assert payload["summary"]["num_cases"] == 1
    biased = comparison_for_shift(suite, 1.0)
    assert biased.metrics[0].c2st > 0.9
    with pytest.raises(ValueError, match="case names must be unique"):
        RetrievalBenchmarkSuite(("a",), (suite.cases[0], suite.cases[0]))


def comparison_for_shift(suite, shift):
    draws = {"obs-0": np.array([0.5 + shift, -0.5]) + np.array([0.1, 0.2]) * normal(1000, seed=6)}
    return suite.compare(draws, {"obs-0": 0.01})


class _ExactPosterior:
    """Stand-in for a trained gaussian_linear posterior (physical space, exact N(x/2, 0.05 I))."""

    def encode_observation(self, blocks):
        return np.asarray(blocks[0].values) / 2.0

    def sample_posterior(self, observation, n_samples, seed=None):
        from types import SimpleNamespace

        rng = np.random.default_rng(seed)
        draws = observation + np.sqrt(0.05) * rng.standard_normal((n_samples, observation.size))
        return SimpleNamespace(samples=draws)

    def to_physical(self, samples):
        return samples


@pytest.mark.slow
def test_benchmark_posterior_against_dynesty_on_gaussian_linear(tmp_path):
    from sbi_core.benchmark import benchmark_posterior
    from sbi_core.dataset import simulate_to_store
    from sbi_core.simulators import get_task

    task = get_task("gaussian_linear", dim=2)
    store = simulate_to_store(task, 300, str(tmp_path / "gl.zarr"), progress=False)
    comparison = benchmark_posterior(_ExactPosterior(), store, task, num_cases=1,
                                     num_samples=2000, nlive=100, output=tmp_path / "bench")
    metrics = comparison.metrics[0]
    assert metrics.c2st < 0.6 and max(metrics.jsd_millinats.values()) < 20.0
    assert min(metrics.interval_overlap.values()) > 0.8
    assert (tmp_path / "bench" / "benchmark.md").read_text().startswith("| case |")
    assert (tmp_path / "bench" / f"corner_{metrics.case_name}.png").exists()


def test_jsd_handles_a_marginal_collapsed_to_one_value():
    """An unconverged reference can collapse onto one draw: a point mass, not a LinAlgError."""
    rng = np.random.default_rng(0)
    collapsed = np.full((500, 2), 0.3)
    spread = rng.normal(size=(500, 2))
    for method in ("kde", "histogram"):
        same = jensen_shannon_millinats(collapsed, collapsed, method=method)
        different = jensen_shannon_millinats(spread, collapsed, method=method)
        assert np.all(np.isfinite(same)) and np.allclose(same, 0.0)
        assert np.all(different > 300.0)


def test_nautilus_reference_recovers_posterior_and_evidence():
    sigma, mean = np.array([0.1, 0.2]), np.array([0.5, -0.5])
    observation = {"spectrum": {"values": mean, "uncertainties": sigma}}
    ref = task_reference(_GaussianTask(), observation, sampler="nautilus", nlive=200, seed=1, n_eff=3000)
    assert ref.metadata["sampler"] == "nautilus.Sampler" and ref.metadata["converged"]
    assert ref.samples.shape[1] == 2 and ref.samples.shape[0] > 1000
    np.testing.assert_allclose(ref.samples.mean(axis=0), mean, atol=0.02)
    np.testing.assert_allclose(ref.samples.std(axis=0), sigma, rtol=0.1)
    # Unnormalised Gaussian likelihood under a uniform box prior: Z = prod sqrt(2 pi) sigma / (2 BOX).
    log_z = float(np.sum(np.log(np.sqrt(2 * np.pi) * sigma / (2 * BOX))))
    assert abs(ref.log_evidence - log_z) < 0.1
    assert ref.num_likelihood_calls > 0 and ref.wall_time_s > 0


def test_task_reference_rejects_unknown_sampler_and_reports_capped_dynesty_runs():
    observation = {"spectrum": {"values": np.array([0.5, -0.5]), "uncertainties": np.array([0.1, 0.2])}}
    with pytest.raises(ValueError, match="unknown reference sampler 'emcee'"):
        task_reference(_GaussianTask(), observation, sampler="emcee")
    with pytest.warns(UserWarning, match="stopped short"):
        capped = task_reference(_GaussianTask(), observation, nlive=30, seed=0, maxcall=200)
    assert capped.metadata["converged"] is False and capped.metadata["maxcall"] == 200
