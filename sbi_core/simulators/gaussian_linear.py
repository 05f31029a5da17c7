"""``gaussian_linear``: the sbibm Gaussian linear benchmark with a closed-form posterior.

Prior ``theta ~ N(0, s0^2 I)`` (default ``s0^2 = 0.1``), simulator ``x = theta + eps`` with
``eps ~ N(0, sn^2 I)`` (default ``sn^2 = 0.1``), dimension 10. One ``auxiliary`` block ``x``
without uncertainties: the noise level is fixed and known, so constant uncertainties would carry
no information. Conjugacy gives the exact posterior ``N(m, v I)`` with
``v = 1 / (1/s0^2 + 1/sn^2)`` and ``m = v x / sn^2`` (``x / 2`` and ``0.05 I`` by default) and the
evidence ``x ~ N(0, (s0^2 + sn^2) I)``.

References:
    Lueckmann et al. (2021), "Benchmarking simulation-based inference", AISTATS (sbibm).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from sbi_core.observation import ObservationModality
from sbi_core.priors import NormalPrior
from sbi_core.task import (
    NoiseModelConfig,
    ObservationBlockSpec,
    ObservationSchema,
    ParameterSpec,
    SBITask,
)

__all__ = ["GaussianLinearTask", "gaussian_linear"]

VERSION = "1.0"


class GaussianLinearTask(SBITask):
    """SBITask with the closed-form posterior and evidence of the Gaussian linear model."""

    @property
    def prior_variance(self) -> float:
        return float(self.config["prior_scale"]) ** 2

    @property
    def noise_variance(self) -> float:
        return float(self.config["noise_scale"]) ** 2

    def _x(self, observation) -> Array:
        if not hasattr(observation, "shape"):
            observation = self.normalize_observation(observation)["x"]["values"]
        return jnp.asarray(observation)

    def exact_posterior(self, x) -> tuple[Float[Array, "*batch D"], Float[Array, "D D"]]:
        """Posterior ``(mean, covariance)`` for data ``x`` (array ``(..., D)`` or observation)."""
        x = self._x(x)
        var = 1.0 / (1.0 / self.prior_variance + 1.0 / self.noise_variance)
        return var * x / self.noise_variance, var * jnp.eye(self.parameter_dim)

    def log_evidence(self, x) -> Float[Array, "*batch"]:
        """Exact ``log p(x) = sum_i log N(x_i; 0, s0^2 + sn^2)``."""
        x = self._x(x)
        var = self.prior_variance + self.noise_variance
        return jnp.sum(-0.5 * x**2 / var - 0.5 * math.log(2 * math.pi * var), axis=-1)


def gaussian_linear(dim: int = 10, prior_scale: float = math.sqrt(0.1), noise_scale: float = math.sqrt(0.1)) -> GaussianLinearTask:
    """Build the Gaussian linear task (defaults: 10-d, prior and noise variance 0.1)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"gaussian_linear: dim must be a positive integer, got {dim!r}")
    for name, value in (("prior_scale", prior_scale), ("noise_scale", noise_scale)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"gaussian_linear: {name} must be a finite positive number, got {value!r}")
    prior_scale, noise_scale = float(prior_scale), float(noise_scale)

    def simulate_one(key: PRNGKeyArray, theta: Float[Array, " D"]) -> dict:
        noise = noise_scale * jax.random.normal(key, theta.shape, theta.dtype)
        return {"x": {"values": theta + noise}}

    def log_likelihood(theta: Float[Array, " D"], observation: dict) -> Float[Array, ""]:
        r = (observation["x"]["values"] - theta) / noise_scale
        return jnp.sum(-0.5 * r**2) - dim * (math.log(noise_scale) + 0.5 * math.log(2 * math.pi))

    task: GaussianLinearTask

    def reference_sampler(key: PRNGKeyArray, observation: dict, n: int) -> Array:
        mean, cov = task.exact_posterior(observation["x"]["values"])
        z = jax.random.normal(key, (n, dim), mean.dtype)
        return mean + z * jnp.sqrt(cov[0, 0])

    task = GaussianLinearTask(
        name="gaussian_linear",
        version=VERSION,
        parameters=tuple(
            ParameterSpec(f"theta_{i}", "", NormalPrior(0.0, prior_scale)) for i in range(dim)
        ),
        observation_schema=ObservationSchema(
            (ObservationBlockSpec("x", ObservationModality.AUXILIARY, dim, False),)
        ),
        noise_model=NoiseModelConfig("observational", {"kind": "gaussian", "scale": noise_scale}),
        simulator=simulate_one,
        likelihood=log_likelihood,
        reference_sampler=reference_sampler,
        config={"dim": dim, "prior_scale": prior_scale, "noise_scale": noise_scale},
        description="x = theta + N(0, sn^2 I), theta ~ N(0, s0^2 I); exact Gaussian posterior",
    )
    return task
