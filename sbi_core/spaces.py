"""Parameter spaces: ``physical`` <-> ``cube`` <-> ``unconstrained`` with exact log-Jacobians.

* ``physical``: prior units (what the simulator takes and every report shows).
* ``cube``: ``u_i = F_i(x_i)``, the prior CDF of each parameter, in ``[0, 1]``. The prior is
  uniform on the unit cube.
* ``unconstrained``: ``y_i = logit(u_i)``. The prior is a standard logistic per dimension.

All maps are elementwise per parameter, so the Jacobian is diagonal and
``log|det dy/dx| = sum_i log|dy_i/dx_i|`` exactly. Densities convert with
``log q_target(y) = log q_source(x) - log|det dy/dx|``.

Float32 policy (documented clipping, see also ``sbi_core.priors``):

* physical -> unconstrained never goes through ``u``: it is ``log_cdf(x) - log_sf(x)``, so
  values far in a normal prior's tail keep their precision.
* unconstrained -> physical uses :meth:`AbstractPrior.icdf_from_logit` (the smaller tail
  probability only), never rounding ``u`` to 0 or 1.
* where a cube value enters ``log u`` or ``log(1 - u)`` (cube -> unconstrained) it is clipped to
  ``[tiny, 1 - epsneg]`` of its dtype: only the exact end points 0 and 1 move.
* the normal prior's ``icdf`` clips ``u`` the same way (``u = 0`` or ``1`` would map to -+inf).

References:
    Papamakarios et al. (2021), "Normalizing flows for probabilistic modeling and inference",
    JMLR 22(57), section 2.1 (change of variables).
"""

from __future__ import annotations

from typing import Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from sbi_core.priors import AbstractPrior

__all__ = ["ParameterSpaceName", "PARAMETER_SPACES", "ParameterTransform", "check_space_name",
           "transform_and_log_det_compiled"]

ParameterSpaceName = Literal["physical", "cube", "unconstrained"]
PARAMETER_SPACES: tuple[str, ...] = get_args(ParameterSpaceName)


def check_space_name(space: str, *, argument: str = "space") -> str:
    """Return ``space`` if it names a parameter space, else raise ValueError naming it."""
    if space not in PARAMETER_SPACES:
        raise ValueError(
            f"unknown parameter space {space!r} for argument {argument!r}; "
            f"expected one of {list(PARAMETER_SPACES)}"
        )
    return space


def _clip_open_unit(u: Array) -> Array:
    """Move exact 0 and 1 to the nearest representable interior values (see module docs)."""
    finfo = jnp.finfo(u.dtype)
    return jnp.clip(u, finfo.tiny, 1.0 - finfo.epsneg)


class ParameterTransform(eqx.Module):
    """Elementwise maps between the three parameter spaces of a task's priors.

    Vectorised over any leading batch axes; the last axis has one entry per prior. All
    methods are pure JAX and jit-able.

    Attributes:
        priors: one prior per parameter, in column order.
    """

    priors: tuple[AbstractPrior, ...] = eqx.field(static=True)

    def __init__(self, priors):
        priors = tuple(priors)
        for i, p in enumerate(priors):
            if not isinstance(p, AbstractPrior):
                raise TypeError(f"priors[{i}] must be an AbstractPrior, got {type(p).__name__}")
        if not priors:
            raise ValueError("ParameterTransform needs at least one prior, got none")
        self.priors = priors

    @property
    def dim(self) -> int:
        return len(self.priors)

    def _columns(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"parameter array has shape {x.shape}; expected last axis of length {self.dim} "
                f"(one column per parameter)"
            )
        return x

    def _per_column(self, fn, x: Array) -> tuple[Array, Array]:
        """Apply ``fn(prior, column) -> (out, logdet)`` per parameter; stack and sum log-dets."""
        outs, lds = zip(*(fn(p, x[..., i]) for i, p in enumerate(self.priors)))
        return jnp.stack(outs, axis=-1), sum(lds[1:], lds[0])

    @staticmethod
    def _step(prior: AbstractPrior, x: Array, source: str, target: str) -> tuple[Array, Array]:
        """One parameter, one (source, target) pair: value and log|d target / d source|."""
        if source == "physical" and target == "cube":
            return prior.cdf(x), prior.log_pdf_for_cdf(x)
        if source == "cube" and target == "physical":
            y = prior.icdf(x)
            return y, -prior.log_pdf_for_cdf(y)
        if source == "cube" and target == "unconstrained":
            u = _clip_open_unit(x)
            log_u, log_1mu = jnp.log(u), jnp.log1p(-u)
            return log_u - log_1mu, -log_u - log_1mu
        if source == "unconstrained" and target == "cube":
            return jax.nn.sigmoid(x), jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x)
        if source == "physical" and target == "unconstrained":
            log_u, log_1mu = prior.log_cdf(x), prior.log_sf(x)
            return log_u - log_1mu, prior.log_pdf_for_cdf(x) - log_u - log_1mu
        if source == "unconstrained" and target == "physical":
            y = prior.icdf_from_logit(x)
            ld = jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x) - prior.log_pdf_for_cdf(y)
            return y, ld
        raise ValueError(f"no transform from {source!r} to {target!r}")  # pragma: no cover

    def transform_and_log_det(
        self, x: Float[ArrayLike, "*batch P"], source: str, target: str
    ) -> tuple[Float[Array, "*batch P"], Float[Array, "*batch"]]:
        """Map ``x`` from ``source`` to ``target`` space.

        Args:
            x: values in ``source`` space, last axis = parameters.
            source: one of ``physical``, ``cube``, ``unconstrained``.
            target: one of ``physical``, ``cube``, ``unconstrained``.

        Returns:
            ``(y, log|det dy/dx|)`` with the log-determinant summed over parameters.
        """
        check_space_name(source, argument="source")
        check_space_name(target, argument="target")
        x = self._columns(x)
        if source == target:
            return x, jnp.zeros(x.shape[:-1], x.dtype)
        return self._per_column(lambda p, c: self._step(p, c, source, target), x)

    def transform(
        self, x: Float[ArrayLike, "*batch P"], source: str, target: str
    ) -> Float[Array, "*batch P"]:
        """Map ``x`` from ``source`` to ``target`` space (see :meth:`transform_and_log_det`)."""
        return self.transform_and_log_det(x, source, target)[0]

    def convert_log_density(
        self,
        log_q_source: Float[ArrayLike, "*batch"],
        x_source: Float[ArrayLike, "*batch P"],
        source: str,
        target: str,
    ) -> Float[Array, "*batch"]:
        """Express a log-density evaluated at ``x_source`` in ``target`` space.

        ``log q_target(y) = log q_source(x) - log|det dy/dx|`` with ``y = T(x)``.
        """
        _, log_det = self.transform_and_log_det(x_source, source, target)
        return jnp.asarray(log_q_source) - log_det

    def log_prior(self, x: Float[ArrayLike, "*batch P"], space: str) -> Float[Array, "*batch"]:
        """The prior's log-density expressed in ``space`` at ``x`` (a point of that space).

        ``physical``: sum of the priors' ``log_prob``; ``cube``: 0 inside ``[0, 1]^P`` and
        ``-inf`` outside; ``unconstrained``: standard logistic density per dimension.
        """
        check_space_name(space)
        x = self._columns(x)
        if space == "physical":
            return sum(p.log_prob(x[..., i]) for i, p in enumerate(self.priors))
        if space == "cube":
            inside = jnp.all((x >= 0) & (x <= 1), axis=-1)
            return jnp.where(inside, 0.0, -jnp.inf).astype(x.dtype)
        return jnp.sum(jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x), axis=-1)

    def sample_prior(self, key, n: int, space: str = "physical") -> Float[Array, "n P"]:
        """Draw ``n`` prior samples in ``space``."""
        keys = jax.random.split(key, self.dim)
        x = jnp.stack([p.sample(k, (n,)) for k, p in zip(keys, self.priors)], axis=-1)
        return self.transform(x, "physical", space)


@eqx.filter_jit
def _transform_and_log_det_kernel(transform: ParameterTransform, x: Array, source: str, target: str):
    return transform.transform_and_log_det(x, source, target)


def transform_and_log_det_compiled(
    transform: ParameterTransform, x: Float[ArrayLike, "*batch P"], source: str, target: str
) -> tuple[Float[Array, "*batch P"], Float[Array, "*batch"]]:
    """:meth:`ParameterTransform.transform_and_log_det` as one compiled call.

    For host-side callers (``to_physical``, training-data preparation): run eagerly, the
    transform dispatches (and, for every new shape, compiles) one small XLA kernel per
    elementwise op and parameter column -- 1.4 s for 9,000 two-parameter rows on a loaded 2-core
    machine, ~5 ms for 10,000 draws once warm. Compiled, it is one fused kernel per (priors,
    shape, spaces), cached for the process. Values agree with the eager path to float32
    rounding (identical for uniform priors; fused exp/log may differ by a few ulp).
    """
    check_space_name(source, argument="source")
    check_space_name(target, argument="target")
    return _transform_and_log_det_kernel(transform, x, source, target)
