"""Sampling and log-density of a flow-matching model via its probability-flow ODE.

Sampling pushes base noise z ~ N(0, I) from t = 0 to t = 1 along
``d theta/dt = v(theta, t, context)``. The density follows the instantaneous
change of variables (Chen et al. 2018; Grathwohl et al. 2019):

    d log p_t(theta_t) / dt = -div v(theta_t, t, context),

so ``log q(theta) = log N(z; 0, I) - int_0^1 div v dt`` where z is theta carried
back to t = 0. :func:`log_prob` integrates (theta, int div) jointly from t = 1 to
0; :func:`sample_and_log_prob` integrates the same system forward from noise, so
samples and their densities come from one trajectory. All functions act on one
sample; vmap outside.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .divergence import AbstractDivergence, ExactDivergence
from .solvers import AbstractODESolver

VelocityFn = Callable[[Array, Array, Array], Array]


def standard_normal_log_prob(z: Float[Array, " P"]) -> Float[Array, ""]:
    """log N(z; 0, I)."""
    return -0.5 * jnp.sum(z**2) - 0.5 * z.shape[-1] * jnp.log(2.0 * jnp.pi)


def push_forward(
    field: VelocityFn,
    noise: Float[Array, " P"],
    context: Float[Array, " C"],
    solver: AbstractODESolver,
) -> Float[Array, " P"]:
    """Transport one base draw from t = 0 to a parameter sample at t = 1."""

    def rhs(t, theta):
        return field(theta, jnp.asarray(t, theta.dtype), context)

    return solver.integrate(rhs, noise, 0.0, 1.0)


def _augmented_rhs(field, context, divergence, probes):
    """Right-hand side of the joint (theta, int div v) system."""

    def rhs(t, state):
        theta, _ = state
        velocity, div = divergence.velocity_and_divergence(
            field, theta, jnp.asarray(t, theta.dtype), context, probes
        )
        return velocity, div

    return rhs


def log_prob(
    field: VelocityFn,
    theta: Float[Array, " P"],
    context: Float[Array, " C"],
    solver: AbstractODESolver,
    divergence: AbstractDivergence | None = None,
    key: PRNGKeyArray | None = None,
) -> Float[Array, ""]:
    """Log-density of the flow's t = 1 marginal at ``theta``.

    Args:
        field: Velocity field ``v(theta_t, t, context)``.
        theta: Point at which to evaluate the density.
        context: Conditioning vector.
        solver: ODE solver (any registry entry).
        divergence: Exact (default) or Hutchinson estimator.
        key: PRNG key for Hutchinson probes (unused by the exact divergence).

    Returns:
        ``log N(z; 0, I) - int_0^1 div v dt`` with z = theta carried back to t = 0.
        With Hutchinson's estimator this is an unbiased estimate of that quantity
        (not of the density itself, by Jensen's inequality).
    """
    divergence = ExactDivergence() if divergence is None else divergence
    probes = divergence.draw_probes(key, theta.shape[-1], theta.dtype)
    rhs = _augmented_rhs(field, context, divergence, probes)
    start = (theta, jnp.zeros((), theta.dtype))
    # Backwards from t=1 to t=0 the accumulator ends at -int_0^1 div v dt.
    noise, neg_integral = solver.integrate(rhs, start, 1.0, 0.0)
    return standard_normal_log_prob(noise) + neg_integral


def sample_and_log_prob(
    field: VelocityFn,
    noise: Float[Array, " P"],
    context: Float[Array, " C"],
    solver: AbstractODESolver,
    divergence: AbstractDivergence | None = None,
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, " P"], Float[Array, ""]]:
    """Push one base draw forward and return it with its log-density.

    One forward solve of the joint system gives both the sample and
    ``log q = log N(z) - int_0^1 div v dt`` along the very trajectory that
    produced it (the cheapest input for importance sampling).

    Args:
        field: Velocity field.
        noise: Base draw z ~ N(0, I).
        context: Conditioning vector.
        solver: ODE solver.
        divergence: Exact (default) or Hutchinson estimator.
        key: PRNG key for Hutchinson probes.

    Returns:
        ``(theta, log q(theta))``.
    """
    divergence = ExactDivergence() if divergence is None else divergence
    probes = divergence.draw_probes(key, noise.shape[-1], noise.dtype)
    rhs = _augmented_rhs(field, context, divergence, probes)
    theta, integral = solver.integrate(rhs, (noise, jnp.zeros((), noise.dtype)), 0.0, 1.0)
    return theta, standard_normal_log_prob(noise) - integral


def sample(
    field: VelocityFn,
    key: PRNGKeyArray,
    context: Float[Array, " C"],
    num_samples: int,
    parameter_dim: int,
    solver: AbstractODESolver,
) -> Float[Array, "N P"]:
    """Draw ``num_samples`` parameter samples for one context (vmapped solves)."""
    noise = jax.random.normal(key, (num_samples, parameter_dim))
    return jax.vmap(lambda z: push_forward(field, z, context, solver))(noise)
