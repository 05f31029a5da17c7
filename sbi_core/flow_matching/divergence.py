"""Divergence of a velocity field: exact (Jacobian trace) or Hutchinson's estimator.

The instantaneous change of variables (Chen et al. 2018, "Neural Ordinary
Differential Equations", Theorem 1) needs ``div v = tr(dv/dtheta)`` along each
trajectory. For the parameter dimensions of retrieval problems (P of order 10)
the exact trace from one forward-mode Jacobian (P JVPs) is cheap; Hutchinson's
estimator ``E[eps^T J eps] = tr(J)`` for probes with ``E[eps eps^T] = I``
(Hutchinson 1990; Grathwohl et al. 2019, FFJORD) costs one JVP per probe and is
offered for larger P. Probes are drawn once per trajectory and held fixed along
the ODE, as in FFJORD: the integrated estimate stays unbiased because the
trajectory itself does not depend on the probes.
"""

from __future__ import annotations

import abc
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

VelocityFn = Callable[[Array, Array, Array], Array]


class AbstractDivergence(eqx.Module):
    """Returns the velocity and (an estimate of) its divergence in one pass."""

    @abc.abstractmethod
    def draw_probes(self, key: PRNGKeyArray | None, dim: int, dtype) -> Array | None:
        """Per-trajectory random probes (``None`` when none are needed)."""
        raise NotImplementedError

    @abc.abstractmethod
    def velocity_and_divergence(
        self,
        field: VelocityFn,
        theta_t: Float[Array, " P"],
        t: Float[Array, ""],
        context: Float[Array, " C"],
        probes: Array | None,
    ) -> tuple[Float[Array, " P"], Float[Array, ""]]:
        """Return ``(v(theta_t, t, context), div v)``."""
        raise NotImplementedError


class ExactDivergence(AbstractDivergence):
    """Trace of the forward-mode Jacobian (P JVPs per evaluation)."""

    def draw_probes(self, key, dim, dtype):
        del key, dim, dtype
        return None

    def velocity_and_divergence(self, field, theta_t, t, context, probes):
        del probes

        def with_aux(x):
            v = field(x, t, context)
            return v, v

        jacobian, velocity = jax.jacfwd(with_aux, has_aux=True)(theta_t)
        return velocity, jnp.trace(jacobian)


class HutchinsonDivergence(AbstractDivergence):
    """Hutchinson's trace estimator with Rademacher or Gaussian probes.

    Attributes:
        num_probes: Probes averaged per evaluation (variance falls as 1/K).
        distribution: ``'rademacher'`` (lowest variance for a fixed Jacobian) or
            ``'gaussian'``.
    """

    num_probes: int = eqx.field(static=True, default=1)
    distribution: str = eqx.field(static=True, default="rademacher")

    def __check_init__(self):
        if isinstance(self.num_probes, bool) or not isinstance(self.num_probes, int) \
                or self.num_probes < 1:
            raise ValueError(f"num_probes must be a positive integer, got {self.num_probes!r}")
        if self.distribution not in ("rademacher", "gaussian"):
            raise ValueError(
                f"unknown probe distribution {self.distribution!r}; "
                "known: 'gaussian', 'rademacher'"
            )

    def draw_probes(self, key, dim, dtype):
        if key is None:
            raise ValueError("Hutchinson's divergence estimator needs a PRNG key")
        shape = (self.num_probes, dim)
        if self.distribution == "gaussian":
            return jax.random.normal(key, shape, dtype)
        return jax.random.rademacher(key, shape, dtype)

    def velocity_and_divergence(self, field, theta_t, t, context, probes):
        def field_at(x):
            return field(x, t, context)

        velocity, jvp_fn = jax.linearize(field_at, theta_t)
        # eps^T J eps per probe; linearize shares the primal pass across probes.
        estimates = jax.vmap(lambda eps: jnp.dot(eps, jvp_fn(eps)))(probes)
        return velocity, jnp.mean(estimates)


DIVERGENCES: dict[str, type[AbstractDivergence]] = {
    "exact": ExactDivergence,
    "hutchinson": HutchinsonDivergence,
}


def build_divergence(name: str, *, num_probes: int = 1) -> AbstractDivergence:
    """Build a divergence estimator by name (``'exact'`` or ``'hutchinson'``).

    Raises:
        ValueError: Unknown name; the message lists the known ones.
    """
    if name not in DIVERGENCES:
        raise ValueError(
            f"unknown divergence {name!r}; known: {', '.join(sorted(DIVERGENCES))}"
        )
    if name == "hutchinson":
        return HutchinsonDivergence(num_probes=num_probes)
    return ExactDivergence()
