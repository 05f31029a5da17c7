"""Paths, time prior, loss, velocity network and option validation."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.flow_matching import (
    AdaptiveSolver,
    FourierTimeEmbedding,
    GaussianTargetVelocity,
    HutchinsonDivergence,
    VelocityMLP,
    build_divergence,
    build_solver,
    fm_loss,
    interpolate,
    sample_time,
    target_velocity,
    time_prior_log_density,
    validate_sigma_min,
    validate_time_prior_exponent,
)


def test_path_endpoints_and_velocity():
    z, theta = jnp.array([1.0, -1.0]), jnp.array([3.0, 2.0])
    np.testing.assert_allclose(interpolate(z, theta, 0.0, 0.1), z)
    np.testing.assert_allclose(interpolate(z, theta, 1.0, 0.1), theta + 0.1 * z)
    # The velocity is the exact time derivative of the path.
    d_dt = jax.jacfwd(lambda t: interpolate(z, theta, t, 0.1))(0.4)
    np.testing.assert_allclose(d_dt, target_velocity(z, theta, 0.1), rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 4.0])
def test_time_prior_moments(alpha):
    t = sample_time(jax.random.key(0), (20000,), alpha)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    # Density (1 + a) t^a has mean (1 + a) / (2 + a).
    assert abs(float(t.mean()) - (1 + alpha) / (2 + alpha)) < 0.01
    grid = jnp.linspace(1e-3, 1.0, 2001)
    integral = jnp.trapezoid(jnp.exp(time_prior_log_density(grid, alpha)), grid)
    assert abs(float(integral) - 1.0) < 1e-2


def test_fm_loss_prefers_the_optimal_field():
    mean, cov = jnp.array([1.0, -2.0]), jnp.array([[0.5, 0.2], [0.2, 0.3]])
    theta = jax.random.multivariate_normal(jax.random.key(1), mean, cov, (4096,))
    context = jnp.zeros((4096, 0))
    optimal = GaussianTargetVelocity(mean, cov, 0.0)
    zero = lambda x, t, c: jnp.zeros_like(x)  # noqa: E731
    key = jax.random.key(2)
    assert float(fm_loss(optimal, theta, context, key)) < 0.8 * float(fm_loss(zero, theta, context, key))


def test_fm_loss_trains_a_velocity_mlp():
    model = VelocityMLP(2, 3, hidden_dim=16, num_velocity_layers=2, key=jax.random.key(0))
    theta, context = jnp.ones((8, 2)), jnp.ones((8, 3))
    loss, grads = eqx.filter_value_and_grad(fm_loss)(model, theta, context, jax.random.key(1), 0.01, 1.0)
    assert jnp.isfinite(loss)
    last = grads.mlp.layers[-1]
    assert float(jnp.abs(last.weight).sum()) > 0 and float(jnp.abs(last.bias).sum()) > 0


def test_fm_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="theta \\(B, P\\)"):
        fm_loss(lambda x, t, c: x, jnp.ones((4, 2)), jnp.ones((3, 1)), jax.random.key(0))


def test_velocity_mlp_shapes_and_zero_init():
    model = VelocityMLP(3, 5, hidden_dim=8, num_velocity_layers=2, key=jax.random.key(0))
    out = model(jnp.ones(3), jnp.asarray(0.5), jnp.ones(5))
    assert out.shape == (3,)
    np.testing.assert_array_equal(out, 0.0)  # zero output layer: identity flow at init
    assert FourierTimeEmbedding(4)(jnp.asarray(0.25)).shape == (9,)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"parameter_dim": 0, "context_dim": 1}, "parameter_dim"),
        ({"parameter_dim": 2, "context_dim": -1}, "context_dim"),
        ({"parameter_dim": 2, "context_dim": 1, "hidden_dim": 0}, "hidden_dim"),
        ({"parameter_dim": 2, "context_dim": 1, "num_velocity_layers": -1}, "num_velocity_layers"),
    ],
)
def test_velocity_mlp_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VelocityMLP(key=jax.random.key(0), **kwargs)


def test_unknown_solver_lists_known_ones():
    with pytest.raises(ValueError, match="unknown solver 'euler'; known solvers: adaptive, midpoint, rk4"):
        build_solver("euler")


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
@pytest.mark.parametrize("name", ["midpoint", "rk4"])
def test_bad_step_counts_raise(name, steps):
    with pytest.raises(ValueError, match="integration_steps must be a positive integer"):
        build_solver(name, integration_steps=steps)


@pytest.mark.parametrize("kwargs,match", [({"rtol": 0.0}, "rtol"), ({"atol": -1.0}, "atol"),
                                          ({"max_steps": 0}, "max_steps")])
def test_bad_adaptive_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveSolver(**kwargs)


def test_divergence_options():
    with pytest.raises(ValueError, match="unknown divergence 'trace'; known: exact, hutchinson"):
        build_divergence("trace")
    with pytest.raises(ValueError, match="num_probes"):
        HutchinsonDivergence(num_probes=0)
    with pytest.raises(ValueError, match="probe distribution"):
        HutchinsonDivergence(distribution="uniform")
    with pytest.raises(ValueError, match="needs a PRNG key"):
        HutchinsonDivergence().draw_probes(None, 2, jnp.float32)


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan")])
def test_sigma_min_validation(value):
    with pytest.raises(ValueError, match="sigma_min"):
        validate_sigma_min(value)


@pytest.mark.parametrize("value", [-1.0, -2.0, float("nan"), float("inf")])
def test_time_prior_exponent_validation(value):
    with pytest.raises(ValueError, match="time_prior_exponent"):
        validate_time_prior_exponent(value)


@pytest.mark.parametrize("space", ["physical", "unconstrained", "cube"])
def test_coordinates_round_trip_with_exact_log_jacobians(space):
    from sbi_core.flow_matching.coordinates import Standardization, from_model, to_model

    std = Standardization((0.5, -1.0), (2.0, 0.25))
    y = jax.random.normal(jax.random.key(0), (6, 2))
    x, log_q = from_model(y, jnp.zeros(6), space, std)
    y_back, log_det = to_model(x, space, std)
    np.testing.assert_allclose(y_back, y, atol=1e-4)
    # log q_x(x) = log q_y(y) + log|dy/dx|: the two conversions are exact inverses.
    np.testing.assert_allclose(log_q, log_det, atol=1e-4)
    jac = jax.vmap(jax.jacfwd(lambda xi: to_model(xi[None], space, std)[0][0]))(x)
    np.testing.assert_allclose(log_det, jnp.linalg.slogdet(jac)[1], atol=1e-4)


def test_standardization_fit_and_payload():
    from sbi_core.flow_matching.coordinates import Standardization

    std = Standardization.fit(np.array([[0.0, 1.0], [2.0, 1.0]]))
    assert std.shift == (1.0, 1.0) and std.scale[0] == 1.0 and std.scale[1] == pytest.approx(1e-6)
    assert Standardization.from_payload(std.to_payload(), 2) == std
    assert Standardization.from_payload(None, 2) == Standardization.identity(2)
    with pytest.raises(ValueError, match="non-finite"):
        Standardization.fit(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="expected 3 shifts"):
        Standardization.from_payload(std.to_payload(), 3)
