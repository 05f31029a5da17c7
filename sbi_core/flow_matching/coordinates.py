"""Model coordinates of the flow-matching posterior and their exact Jacobians.

The velocity field works in *standardised flow coordinates* y = (u - shift) / scale,
where u is the flow space: physical values for ``parameter_space='physical'`` and
logit-of-CDF (unconstrained) values otherwise. ``cube`` posteriors are modelled in
unconstrained space and mapped through the sigmoid, because an ODE sample has no
reason to respect the cube's [0, 1] bounds. Standardising puts the target on the
scale of the N(0, I) base, which keeps the straight-line paths well conditioned.
Densities carry the exact log-Jacobian of every step, so ``log_prob`` and sampling
agree in the configured space.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

def flow_space_for(parameter_space: str) -> str:
    """The space the flow models for a configured parameter space."""
    return "physical" if parameter_space == "physical" else "unconstrained"


@dataclass(frozen=True)
class Standardization:
    """Per-dimension affine standardisation of flow-space values (hashable, static)."""

    shift: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def identity(cls, dim: int) -> Standardization:
        """No-op standardisation for ``dim`` parameters."""
        return cls((0.0,) * dim, (1.0,) * dim)

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardization:
        """Mean and (floored) std of flow-space training targets.

        The same statistics as the conditional-flow posterior's
        (:func:`sbi_core.posterior_data.standardization_from`).

        Raises:
            ValueError: If any training target is non-finite.
        """
        from sbi_core.posterior_data import standardization_from

        return cls(*standardization_from(values))

    def to_payload(self) -> dict[str, list[float]]:
        """JSON form."""
        return {"shift": list(self.shift), "scale": list(self.scale)}

    @classmethod
    def from_payload(cls, payload, dim: int) -> Standardization:
        """Rebuild from :meth:`to_payload` (identity when absent)."""
        if not payload:
            return cls.identity(dim)
        shift, scale = tuple(map(float, payload["shift"])), tuple(map(float, payload["scale"]))
        if len(shift) != dim or len(scale) != dim or min(scale) <= 0:
            raise ValueError(
                f"parameter standardization: expected {dim} shifts and {dim} positive scales, "
                f"got {len(shift)} and {len(scale)}"
            )
        return cls(shift, scale)

    @property
    def log_scale_sum(self) -> float:
        """sum_i log scale_i, the log-Jacobian of unstandardising."""
        return float(np.sum(np.log(self.scale)))


def to_model(
    x: Float[Array, "n P"], parameter_space: str, standardization: Standardization
) -> tuple[Float[Array, "n P"], Float[Array, " n"]]:
    """Configured-space values -> model coordinates y and log|dy/dx|."""
    log_det = jnp.zeros(x.shape[:-1], x.dtype)
    if parameter_space == "cube":
        finfo = jnp.finfo(x.dtype)
        c = jnp.clip(x, finfo.tiny, 1.0 - finfo.epsneg)
        log_c, log_1mc = jnp.log(c), jnp.log1p(-c)
        x, log_det = log_c - log_1mc, jnp.sum(-log_c - log_1mc, axis=-1)
    shift = jnp.asarray(standardization.shift, x.dtype)
    scale = jnp.asarray(standardization.scale, x.dtype)
    return (x - shift) / scale, log_det - standardization.log_scale_sum


def from_model(
    y: Float[Array, "n P"], log_q_y: Float[Array, " n"] | None, parameter_space: str,
    standardization: Standardization,
) -> tuple[Float[Array, "n P"], Float[Array, " n"] | None]:
    """Model coordinates -> configured-space values, with the log-density converted."""
    u = y * jnp.asarray(standardization.scale, y.dtype) + jnp.asarray(standardization.shift, y.dtype)
    log_q = None if log_q_y is None else log_q_y - standardization.log_scale_sum
    if parameter_space == "cube":
        if log_q is not None:
            log_q = log_q - jnp.sum(jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u), axis=-1)
        u = jax.nn.sigmoid(u)
    return u, log_q
