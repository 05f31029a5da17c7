"""Conditional normalising flows q(x | context) built from the hand-written bijections.

A flow is ``num_layers`` identical layers (a family transform followed by a coordinate
reversal) stored stacked and applied with ``lax.scan`` (:class:`~sbi_core.bijections.Repeated`),
optionally followed by a learned elementwise affine, then a fixed base distribution.
``forward`` maps parameters to latent (density direction), ``inverse`` latent to parameters.

References:
    Papamakarios et al. (2021), "Normalizing Flows for Probabilistic Modeling and Inference",
    JMLR; the per-family references live in the bijection modules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from sbi_core.bijections import (
    AbstractBijection, AffineCoupling, Chain, ElementwiseAffine, MaskedAutoregressive,
    NeuralAutoregressive, Permutation, Repeated, SplineCoupling)
from sbi_core.bijections.base import check_float, check_int

#: Degrees of freedom of the ``student_t`` base (fixed: heavy enough tails to absorb outliers,
#: finite variance; a learned value would make saved models depend on one more parameter).
STUDENT_T_DOF = 5.0
BASE_DISTRIBUTIONS = ("gaussian", "student_t")


def _spline_layer(key, dim, context_dim, cfg: FlowConfig) -> AbstractBijection:
    return SplineCoupling(key, dim, context_dim, cfg.hidden_dim, cfg.conditioner_depth,
                          cfg.num_spline_bins, cfg.spline_bound)


def _affine_layer(key, dim, context_dim, cfg: FlowConfig) -> AbstractBijection:
    return AffineCoupling(key, dim, context_dim, cfg.hidden_dim, cfg.conditioner_depth)


def _autoregressive_layer(key, dim, context_dim, cfg: FlowConfig) -> AbstractBijection:
    return MaskedAutoregressive(key, dim, context_dim, cfg.hidden_dim, cfg.conditioner_depth,
                                cfg.autoregressive_transform_units)


def _neural_autoregressive_layer(key, dim, context_dim, cfg: FlowConfig) -> AbstractBijection:
    return NeuralAutoregressive(
        key, dim, context_dim, cfg.hidden_dim, cfg.conditioner_depth,
        cfg.autoregressive_transform_units, cfg.neural_autoregressive_min_slope,
        cfg.neural_autoregressive_min_residual, cfg.neural_autoregressive_inverse_bisection_steps,
        cfg.neural_autoregressive_shift)


#: Flow families by name: ``(key, dim, context_dim, config) -> one layer's transform``.
FLOW_FAMILIES: dict[str, Callable[..., AbstractBijection]] = {
    "spline": _spline_layer,
    "affine": _affine_layer,
    "autoregressive": _autoregressive_layer,
    "neural_autoregressive": _neural_autoregressive_layer,
}


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Validated flow hyper-parameters; defaults follow ``ConditionalFlowPosterior``.

    Attributes:
        family: a key of :data:`FLOW_FAMILIES`.
        num_layers: number of flow layers (the posterior's ``num_coupling_layers``), >= 1.
        hidden_dim: conditioner width, >= 1.
        conditioner_depth: conditioner hidden layers, >= 1.
        num_spline_bins: RQ-spline bins (``spline``), 2..999.
        spline_bound: spline interval half-width (``spline``), > 0; identity outside.
        autoregressive_transform_units: ``autoregressive``: minimum MADE hidden units per
            parameter dimension (MADE width = ``max(hidden_dim, units * dim)``);
            ``neural_autoregressive``: tanh units of each coordinate's monotone transformer.
        neural_autoregressive_min_slope: floor of the transformer's learned linear slope, in (0, 1).
        neural_autoregressive_min_residual: fixed identity fraction ``r`` mixed into every
            transformer, in [0, 1); bounds the slope below by ``r``.
        neural_autoregressive_inverse_bisection_steps: bisection steps of the inverse, >= 1.
        neural_autoregressive_shift: the transformer's learned offset (the layout since
            2026-11-26). Not a constructor option of the posterior: new models always have it,
            and a model saved before it existed is rebuilt with ``False`` (its metadata lacks
            ``flow_posterior.neural_autoregressive_shift``), so its weights still load.
        base_distribution: ``'gaussian'`` or ``'student_t'`` (standard, ``STUDENT_T_DOF`` dof).
        use_base_affine: add a learned elementwise affine before the base distribution.
    """

    family: str = "spline"
    num_layers: int = 4
    hidden_dim: int = 128
    conditioner_depth: int = 2
    num_spline_bins: int = 8
    spline_bound: float = 10.0
    autoregressive_transform_units: int = 16
    neural_autoregressive_min_slope: float = 1e-3
    neural_autoregressive_min_residual: float = 0.05
    neural_autoregressive_inverse_bisection_steps: int = 48
    neural_autoregressive_shift: bool = True
    base_distribution: str = "gaussian"
    use_base_affine: bool = False

    def __post_init__(self):
        if self.family not in FLOW_FAMILIES:
            raise ValueError(f"unknown flow family {self.family!r}; known families: "
                             f"{sorted(FLOW_FAMILIES)}")
        if self.base_distribution not in BASE_DISTRIBUTIONS:
            raise ValueError(f"unknown base_distribution {self.base_distribution!r}; known: "
                             f"{list(BASE_DISTRIBUTIONS)}")
        for name in ("use_base_affine", "neural_autoregressive_shift"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        check_int("num_layers", self.num_layers, 1)
        check_int("hidden_dim", self.hidden_dim, 1)
        check_int("conditioner_depth", self.conditioner_depth, 1)
        check_int("num_spline_bins", self.num_spline_bins, 2)
        if self.num_spline_bins >= 1000:
            raise ValueError(f"num_spline_bins must be < 1000, got {self.num_spline_bins}")
        check_float("spline_bound", self.spline_bound, low=0.0)
        check_int("autoregressive_transform_units", self.autoregressive_transform_units, 1)
        check_float("neural_autoregressive_min_slope", self.neural_autoregressive_min_slope,
                    low=0.0, high=1.0)
        check_float("neural_autoregressive_min_residual", self.neural_autoregressive_min_residual,
                    low=0.0, high=1.0, low_inclusive=True)
        check_int("neural_autoregressive_inverse_bisection_steps",
                  self.neural_autoregressive_inverse_bisection_steps, 1)

    def to_payload(self) -> dict:
        """JSON-ready dict of every field (rebuild with ``FlowConfig(**payload)``)."""
        return dataclasses.asdict(self)


def _base_log_prob(name: str, z: Float[Array, " dim"]) -> Float[Array, ""]:
    if name == "student_t":
        return jnp.sum(jax.scipy.stats.t.logpdf(z, STUDENT_T_DOF))
    return jnp.sum(jax.scipy.stats.norm.logpdf(z))


def _base_sample(name: str, key: PRNGKeyArray, shape: tuple[int, ...]) -> Array:
    if name == "student_t":
        return jax.random.t(key, STUDENT_T_DOF, shape)
    return jax.random.normal(key, shape)


class ConditionalFlow(eqx.Module):
    """Conditional density ``q(x | context)`` on R^dim; build it with :func:`build_flow`.

    All methods act on one parameter vector / one context (vmap outside) except the samplers,
    which draw ``n`` samples for one context. Shapes are checked at trace time.

    Attributes:
        transform: the stacked flow layers (:class:`~sbi_core.bijections.Repeated`).
        base_affine: learned elementwise affine applied after ``transform``, or None.
        dim: parameter dimension.
        context_dim: context (embedding) dimension; 0 for an unconditional flow.
        config: the :class:`FlowConfig` it was built from (rebuilds the skeleton for loading).
    """

    transform: Repeated
    base_affine: ElementwiseAffine | None
    dim: int = eqx.field(static=True)
    context_dim: int = eqx.field(static=True)
    config: FlowConfig = eqx.field(static=True)

    def _context(self, context) -> Float[Array, " context_dim"]:
        if context is None:
            if self.context_dim:
                raise ValueError(f"context of shape ({self.context_dim},) is required")
            return jnp.zeros((0,))
        context = jnp.asarray(context)
        if context.shape != (self.context_dim,):
            raise ValueError(f"context must have shape ({self.context_dim},), got "
                             f"{context.shape}; vmap over batches")
        return context

    def _vector(self, name: str, value) -> Float[Array, " dim"]:
        value = jnp.asarray(value)
        if value.shape != (self.dim,):
            raise ValueError(f"{name} must have shape ({self.dim},), got {value.shape}; "
                             "vmap over batches")
        return value

    def forward(self, x: Float[Array, " dim"], context: Float[Array, " context_dim"] | None = None
                ) -> tuple[Float[Array, " dim"], Float[Array, ""]]:
        """Map parameters to latent; returns ``(z, log|det dz/dx|)``."""
        z, log_det = self.transform.forward(self._vector("x", x), self._context(context))
        if self.base_affine is not None:
            z, step = self.base_affine.forward(z)
            log_det = log_det + step
        return z, log_det

    def inverse(self, z: Float[Array, " dim"], context: Float[Array, " context_dim"] | None = None
                ) -> tuple[Float[Array, " dim"], Float[Array, ""]]:
        """Map latent to parameters; returns ``(x, log|det dx/dz|)``."""
        z, context = self._vector("z", z), self._context(context)
        log_det = jnp.zeros((), z.dtype)
        if self.base_affine is not None:
            z, log_det = self.base_affine.inverse(z)
        x, step = self.transform.inverse(z, context)
        return x, log_det + step

    def log_prob(self, x: Float[Array, " dim"], context: Float[Array, " context_dim"] | None = None
                 ) -> Float[Array, ""]:
        """``log q(x | context) = log p_base(forward(x)) + log|det dz/dx|``."""
        z, log_det = self.forward(x, context)
        return _base_log_prob(self.config.base_distribution, z) + log_det

    # -- batched forms: the same values as vmapping the one-sample methods, computed with the
    # batch as the minor axis where a family benefits (AbstractBijection.forward_batch).

    def _batch(self, name: str, values, context) -> tuple[Array, Array]:
        values = jnp.asarray(values)
        if values.ndim != 2 or values.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}), got {values.shape}")
        if context is None or jnp.ndim(context) == 1:
            return values, self._context(context)
        context = jnp.asarray(context)
        if context.shape != (values.shape[0], self.context_dim):
            raise ValueError(f"context must have shape ({values.shape[0]}, {self.context_dim}) (one "
                             f"row per sample) or ({self.context_dim},) (shared), got {context.shape}")
        return values, context

    def forward_batch(self, x: Float[Array, "n dim"], context: Array | None = None
                      ) -> tuple[Float[Array, "n dim"], Float[Array, " n"]]:
        """:meth:`forward` of ``n`` samples; ``context`` is ``(n, context_dim)`` (one per sample)
        or ``(context_dim,)`` (shared)."""
        x, context = self._batch("x", x, context)
        z, log_det = self.transform.forward_batch(x, context)
        if self.base_affine is not None:
            z, step = self.base_affine.forward_batch(z, None)
            log_det = log_det + step
        return z, log_det

    def inverse_batch(self, z: Float[Array, "n dim"], context: Array | None = None
                      ) -> tuple[Float[Array, "n dim"], Float[Array, " n"]]:
        """:meth:`inverse` of ``n`` latents (``context`` as in :meth:`forward_batch`)."""
        z, context = self._batch("z", z, context)
        log_det = jnp.zeros(z.shape[:1], z.dtype)
        if self.base_affine is not None:
            z, log_det = self.base_affine.inverse_batch(z, None)
        x, step = self.transform.inverse_batch(z, context)
        return x, log_det + step

    def batch_log_prob(self, x: Float[Array, "n dim"], context: Array | None = None) -> Float[Array, " n"]:
        """:meth:`log_prob` of ``n`` samples (``context`` as in :meth:`forward_batch`)."""
        z, log_det = self.forward_batch(x, context)
        return jax.vmap(lambda zi: _base_log_prob(self.config.base_distribution, zi))(z) + log_det

    def sample_and_log_prob(self, key: PRNGKeyArray, context: Float[Array, " context_dim"] | None,
                            n: int) -> tuple[Float[Array, "n dim"], Float[Array, " n"]]:
        """Draw ``n`` samples for one context and their log densities (one inverse pass each)."""
        check_int("n", n, 1)
        context = self._context(context)
        z = _base_sample(self.config.base_distribution, key, (n, self.dim))
        x, log_det = self.inverse_batch(z, context)
        base = jax.vmap(lambda zi: _base_log_prob(self.config.base_distribution, zi))(z)
        return x, base - log_det

    def sample(self, key: PRNGKeyArray, context: Float[Array, " context_dim"] | None, n: int
               ) -> Float[Array, "n dim"]:
        """Draw ``n`` samples ``(n, dim)`` for one context."""
        check_int("n", n, 1)
        context = self._context(context)
        z = _base_sample(self.config.base_distribution, key, (n, self.dim))
        return self.inverse_batch(z, context)[0]

    def regularization_statistics(self, x: Float[Array, " dim"],
                                  context: Float[Array, " context_dim"] | None = None
                                  ) -> dict[str, Array]:
        """Per-layer spline statistics at ``x`` for the posterior's spline regularisers.

        Returns:
            For ``family='spline'``: ``min_bin_width_ratio``, ``min_bin_height_ratio``,
            ``bin_width_entropy``, ``bin_height_entropy`` of shape ``(num_layers, n_t)`` and
            ``knot_derivatives`` of shape ``(num_layers, n_t, num_spline_bins - 1)``, where
            ``n_t = dim - dim // 2`` coordinates are splined per layer (see
            :func:`~sbi_core.bijections.spline_statistics`). An empty dict for families without
            splines.
        """
        _, _, stats = self.transform.forward_with_statistics(self._vector("x", x),
                                                             self._context(context))
        return dict(stats) if stats is not None else {}


def build_flow(key: PRNGKeyArray, dim: int, context_dim: int, config: FlowConfig
               ) -> ConditionalFlow:
    """Build a conditional flow that starts at (or, for ``neural_autoregressive``, near) the identity.

    Args:
        key: PRNG key for the conditioner weights.
        dim: parameter dimension, >= 1.
        context_dim: context dimension, >= 0 (0 = unconditional).
        config: the validated hyper-parameters.

    Returns:
        The flow. The same ``(dim, context_dim, config)`` always yields the same pytree
        structure, so ``eqx.tree_deserialise_leaves`` can load saved weights into it.

    Raises:
        ValueError: on a bad dimension or a config that is not a :class:`FlowConfig`.
    """
    check_int("dim", dim, 1)
    check_int("context_dim", context_dim, 0)
    if not isinstance(config, FlowConfig):
        raise ValueError(f"config must be a FlowConfig, got {type(config).__name__}")
    make_transform = FLOW_FAMILIES[config.family]
    # Validate sizes once eagerly: errors raised inside filter_vmap would be harder to read.
    make_transform(jax.random.PRNGKey(0), dim, context_dim, config)

    def make_layer(layer_key):
        return Chain((make_transform(layer_key, dim, context_dim, config),
                      Permutation.reverse(dim)))

    transform = Repeated(key, config.num_layers, make_layer)
    base_affine = ElementwiseAffine(dim) if config.use_base_affine else None
    return ConditionalFlow(transform, base_affine, dim, context_dim, config)
