"""Closed-form marginal velocity for a Gaussian target (tests and baselines).

If theta ~ N(mu, Sigma) and z ~ N(0, I) are independent, x_t and the conditional
velocity u_t = theta - (1 - sigma_min) z are jointly Gaussian, so the optimal
flow-matching field E[u_t | x_t = x] (Lipman et al. 2023, eq. 8) is affine in x:

    a_t  = 1 - (1 - sigma_min) t
    v(x, t) = mu + (t Sigma - (1 - sigma_min) a_t I) (a_t^2 I + t^2 Sigma)^{-1} (x - t mu).

Its flow maps N(0, I) exactly onto N(mu, Sigma + sigma_min^2 I) at t = 1, which gives
an exact reference for the sampler and for the change-of-variables density.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .vector_field import AbstractVelocityField


class GaussianTargetVelocity(AbstractVelocityField):
    """Optimal OT-path velocity for a Gaussian target; ignores the context.

    Attributes:
        mean: Target mean mu (P,).
        covariance: Target covariance Sigma (P, P), symmetric positive definite.
        sigma_min: Terminal width of the conditional path.
    """

    mean: Float[Array, " P"]
    covariance: Float[Array, "P P"]
    sigma_min: float = eqx.field(static=True, default=0.0)

    def __call__(self, theta_t, t, context):
        del context
        dim = self.mean.shape[0]
        eye = jnp.eye(dim, dtype=theta_t.dtype)
        a_t = 1.0 - (1.0 - self.sigma_min) * t
        cross = t * self.covariance - (1.0 - self.sigma_min) * a_t * eye
        marginal = a_t**2 * eye + t**2 * self.covariance
        return self.mean + cross @ jnp.linalg.solve(marginal, theta_t - t * self.mean)

    def terminal_covariance(self) -> Float[Array, "P P"]:
        """Covariance of the exact t = 1 marginal: Sigma + sigma_min^2 I."""
        return self.covariance + self.sigma_min**2 * jnp.eye(self.mean.shape[0])
