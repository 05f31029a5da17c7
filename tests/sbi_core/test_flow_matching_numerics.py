"""Flow-matching numerics against a Gaussian target with a closed-form velocity.

For theta ~ N(mu, Sigma) the optimal OT-path field is affine, so its flow map is
affine and both the t = 1 marginal N(mu, Sigma + sigma_min^2 I) and its density
are known exactly (see sbi_core.flow_matching.analytic).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal

from sbi_core.flow_matching import (
    GaussianTargetVelocity,
    HutchinsonDivergence,
    build_solver,
    log_prob,
    push_forward,
    sample,
    sample_and_log_prob,
)
from sbi_core.flow_matching.divergence import ExactDivergence

MEAN = jnp.array([1.0, -2.0])
COV = jnp.array([[0.5, 0.2], [0.2, 0.3]])
SIGMA_MIN = 0.05
CONTEXT = jnp.zeros(0)
SOLVER_NAMES = ("midpoint", "rk4", "adaptive")


@pytest.fixture(scope="module")
def field():
    return GaussianTargetVelocity(MEAN, COV, SIGMA_MIN)


@pytest.fixture(scope="module")
def draws(field):
    """Samples from every solver from the same base noise."""
    out = {}
    for name in SOLVER_NAMES:
        solver = build_solver(name)
        out[name] = eqx.filter_jit(sample)(field, jax.random.key(0), CONTEXT, 1000, 2, solver)
    return out


def test_solvers_agree_on_the_same_noise(draws):
    reference = draws["adaptive"]
    # The adaptive solver meets rtol = atol = 1e-5 per step, not globally.
    assert float(jnp.max(jnp.abs(draws["rk4"] - reference))) < 1e-3
    # Midpoint with 32 steps is second order: a looser but still tight tolerance.
    assert float(jnp.max(jnp.abs(draws["midpoint"] - reference))) < 5e-3


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_sample_moments_match_exact_marginal(draws, field, name):
    x = np.asarray(draws[name])
    target_cov = np.asarray(field.terminal_covariance())
    standard_error = np.sqrt(np.diag(target_cov) / x.shape[0])
    assert np.all(np.abs(x.mean(0) - np.asarray(MEAN)) < 4 * standard_error)
    assert np.allclose(np.cov(x.T), target_cov, atol=0.06)


@pytest.mark.parametrize("name,atol", [("midpoint", 2e-3), ("rk4", 1e-4), ("adaptive", 1e-4)])
def test_log_prob_matches_exact_density(draws, field, name, atol):
    points = draws["adaptive"][:16]
    solver = build_solver(name)
    lp = eqx.filter_jit(jax.vmap(lambda th: log_prob(field, th, CONTEXT, solver)))(points)
    exact = multivariate_normal.logpdf(points, MEAN, field.terminal_covariance())
    np.testing.assert_allclose(lp, exact, atol=atol)


def test_sample_and_log_prob_is_consistent_with_log_prob(field):
    solver = build_solver("rk4")
    noise = jax.random.normal(jax.random.key(1), (8, 2))

    @eqx.filter_jit
    def run(noise):
        theta, lq = jax.vmap(lambda z: sample_and_log_prob(field, z, CONTEXT, solver))(noise)
        pushed = jax.vmap(lambda z: push_forward(field, z, CONTEXT, solver))(noise)
        back = jax.vmap(lambda th: log_prob(field, th, CONTEXT, solver))(theta)
        return theta, lq, pushed, back

    theta, lq, pushed, back = run(noise)
    np.testing.assert_allclose(theta, pushed, atol=1e-5)
    np.testing.assert_allclose(lq, back, atol=1e-4)
    exact = multivariate_normal.logpdf(theta, MEAN, field.terminal_covariance())
    np.testing.assert_allclose(lq, exact, atol=1e-4)


def test_hutchinson_divergence_is_unbiased_pointwise():
    matrix = jax.random.normal(jax.random.key(2), (4, 4))
    field = lambda x, t, c: matrix @ x + t  # noqa: E731  constant Jacobian
    x = jnp.ones(4)
    estimator = HutchinsonDivergence(num_probes=4000)
    probes = estimator.draw_probes(jax.random.key(3), 4, jnp.float32)
    v_h, div_h = estimator.velocity_and_divergence(field, x, 0.3, CONTEXT, probes)
    v_e, div_e = ExactDivergence().velocity_and_divergence(field, x, 0.3, CONTEXT, None)
    np.testing.assert_allclose(v_h, v_e, rtol=1e-6)
    # Rademacher variance is 2 * sum_{i != j} J_ij^2 (symmetrised) / K.
    sym = 0.5 * (matrix + matrix.T)
    std = float(jnp.sqrt(2 * (jnp.sum(sym**2) - jnp.sum(jnp.diag(sym) ** 2)) / 4000))
    assert abs(float(div_h - div_e)) < 5 * std


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_log_prob_is_unbiased(field, distribution):
    solver = build_solver("rk4", integration_steps=16)
    estimator = HutchinsonDivergence(num_probes=1, distribution=distribution)
    theta = jnp.array([0.5, -1.5])
    keys = jax.random.split(jax.random.key(4), 256)
    fn = jax.vmap(lambda k: log_prob(field, theta, CONTEXT, solver, estimator, k))
    estimates = eqx.filter_jit(fn)(keys)
    exact = eqx.filter_jit(log_prob)(field, theta, CONTEXT, solver)
    sem = float(jnp.std(estimates) / jnp.sqrt(estimates.shape[0]))
    assert float(jnp.std(estimates)) > 0  # the estimator is genuinely random
    assert abs(float(jnp.mean(estimates) - exact)) < 5 * sem + 1e-5
