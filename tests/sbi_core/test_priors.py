"""Priors: payload round trip, validation errors, densities and CDFs."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.priors import (
    LogUniformPrior,
    NormalPrior,
    UniformPrior,
    prior_from_payload,
)

PRIORS = [UniformPrior(-2.0, 3.0), LogUniformPrior(1e-3, 10.0), NormalPrior(0.5, 2.0)]


@pytest.mark.parametrize("prior", PRIORS, ids=lambda p: p.kind)
def test_payload_round_trip_is_json(prior):
    payload = prior.to_payload()
    again = prior_from_payload(json.loads(json.dumps(payload)))
    assert again == prior
    assert set(payload) == {"kind", *({"loc", "scale"} if prior.kind == "normal" else {"low", "high"})}


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"kind": "beta", "a": 1}, "unknown prior kind 'beta'"),
        ({"low": 0, "high": 1}, "no 'kind'"),
        ({"kind": "uniform", "low": 1.0, "high": 1.0}, "low < high"),
        ({"kind": "uniform", "low": 2.0, "high": 1.0}, "low < high"),
        ({"kind": "log_uniform", "low": 0.0, "high": 1.0}, "low > 0"),
        ({"kind": "log_uniform", "low": -1.0, "high": 1.0}, "low > 0"),
        ({"kind": "normal", "loc": 0.0, "scale": 0.0}, "scale > 0"),
        ({"kind": "normal", "loc": 0.0, "scale": -1.0}, "scale > 0"),
        ({"kind": "normal", "loc": float("nan"), "scale": 1.0}, "'loc' must be finite"),
        ({"kind": "uniform", "low": 0.0, "high": float("inf")}, "'high' must be finite"),
        ({"kind": "uniform", "low": "0", "high": 1.0}, "'low' must be a real number"),
        ({"kind": "uniform", "low": True, "high": 1.0}, "'low' must be a real number"),
        ({"kind": "uniform", "low": 0.0}, "missing field"),
        ({"kind": "normal", "loc": 0.0, "scale": 1.0, "low": 3}, "unexpected field"),
    ],
)
def test_payload_errors_name_the_problem(payload, match):
    with pytest.raises(ValueError, match=match):
        prior_from_payload(payload)


@pytest.mark.parametrize("prior", PRIORS, ids=lambda p: p.kind)
def test_samples_inside_support_and_density_normalised(prior):
    x = prior.sample(jax.random.key(0), (4000,))
    lo, hi = prior.support
    assert bool(jnp.all((x >= lo) & (x <= hi)))
    # Empirical CDF of the samples against the analytic CDF (uniform cube values).
    u = np.sort(np.asarray(prior.cdf(x)))
    assert np.max(np.abs(u - np.linspace(0, 1, u.size))) < 0.04
    # The density integrates to one on a fine grid (normal: +-8 sigma).
    a, b = (lo, hi) if math.isfinite(lo) else (prior.loc - 8 * prior.scale, prior.loc + 8 * prior.scale)
    grid = np.geomspace(a, b, 200001) if prior.kind == "log_uniform" else np.linspace(a, b, 200001)
    dens = np.exp(np.asarray(prior.log_prob(jnp.asarray(grid))))
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, rel=2e-3)


@pytest.mark.parametrize("prior", PRIORS, ids=lambda p: p.kind)
def test_log_prob_outside_support(prior):
    if prior.kind == "normal":
        assert bool(jnp.isfinite(prior.log_prob(jnp.float32(1e3))))
        return
    lo, hi = prior.support
    out = prior.log_prob(jnp.array([lo - 1.0, hi + 1.0]))
    assert bool(jnp.all(jnp.isneginf(out)))


@pytest.mark.parametrize("prior", PRIORS, ids=lambda p: p.kind)
def test_cdf_icdf_and_log_pdf_for_cdf(prior):
    u = jnp.linspace(0.01, 0.99, 33)
    x = prior.icdf(u)
    np.testing.assert_allclose(prior.cdf(x), u, atol=2e-6)
    grad = jax.vmap(jax.grad(prior.cdf))(x)
    np.testing.assert_allclose(jnp.log(grad), prior.log_pdf_for_cdf(x), atol=1e-4)
    np.testing.assert_allclose(prior.log_pdf_for_cdf(x), prior.log_prob(x), atol=1e-5)
    np.testing.assert_allclose(jnp.exp(prior.log_cdf(x)), u, atol=2e-6)
    np.testing.assert_allclose(jnp.exp(prior.log_sf(x)), 1 - u, atol=2e-6)


def test_normal_tails_float32():
    prior = NormalPrior(0.0, 1.0)
    x = jnp.array([-12.0, -6.0, 6.0, 12.0], jnp.float32)
    y = prior.log_cdf(x) - prior.log_sf(x)
    assert bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_allclose(prior.icdf_from_logit(y), x, rtol=1e-4)
    assert bool(jnp.all(jnp.isfinite(prior.icdf(jnp.array([0.0, 1.0])))))


def test_bounded_priors_logit_finite_at_bounds():
    for prior in PRIORS[:2]:
        lo, hi = prior.support
        x = jnp.array([lo, hi], jnp.float32)
        y = prior.log_cdf(x) - prior.log_sf(x)
        assert bool(jnp.all(jnp.isfinite(y)))
        np.testing.assert_allclose(prior.icdf_from_logit(y), x, rtol=1e-6)


def test_priors_are_hashable_static_under_jit():
    prior = UniformPrior(0.0, 2.0)
    f = jax.jit(lambda p, x: p.log_prob(x))
    assert float(f(prior, 1.0)) == pytest.approx(-math.log(2.0))
    assert len({prior, UniformPrior(0.0, 2.0)}) == 1


def test_the_prior_interface_is_abstract():
    from sbi_core.priors import AbstractPrior

    with pytest.raises(TypeError, match="abstract"):
        AbstractPrior()
