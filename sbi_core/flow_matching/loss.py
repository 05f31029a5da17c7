"""The conditional flow-matching loss (Lipman et al. 2023; Dax et al. 2023)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .paths import interpolate, sample_time, target_velocity

VelocityFn = Callable[[Array, Array, Array], Array]


def fm_loss(
    model: VelocityFn,
    theta: Float[Array, "B P"],
    context: Float[Array, "B C"],
    key: PRNGKeyArray,
    sigma_min: float = 0.0,
    time_prior_exponent: float = 0.0,
) -> Float[Array, ""]:
    """Monte-Carlo conditional flow-matching loss for one batch.

    ``E_{t, z} || v(x_t, t, context) - u_t ||^2`` with t from the power-law time
    prior, z ~ N(0, I) and x_t, u_t on the straight-line path. Its minimiser is the
    marginal velocity E[u_t | x_t, context], whose flow transports N(0, I) to the
    posterior (Lipman et al. 2023, Theorem 2; Dax et al. 2023, FMPE).

    Args:
        model: Velocity field ``v(theta_t (P,), t (), context (C,)) -> (P,)``.
        theta: Target parameters (in the space the flow is learned in).
        context: Conditioning vectors (observation embeddings).
        key: PRNG key for the times and the base noise.
        sigma_min: Terminal width of the conditional path.
        time_prior_exponent: alpha of the time prior.

    Returns:
        Mean over batch and parameter dimensions of the squared error; the mean
        (not the sum) over P keeps the scale, and so the learning rate, independent
        of the parameter count.
    """
    if theta.ndim != 2 or context.ndim != 2 or theta.shape[0] != context.shape[0]:
        raise ValueError(
            "fm_loss expects theta (B, P) and context (B, C) with the same B, got "
            f"theta {theta.shape} and context {context.shape}"
        )
    time_key, noise_key = jax.random.split(key)
    t = sample_time(time_key, (theta.shape[0], 1), time_prior_exponent, theta.dtype)
    noise = jax.random.normal(noise_key, theta.shape, theta.dtype)
    x_t = interpolate(noise, theta, t, sigma_min)
    u_t = target_velocity(noise, theta, sigma_min)
    v_t = jax.vmap(model)(x_t, t[:, 0], context)
    return jnp.mean((v_t - u_t) ** 2)
