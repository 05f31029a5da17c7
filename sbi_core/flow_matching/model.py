"""The trainable flow-matching posterior network: observation encoder + velocity field."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from sbi_core.encoders import EncoderConfig, ObservationEmbeddingNet, build_embedding_net

from .config import FlowMatchingConfig
from .coordinates import Standardization
from .loss import fm_loss
from .vector_field import AbstractVelocityField


class FlowMatchingNetwork(eqx.Module):
    """Shared observation encoder feeding a conditional velocity field.

    The encoder is the project's :class:`~sbi_core.encoders.ObservationEmbeddingNet`
    (the same block encoders as the conditional-flow posterior); its embedding is
    the context of the velocity field. Encoder and field are trained jointly by
    the flow-matching loss (Dax et al. 2023).

    Attributes:
        embedding_net: Observation encoder (one block encoder per schema block).
        velocity: Velocity field v(theta_t, t, embedding) (``config.velocity_network``).
        sigma_min: Terminal width of the OT path used by :meth:`loss`.
        time_prior_exponent: Time-prior alpha used by :meth:`loss`.
        standardization: Flow-space -> model-coordinate standardisation of the
            targets (static: fitted on the training split, never trained).
    """

    embedding_net: ObservationEmbeddingNet
    velocity: AbstractVelocityField
    sigma_min: float = eqx.field(static=True)
    time_prior_exponent: float = eqx.field(static=True)
    standardization: Standardization = eqx.field(static=True)

    def __init__(
        self,
        parameter_dim: int,
        schema: Any,
        encoder_config: EncoderConfig,
        config: FlowMatchingConfig,
        standardization: Standardization | None = None,
        *,
        key: PRNGKeyArray,
    ):
        encoder_key, velocity_key = jax.random.split(key)
        self.embedding_net = build_embedding_net(schema, encoder_config, encoder_key)
        self.velocity = config.build_velocity(parameter_dim, encoder_config.embedding_dim,
                                              key=velocity_key)
        self.sigma_min = float(config.sigma_min)
        self.time_prior_exponent = float(config.time_prior_exponent)
        self.standardization = standardization or Standardization.identity(parameter_dim)

    def embed_batch(self, observations: Any) -> Float[Array, "B E"]:
        """Embed a batch of (preprocessed) observations."""
        return self.embedding_net.embed_batch(observations)

    def standardize(self, theta: Float[Array, "B P"]) -> Float[Array, "B P"]:
        """Flow-space values -> standardised model coordinates."""
        shift = jnp.asarray(self.standardization.shift, theta.dtype)
        return (theta - shift) / jnp.asarray(self.standardization.scale, theta.dtype)

    def loss(
        self, theta: Float[Array, "B P"], observations: Any, key: PRNGKeyArray
    ) -> Float[Array, ""]:
        """Flow-matching loss of a batch of flow-space targets (encoder and field jointly)."""
        context = self.embed_batch(observations)
        return fm_loss(self.velocity, self.standardize(theta), context, key, self.sigma_min,
                       self.time_prior_exponent)

    def averaged_loss(
        self, theta: Float[Array, "B P"], observations: Any, key: PRNGKeyArray, repeats: int
    ) -> Float[Array, ""]:
        """Loss averaged over ``repeats`` (t, z) draws per sample (lower-variance validation)."""
        context, target = self.embed_batch(observations), self.standardize(theta)
        losses = jax.vmap(
            lambda k: fm_loss(self.velocity, target, context, k, self.sigma_min,
                              self.time_prior_exponent)
        )(jax.random.split(key, repeats))
        return jnp.mean(losses)
