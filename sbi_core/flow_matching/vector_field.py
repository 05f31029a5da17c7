"""Conditional velocity fields v(theta_t, t, context) for flow matching.

The network regresses the conditional optimal-transport velocity of the
straight-line probability path (Lipman et al. 2023, "Flow Matching for Generative
Modeling"; Dax et al. 2023, "Flow Matching for Scalable Simulation-Based
Inference"). Everything here acts on a single sample; vmap outside.
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class AbstractVelocityField(eqx.Module):
    """A time-dependent, context-conditioned vector field on parameter space."""

    @abc.abstractmethod
    def __call__(
        self,
        theta_t: Float[Array, " P"],
        t: Float[Array, ""],
        context: Float[Array, " C"],
    ) -> Float[Array, " P"]:
        """Return the velocity d theta_t / dt at (theta_t, t) given the context."""
        raise NotImplementedError


class FourierTimeEmbedding(eqx.Module):
    """Fixed sinusoidal features of t in [0, 1].

    A scalar t is a poor input for an MLP that must represent fields that change
    sharply near t = 1 (where the posterior is narrow); fixed Fourier features
    at geometrically spaced frequencies give the network those scales cheaply
    (Tancik et al. 2020). The frequencies are not trained, so they are kept out
    of the pytree's inexact leaves by being a static tuple.

    Attributes:
        frequencies: Angular frequencies, ``pi * 2**k`` for ``k = 0..n-1``.
    """

    frequencies: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, num_frequencies: int = 8):
        if num_frequencies < 1:
            raise ValueError(
                f"num_frequencies must be a positive integer, got {num_frequencies}"
            )
        self.frequencies = tuple(math.pi * 2.0**k for k in range(num_frequencies))

    @property
    def output_dim(self) -> int:
        """Feature count: t itself plus a sine and cosine per frequency."""
        return 1 + 2 * len(self.frequencies)

    def __call__(self, t: Float[Array, ""]) -> Float[Array, " F"]:
        """Embed a scalar time into ``output_dim`` features."""
        angles = jnp.asarray(self.frequencies, dtype=jnp.result_type(t, jnp.float32)) * t
        return jnp.concatenate([jnp.atleast_1d(t), jnp.sin(angles), jnp.cos(angles)])


class VelocityMLP(AbstractVelocityField):
    """MLP velocity field on ``[theta_t, fourier(t), context]``.

    Attributes:
        time_embedding: Fixed Fourier features of t.
        mlp: SiLU MLP with ``num_velocity_layers`` hidden layers of ``hidden_dim``
            units; the output layer is zero-initialised so an untrained field is
            the zero field (a well-conditioned identity flow map).
    """

    time_embedding: FourierTimeEmbedding
    mlp: eqx.nn.MLP

    def __init__(
        self,
        parameter_dim: int,
        context_dim: int,
        *,
        hidden_dim: int = 128,
        num_velocity_layers: int = 3,
        num_time_frequencies: int = 8,
        key: PRNGKeyArray,
    ):
        check_field_sizes(parameter_dim, context_dim, hidden_dim, num_velocity_layers)
        self.time_embedding = FourierTimeEmbedding(num_time_frequencies)
        in_size = parameter_dim + self.time_embedding.output_dim + context_dim
        mlp = eqx.nn.MLP(
            in_size, parameter_dim, hidden_dim, num_velocity_layers,
            activation=jax.nn.silu, key=key,
        )
        last = mlp.layers[-1]
        # Zero output layer: the initial flow is the identity, so training starts
        # from a finite, well-behaved density rather than a random ODE.
        last = eqx.tree_at(lambda l: (l.weight, l.bias), last,
                           (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
        self.mlp = eqx.tree_at(lambda m: m.layers[-1], mlp, last)

    @property
    def parameter_dim(self) -> int:
        """Dimension P of the parameter space the field acts on."""
        return self.mlp.out_size

    def __call__(
        self,
        theta_t: Float[Array, " P"],
        t: Float[Array, ""],
        context: Float[Array, " C"],
    ) -> Float[Array, " P"]:
        """Return v(theta_t, t, context)."""
        features = jnp.concatenate(
            [theta_t, self.time_embedding(jnp.asarray(t, theta_t.dtype)), context]
        )
        return self.mlp(features)


def check_positive(name: str, value: int) -> None:
    """Raise unless ``value`` is a positive int (bools rejected), naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_field_sizes(parameter_dim: int, context_dim: int, hidden_dim: int, num_velocity_layers: int) -> None:
    """The size checks every velocity network shares (raises ``ValueError`` naming the field)."""
    check_positive("parameter_dim", parameter_dim)
    check_positive("hidden_dim", hidden_dim)
    check_positive("num_velocity_layers", num_velocity_layers)
    if context_dim < 0:
        raise ValueError(f"context_dim must be >= 0, got {context_dim}")
