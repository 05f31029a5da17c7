"""Parameter spaces: round trips, exact log-dets against autodiff, density conversion."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.priors import LogUniformPrior, NormalPrior, UniformPrior
from sbi_core.spaces import PARAMETER_SPACES, ParameterTransform

TRANSFORM = ParameterTransform(
    (UniformPrior(-2.0, 3.0), LogUniformPrior(1e-3, 10.0), NormalPrior(0.5, 2.0))
)
PAIRS = list(itertools.permutations(PARAMETER_SPACES, 2))


def _points(space, n=16, seed=0):
    return TRANSFORM.sample_prior(jax.random.key(seed), n, space)


@pytest.mark.parametrize("source, target", PAIRS)
def test_round_trip(source, target):
    x = _points(source)
    y, ld = TRANSFORM.transform_and_log_det(x, source, target)
    back, ld_back = TRANSFORM.transform_and_log_det(y, target, source)
    np.testing.assert_allclose(back, x, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(ld + ld_back, 0.0, atol=2e-3)
    assert ld.shape == (16,)


@pytest.mark.parametrize("source, target", PAIRS)
def test_log_det_equals_autodiff(source, target):
    x = _points(source, n=8, seed=1)
    _, ld = TRANSFORM.transform_and_log_det(x, source, target)
    jac = jax.vmap(jax.jacobian(lambda v: TRANSFORM.transform(v, source, target)))(x)
    sign, logabs = jnp.linalg.slogdet(jac)
    assert bool(jnp.all(sign != 0))
    np.testing.assert_allclose(ld, logabs, rtol=1e-4, atol=2e-3)


def test_batch_axes_and_jit():
    x = _points("physical", n=12).reshape(3, 4, 3)
    f = jax.jit(lambda v: TRANSFORM.transform_and_log_det(v, "physical", "unconstrained"))
    y, ld = f(x)
    assert y.shape == (3, 4, 3) and ld.shape == (3, 4)
    np.testing.assert_allclose(TRANSFORM.transform(y, "unconstrained", "physical"), x, rtol=2e-4)


@pytest.mark.parametrize("space", PARAMETER_SPACES)
def test_log_prior_consistent_across_spaces(space):
    x = _points("physical", n=32, seed=2)
    expected = TRANSFORM.convert_log_density(
        TRANSFORM.log_prior(x, "physical"), x, "physical", space
    )
    y = TRANSFORM.transform(x, "physical", space)
    np.testing.assert_allclose(TRANSFORM.log_prior(y, space), expected, atol=2e-3)


def test_log_prior_cube_outside_is_minus_inf():
    assert bool(jnp.isneginf(TRANSFORM.log_prior(jnp.array([0.5, 1.5, 0.2]), "cube")))


def test_float32_extremes_stay_finite():
    x = jnp.array(
        [[-2.0, 1e-3, -25.0], [3.0, 10.0, 26.0], [-2.0 + 1e-6, 10.0 - 1e-5, 0.5]], jnp.float32
    )
    for target in ("cube", "unconstrained"):
        y, ld = TRANSFORM.transform_and_log_det(x, "physical", target)
        assert bool(jnp.all(jnp.isfinite(y))) and bool(jnp.all(jnp.isfinite(ld))), target
    y = TRANSFORM.transform(x, "physical", "unconstrained")
    np.testing.assert_allclose(TRANSFORM.transform(y, "unconstrained", "physical"), x, rtol=1e-4)
    cube_edges = jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    for target in ("physical", "unconstrained"):
        y, ld = TRANSFORM.transform_and_log_det(cube_edges, "cube", target)
        assert bool(jnp.all(jnp.isfinite(y))) and bool(jnp.all(jnp.isfinite(ld))), target


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown parameter space 'latent'"):
        TRANSFORM.transform(jnp.zeros(3), "latent", "cube")
    with pytest.raises(ValueError, match="expected last axis of length 3"):
        TRANSFORM.transform(jnp.zeros((2, 4)), "physical", "cube")
    with pytest.raises(TypeError, match="priors\\[0\\]"):
        ParameterTransform(("uniform",))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def _random_prior(draw):
    kind = draw(st.sampled_from(["uniform", "log_uniform", "normal"]))
    a = draw(st.floats(-1e3, 1e3)) if kind != "log_uniform" else draw(st.floats(1e-6, 1e2))
    width = draw(st.floats(1e-2, 1e3))
    if kind == "uniform":
        return UniformPrior(a, a + width)
    if kind == "log_uniform":
        return LogUniformPrior(a, a * (1.0 + width))
    return NormalPrior(a, width)


@settings(max_examples=15, deadline=None)
@given(prior=_random_prior(), u=st.floats(0.001, 0.999))
def test_property_random_priors_round_trip_and_log_det(prior, u):
    transform = ParameterTransform((prior,))
    x = transform.transform(jnp.array([u]), "cube", "physical")
    y, ld = transform.transform_and_log_det(x, "physical", "unconstrained")
    back = transform.transform(y, "unconstrained", "physical")
    np.testing.assert_allclose(back, x, rtol=1e-3, atol=1e-3 * float(jnp.abs(x).max() + 1e-3))
    grad = jax.grad(lambda v: transform.transform(v, "physical", "unconstrained")[0])(x)
    np.testing.assert_allclose(ld, jnp.log(jnp.abs(grad[0])), atol=5e-3 + 1e-3 * abs(float(ld)))
