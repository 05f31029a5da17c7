"""Residual, context-gated velocity field with a time-gated linear skip path.

``VelocityMLP`` feeds ``[theta_t, fourier(t), context]`` to one plain MLP, which must learn
every multiplicative interaction between time, context and state from scratch. Here:

- residual blocks whose outputs are gated by a sigmoid GLU of ``[fourier(t), context]`` (the
  conditioning of the FMPE reference network, DINGO's DenseResidualNet; Dax et al. 2023);
- a linear skip path ``a(t) * theta_t + b(t) * (W context)`` with per-dimension gates ``a, b``
  linear in the Fourier time features. For a Gaussian posterior whose mean moves linearly with
  the data (``gaussian_linear``) the exact OT velocity is exactly of this form
  (``v = a(t) x_t + b(t) mu(x)``), so the residual network only models the non-Gaussian part.

The output layer and the skip gates start at zero: an untrained field is the zero field.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .vector_field import AbstractVelocityField, FourierTimeEmbedding, check_field_sizes


def _zero(linear: eqx.nn.Linear) -> eqx.nn.Linear:
    return eqx.tree_at(lambda l: (l.weight, l.bias), linear,
                       (jnp.zeros_like(linear.weight), jnp.zeros_like(linear.bias)))


class GatedResidualBlock(eqx.Module):
    """``h + sigmoid(G [tau, c]) * L2(silu(L1(silu(h))))``."""

    first: eqx.nn.Linear
    second: eqx.nn.Linear
    gate: eqx.nn.Linear

    def __init__(self, hidden_dim: int, condition_dim: int, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.first = eqx.nn.Linear(hidden_dim, hidden_dim, key=k1)
        self.second = eqx.nn.Linear(hidden_dim, hidden_dim, key=k2)
        self.gate = eqx.nn.Linear(condition_dim, hidden_dim, key=k3)

    def __call__(self, h: Float[Array, " H"], condition: Float[Array, " K"]) -> Float[Array, " H"]:
        update = self.second(jax.nn.silu(self.first(jax.nn.silu(h))))
        return h + jax.nn.sigmoid(self.gate(condition)) * update


class TimeGatedLinearSkip(eqx.Module):
    """``a(t) * theta_t + b(t) * (W context)``, gates linear in the time features (zero init)."""

    context_map: eqx.nn.Linear
    gates: eqx.nn.Linear

    def __init__(self, parameter_dim: int, context_dim: int, time_dim: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.context_map = eqx.nn.Linear(context_dim, parameter_dim, key=k1)
        self.gates = _zero(eqx.nn.Linear(time_dim, 2 * parameter_dim, key=k2))

    def __call__(self, theta_t, time_features, context) -> Float[Array, " P"]:
        a, b = jnp.split(self.gates(time_features), 2)
        return a * theta_t + b * self.context_map(context)


class ResidualVelocityNet(AbstractVelocityField):
    """Residual GLU-conditioned velocity field plus a time-gated linear skip (module docstring).

    Attributes:
        time_embedding: Fixed Fourier features of t.
        input_layer: ``[theta_t, fourier(t), context] -> hidden``.
        blocks: ``num_velocity_layers`` gated residual blocks.
        output_layer: ``hidden -> P``, zero-initialised.
        skip: The time-gated linear skip path.
    """

    time_embedding: FourierTimeEmbedding
    input_layer: eqx.nn.Linear
    blocks: tuple[GatedResidualBlock, ...]
    output_layer: eqx.nn.Linear
    skip: TimeGatedLinearSkip

    def __init__(self, parameter_dim: int, context_dim: int, *, hidden_dim: int = 128,
                 num_velocity_layers: int = 3, num_time_frequencies: int = 8, key: PRNGKeyArray):
        check_field_sizes(parameter_dim, context_dim, hidden_dim, num_velocity_layers)
        self.time_embedding = FourierTimeEmbedding(num_time_frequencies)
        time_dim = self.time_embedding.output_dim
        keys = jax.random.split(key, num_velocity_layers + 3)
        self.input_layer = eqx.nn.Linear(parameter_dim + time_dim + context_dim, hidden_dim, key=keys[0])
        self.blocks = tuple(GatedResidualBlock(hidden_dim, time_dim + context_dim, key=k)
                            for k in keys[3:])
        self.output_layer = _zero(eqx.nn.Linear(hidden_dim, parameter_dim, key=keys[1]))
        self.skip = TimeGatedLinearSkip(parameter_dim, context_dim, time_dim, key=keys[2])

    @property
    def parameter_dim(self) -> int:
        """Dimension P of the parameter space the field acts on."""
        return self.output_layer.out_features

    def __call__(self, theta_t, t, context) -> Float[Array, " P"]:
        """Return v(theta_t, t, context)."""
        tau = self.time_embedding(jnp.asarray(t, theta_t.dtype))
        condition = jnp.concatenate([tau, context])
        h = self.input_layer(jnp.concatenate([theta_t, condition]))
        for block in self.blocks:
            h = block(h, condition)
        return self.output_layer(jax.nn.silu(h)) + self.skip(theta_t, tau, context)
