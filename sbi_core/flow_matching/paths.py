"""Straight-line (optimal-transport) probability paths and the FMPE time prior.

Conventions (Lipman et al. 2023, eq. 20-23; Dax et al. 2023, FMPE): t = 0 is the
standard-normal base, t = 1 is the data. For one pair (z, theta)

    x_t = (1 - (1 - sigma_min) t) z + t theta,
    u_t = d x_t / dt = theta - (1 - sigma_min) z,

so at t = 1 the path ends in N(theta, sigma_min^2 I): ``sigma_min`` keeps the
terminal conditional density non-degenerate. ``sigma_min = 0`` gives the plain
rectified-flow interpolation of the reference implementation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def validate_sigma_min(sigma_min: float) -> float:
    """Return ``sigma_min`` as float, raising if it is not in [0, 1)."""
    value = float(sigma_min)
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise ValueError(f"sigma_min must lie in [0, 1), got {sigma_min!r}")
    return value


def validate_time_prior_exponent(exponent: float) -> float:
    """Return the time-prior exponent as float, raising unless it is > -1."""
    value = float(exponent)
    if not (math.isfinite(value) and value > -1.0):
        raise ValueError(
            f"time_prior_exponent must be a finite number > -1, got {exponent!r}"
        )
    return value


def interpolate(
    noise: Float[Array, "*batch P"],
    theta: Float[Array, "*batch P"],
    t: Float[Array, "*batch 1"] | Float[Array, ""],
    sigma_min: float = 0.0,
) -> Float[Array, "*batch P"]:
    """Point x_t on the conditional OT path from ``noise`` (t=0) to ``theta`` (t=1).

    Args:
        noise: Base draws z ~ N(0, I).
        theta: Target parameters.
        t: Times, broadcastable against the parameter axis.
        sigma_min: Terminal standard deviation of the conditional path.

    Returns:
        ``(1 - (1 - sigma_min) t) z + t theta``.
    """
    return (1.0 - (1.0 - sigma_min) * t) * noise + t * theta


def target_velocity(
    noise: Float[Array, "*batch P"],
    theta: Float[Array, "*batch P"],
    sigma_min: float = 0.0,
) -> Float[Array, "*batch P"]:
    """Conditional velocity u_t(x_t | theta) of the OT path (constant in t)."""
    return theta - (1.0 - sigma_min) * noise


def sample_time(
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    exponent: float = 0.0,
    dtype=jnp.float32,
) -> Float[Array, "..."]:
    """Draw training times from the FMPE power-law time prior.

    Follows the FMPE reference implementation (Dax et al. 2023, DINGO): with
    u ~ U(0, 1), ``t = u ** (1 / (1 + exponent))``, i.e. the density is
    ``(1 + exponent) t**exponent`` on [0, 1]. ``exponent = 0`` is uniform
    (Lipman et al. 2023); positive values put more weight near t = 1, where the
    field must resolve the narrow posterior. The FMPE paper writes this prior
    as "p(t) proportional to t^(1/(1+alpha))", the exponent of the sampling
    transform; see docs/decisions.md (Time prior exponent).

    Args:
        key: PRNG key.
        shape: Output shape.
        exponent: alpha > -1.
        dtype: Floating dtype of the result.

    Returns:
        Times in [0, 1).
    """
    u = jax.random.uniform(key, shape, dtype=dtype)
    return u ** (1.0 / (1.0 + exponent))


def time_prior_log_density(
    t: Float[Array, "..."], exponent: float = 0.0
) -> Float[Array, "..."]:
    """Log density of :func:`sample_time`'s distribution: log((1+a) t^a)."""
    return jnp.log1p(exponent) + exponent * jnp.log(t)
