"""The conditional-flow posterior's model pytree, losses and stability diagnostics (all JAX).

Coordinates: the flow models *flow space* -- ``physical`` when the posterior's parameter space is
``physical``, otherwise ``unconstrained`` (the logit of the cube; a ``cube`` posterior is the
flow pushed through a sigmoid, so its samples always lie in (0, 1)) -- standardised by a fixed
per-dimension shift and scale fitted on the training split. Every log-density carries the exact
log-Jacobian of the standardisation (``-sum(log scale)``) and, for ``cube``, of the sigmoid.

Losses take ``(model, PosteriorBatch)`` whose ``parameters`` are in flow space and whose
``metadata["key"]`` (when present) seeds the noise. The trainer adapters live in
:mod:`sbi_core.flow_training`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from sbi_core.batch import PosteriorBatch
from sbi_core.encoders import ObservationEmbeddingNet
from sbi_core.flows import STUDENT_T_DOF, ConditionalFlow
from sbi_core.observation import PreStackedObservations
from sbi_core.posterior_configs import RegularizationConfig

__all__ = [
    "PosteriorModel",
    "flow_space_for",
    "to_flow_space",
    "from_flow_draws",
    "npe_loss",
    "inject_observation_noise",
    "jitter_parameters",
    "elbo_loss",
    "stability_diagnostics",
    "batch_key",
]


def flow_space_for(parameter_space: str) -> str:
    """The space the flow models for a configured parameter space."""
    return "physical" if parameter_space == "physical" else "unconstrained"


class PosteriorModel(eqx.Module):
    """Embedding network + conditional flow (+ optional auxiliary head), one trainable pytree.

    The standardisation and the regularisation settings are static (not trained, not decayed).
    """

    embedding_net: ObservationEmbeddingNet
    flow: ConditionalFlow
    aux_head: eqx.nn.Linear | None
    shift: tuple[float, ...] = eqx.field(static=True)
    scale: tuple[float, ...] = eqx.field(static=True)
    flow_space: str = eqx.field(static=True)
    regularization: RegularizationConfig = eqx.field(static=True)

    def standardize(self, x: Float[Array, "... P"]) -> Float[Array, "... P"]:
        """Flow-space values -> standardised flow coordinates."""
        return (x - jnp.asarray(self.shift, x.dtype)) / jnp.asarray(self.scale, x.dtype)

    def unstandardize(self, xs: Float[Array, "... P"]) -> Float[Array, "... P"]:
        """Standardised flow coordinates -> flow-space values."""
        return xs * jnp.asarray(self.scale, xs.dtype) + jnp.asarray(self.shift, xs.dtype)

    @property
    def log_scale_sum(self) -> float:
        """``sum(log scale)``: log|det| of unstandardising."""
        return float(sum(math.log(s) for s in self.scale))

    def embed(self, observations: PreStackedObservations) -> Float[Array, "B E"]:
        """Embed a batch of (preprocessed) observations."""
        return self.embedding_net.embed_batch(observations)

    def flow_log_prob(self, x: Float[Array, "B P"], embeddings: Float[Array, "B E"]) -> Float[Array, " B"]:
        """``log q(x | e)`` in (unstandardised) flow space."""
        lp = self.flow.batch_log_prob(self.standardize(x), embeddings)
        return lp - self.log_scale_sum


def to_flow_space(x: Float[Array, "... P"], parameter_space: str, flow_space: str) -> tuple[Array, Array]:
    """Map values of ``parameter_space`` to flow space; returns ``(y, log|dy/dx|)`` summed over P.

    Only ``cube -> unconstrained`` is a non-trivial map here (logit); physical and unconstrained
    are the flow space of their own posteriors.
    """
    if parameter_space == flow_space:
        return x, jnp.zeros(x.shape[:-1], x.dtype)
    if parameter_space == "cube" and flow_space == "unconstrained":
        finfo = jnp.finfo(x.dtype)
        c = jnp.clip(x, finfo.tiny, 1.0 - finfo.epsneg)
        log_c, log_1mc = jnp.log(c), jnp.log1p(-c)
        return log_c - log_1mc, jnp.sum(-log_c - log_1mc, axis=-1)
    raise ValueError(f"cannot map {parameter_space!r} parameters to flow space {flow_space!r}")


def from_flow_draws(
    model: PosteriorModel, xs: Float[Array, "... P"], log_q_std: Float[Array, "..."], parameter_space: str
) -> tuple[Array, Array]:
    """Standardised flow draws -> configured-space values and their log-densities."""
    u = model.unstandardize(xs)
    log_q = log_q_std - model.log_scale_sum
    if parameter_space == "cube":
        log_jac = jnp.sum(jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u), axis=-1)
        return jax.nn.sigmoid(u), log_q - log_jac
    return u, log_q


def batch_key(batch: PosteriorBatch) -> PRNGKeyArray:
    """The batch's noise key (``metadata['key']``), or a fixed key."""
    key = batch.metadata.get("key") if isinstance(batch.metadata, Mapping) else None
    return jax.random.PRNGKey(0) if key is None else key


def _spline_penalty(model: PosteriorModel, xs: Array, emb: Array) -> Array:
    reg = model.regularization
    stats = jax.vmap(model.flow.regularization_statistics)(xs, emb)
    if not stats:
        return jnp.zeros(())
    penalty = jnp.zeros(())
    if reg.small_bin_weight > 0:
        t = reg.spline_min_bin_ratio_target
        small = jax.nn.relu(t - stats["min_bin_width_ratio"]) ** 2 + jax.nn.relu(t - stats["min_bin_height_ratio"]) ** 2
        penalty = penalty + reg.small_bin_weight * jnp.mean(small)
    if reg.spline_entropy_regularization_weight > 0:
        f = reg.spline_entropy_floor
        ent = jax.nn.relu(f - stats["bin_width_entropy"]) ** 2 + jax.nn.relu(f - stats["bin_height_entropy"]) ** 2
        penalty = penalty + reg.spline_entropy_regularization_weight * jnp.mean(ent)
    if reg.spline_derivative_regularization_weight > 0:
        log_d = jnp.log(jnp.maximum(stats["knot_derivatives"], 1e-12))
        lo, hi = jnp.log(reg.spline_min_derivative_target), jnp.log(reg.spline_max_derivative_target)
        der = jax.nn.relu(lo - log_d) ** 2 + jax.nn.relu(log_d - hi) ** 2
        penalty = penalty + reg.spline_derivative_regularization_weight * jnp.mean(der)
    return penalty


def _aux_penalty(model: PosteriorModel, xs: Array, emb: Array) -> Array:
    reg = model.regularization
    out = jax.vmap(model.aux_head)(emb)
    mean, log_scale = jnp.split(out, 2, axis=-1)
    penalty = reg.aux_parameter_loss_weight * jnp.mean((mean - xs) ** 2)
    resid = (xs - jax.lax.stop_gradient(mean)) * jnp.exp(-log_scale)
    return penalty + reg.aux_scale_loss_weight * jnp.mean(0.5 * resid**2 + log_scale)


def npe_loss(
    model: PosteriorModel, x: Float[Array, "B P"], observations: PreStackedObservations, *, include_regularization: bool
) -> Float[Array, ""]:
    """Mean NLL of flow-space targets ``x`` (+ auxiliary and spline terms when asked)."""
    emb = model.embed(observations)
    xs = model.standardize(x)
    loss = -jnp.mean(model.flow.batch_log_prob(xs, emb)) + model.log_scale_sum
    if include_regularization and model.aux_head is not None:
        loss = loss + _aux_penalty(model, xs, emb)
    if include_regularization and model.regularization.uses_spline_regularization:
        loss = loss + _spline_penalty(model, xs, emb)
    return loss


def inject_observation_noise(
    observations: PreStackedObservations,
    key: PRNGKeyArray,
    noise_std: float,
    typical_uncertainty: Mapping[str, float] | None,
    noise_min_scale: float,
) -> PreStackedObservations:
    """Add Gaussian noise to every block's (preprocessed) values.

    With ``typical_uncertainty`` (block -> median preprocessed uncertainty), blocks that carry
    uncertainties get ``noise_std * max(sigma, noise_min_scale * typical)``; other blocks (and
    every block when ``typical_uncertainty`` is None) get flat noise of scale ``noise_std``.
    Masked-out elements are left untouched.
    """
    values = {}
    for i, (name, v) in enumerate(sorted(observations.values.items())):
        eps = jax.random.normal(jax.random.fold_in(key, i), v.shape, v.dtype)
        sigma = observations.uncertainties.get(name)
        if typical_uncertainty is not None and sigma is not None:
            floor = noise_min_scale * float(typical_uncertainty.get(name, 0.0))
            scale = noise_std * jnp.maximum(sigma, floor)
        else:
            scale = noise_std
        noise = scale * eps
        mask = observations.masks.get(name)
        values[name] = v + (noise if mask is None else jnp.where(mask, noise, 0.0))
    return PreStackedObservations(values=values, uncertainties=observations.uncertainties, masks=observations.masks)


def jitter_parameters(model: PosteriorModel, x: Float[Array, "B P"], key: PRNGKeyArray, noise_floor: float,
                      parameter_space: str) -> Float[Array, "B P"]:
    """Jitter targets in logit space (cube/unconstrained) or in standardised units (physical)."""
    eps = jax.random.normal(key, x.shape, x.dtype)
    if parameter_space == "physical":
        return x + noise_floor * jnp.asarray(model.scale, x.dtype) * eps
    if parameter_space == "cube":
        u, _ = to_flow_space(x, "cube", "unconstrained")
        return jax.nn.sigmoid(u + noise_floor * eps)
    return x + noise_floor * eps


def elbo_loss(
    model: PosteriorModel,
    observations: PreStackedObservations,
    raw_observations: Any,
    key: PRNGKeyArray,
    log_likelihood_fn: Callable[[Array, Any], Array],
    num_samples: int,
) -> Float[Array, ""]:
    """Negative single/few-sample reparameterised ELBO for a cube-space posterior (uniform prior)."""
    emb = model.embed(observations)
    keys = jax.random.split(key, emb.shape[0])
    xs, log_q_std = jax.vmap(lambda k, e: model.flow.sample_and_log_prob(k, e, num_samples))(keys, emb)
    theta_cube, log_q = from_flow_draws(model, xs, log_q_std, "cube")  # (B, S, P), (B, S)
    log_lik = jax.vmap(lambda c: log_likelihood_fn(c, raw_observations), in_axes=1, out_axes=1)(theta_cube)
    return -jnp.mean(log_lik - log_q)


def _base_draws(model: PosteriorModel, key: PRNGKeyArray, shape: tuple[int, ...]) -> Array:
    if model.flow.config.base_distribution == "student_t":
        return jax.random.t(key, STUDENT_T_DOF, shape)
    return jax.random.normal(key, shape)


def stability_diagnostics(
    model: PosteriorModel,
    x: Float[Array, "B P"],
    observations: PreStackedObservations,
    key: PRNGKeyArray,
    num_draws: int,
) -> dict[str, Array]:
    """Inverse-forward error, log-det closure error and cube edge-hit rate on validation rows.

    Returns:
        ``inverse_forward_max_abs_error`` (standardised flow units),
        ``logdet_closure_max_abs_error``, ``cube_edge_hit_rate`` (fraction of ``num_draws``
        posterior draws per row with a cube coordinate saturated to exactly 0 or 1 in float32;
        NaN for a ``physical`` flow space, where it is not defined).
    """
    emb = model.embed(observations)
    xs = model.standardize(x)
    z, ld_f = model.flow.forward_batch(xs, emb)
    # One inverse pass (compiled once) maps both the forward latents and fresh base draws.
    latents = jnp.concatenate([z[:, None], _base_draws(model, key, (z.shape[0], num_draws, z.shape[1]))], axis=1)
    out, ld_inv = jax.vmap(model.flow.inverse_batch)(latents, emb)
    xr, ld_i, draws = out[:, 0], ld_inv[:, 0], out[:, 1:]
    if model.flow_space == "unconstrained":
        cube = jax.nn.sigmoid(model.unstandardize(draws)).astype(jnp.float32)
        hits = jnp.any((cube <= 0.0) | (cube >= 1.0) | ~jnp.isfinite(cube), axis=-1)
        edge = jnp.mean(hits.astype(jnp.float32))
    else:
        edge = jnp.asarray(jnp.nan, jnp.float32)
    return {
        "inverse_forward_max_abs_error": jnp.max(jnp.abs(xr - xs)),
        "logdet_closure_max_abs_error": jnp.max(jnp.abs(ld_f + ld_i)),
        "cube_edge_hit_rate": edge,
    }
