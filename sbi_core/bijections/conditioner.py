"""Conditioner networks: a plain MLP for couplings and a masked MLP (MADE) for autoregression.

References:
    Germain et al. (2015), "MADE: Masked Autoencoder for Distribution Estimation", ICML.
    Papamakarios et al. (2017), "Masked Autoregressive Flow for Density Estimation", NeurIPS.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray


def _linear_init(key: PRNGKeyArray, in_size: int, out_size: int, zero: bool
                 ) -> tuple[Float[Array, "out in"], Float[Array, " out"]]:
    """LeCun-uniform init (equinox's default); ``zero`` gives an exactly-zero final layer."""
    if zero:
        # A zero last layer makes every flow layer start as the identity (stable early training).
        return jnp.zeros((out_size, in_size)), jnp.zeros((out_size,))
    limit = 1.0 / math.sqrt(max(in_size, 1))  # in_size may be 0 (D=1 coupling without context)
    wkey, bkey = jax.random.split(key)
    weight = jax.random.uniform(wkey, (out_size, in_size), minval=-limit, maxval=limit)
    bias = jax.random.uniform(bkey, (out_size,), minval=-limit, maxval=limit)
    return weight, bias


def _init_layers(key, sizes: list[int]) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
    keys = jax.random.split(key, len(sizes) - 1)
    layers = [_linear_init(k, i, o, zero=(n == len(sizes) - 2))
              for n, (k, i, o) in enumerate(zip(keys, sizes[:-1], sizes[1:]))]
    return tuple(w for w, _ in layers), tuple(b for _, b in layers)


def bounded_exp(raw: Array, log_bound: float) -> Array:
    """``exp(log_bound * tanh(raw / log_bound))``: 1 at 0, exp-like near 0, bounded in
    ``[exp(-log_bound), exp(log_bound)]``.

    The positivity map for conditioner outputs. Unlike ``softplus`` it never overflows and
    lets scales shrink geometrically; and on XLA:CPU the fused exp/tanh pair vectorises, whereas
    the fused ``softplus`` (``logaddexp``) ran ~20-40x slower per element in our measurements,
    which dominated the neural-autoregressive transformer's cost.
    """
    return jnp.exp(log_bound * jnp.tanh(raw / log_bound))


def coupling_split(dim: int) -> int:
    """Number of leading coordinates a coupling layer conditions on (the rest are transformed).

    For ``dim == 1`` this is 0: the single coordinate is transformed conditioned on the context
    only (an unconditional-in-x but context-dependent layer), so coupling flows still work.
    """
    return dim // 2


class MLP(eqx.Module):
    """ReLU MLP with ``depth`` hidden layers of width ``hidden_dim`` and a zero-initialised output.

    Attributes:
        weights: per-layer weight matrices ``(out, in)``.
        biases: per-layer biases ``(out,)``.
    """

    weights: tuple[Array, ...]
    biases: tuple[Array, ...]

    def __init__(self, key: PRNGKeyArray, in_size: int, out_size: int, hidden_dim: int, depth: int):
        self.weights, self.biases = _init_layers(key, [in_size] + [hidden_dim] * depth + [out_size])

    def __call__(self, inputs: Float[Array, " in_size"],
                 context: Float[Array, " context_dim"] | None = None) -> Float[Array, " out_size"]:
        """Apply the MLP to ``inputs``, or to ``concatenate([inputs, context])`` when a context is given.

        With a context the first layer is applied as two products, ``W[:, :n] @ inputs +
        W[:, n:] @ context`` (same weights, same function): under ``vmap`` over draws that share
        one observation's context, the context product stays unbatched and runs once per
        observation instead of once per draw -- most of the first layer's cost when sampling.
        """
        weights, biases = self.weights, self.biases  # depth >= 1: at least two layers
        first = weights[0] @ inputs if context is None else _split_first_layer(weights[0], inputs, context)
        h = jax.nn.relu(first + biases[0])
        for weight, bias in zip(weights[1:-1], biases[1:-1]):
            h = jax.nn.relu(weight @ h + bias)
        return weights[-1] @ h + biases[-1]


def _split_first_layer(weight: Float[Array, "out in"], inputs: Array, context: Array) -> Array:
    """``weight @ concatenate([inputs, context])`` as two products (see ``MLP.__call__``)."""
    n = inputs.shape[0]
    return weight[:, :n] @ inputs + weight[:, n:] @ context


@functools.lru_cache(maxsize=None)
def made_masks(dim: int, context_dim: int, hidden_dim: int, depth: int, outputs_per_dim: int
               ) -> tuple[np.ndarray, ...]:
    """Connectivity masks of a MADE with identity input order, as float32 numpy constants.

    Inputs carry degrees ``1..dim``; context entries carry degree 0 (visible to every unit).
    Hidden units cycle through degrees ``0..dim-1``: degree-0 units see only the context, so the
    first coordinate's transformer still depends on the context. Output ``(i, p)`` (row-major
    ``(dim, outputs_per_dim)``) has degree ``i + 1`` and sees hidden units of smaller degree, so
    output ``i`` depends on ``x[:i]`` and the context only.
    """
    in_deg = np.concatenate([np.arange(1, dim + 1), np.zeros(context_dim, dtype=int)])
    hidden_deg = np.arange(hidden_dim) % dim
    out_deg = np.repeat(np.arange(1, dim + 1), outputs_per_dim)
    masks = [hidden_deg[:, None] >= in_deg[None, :]]
    masks += [hidden_deg[:, None] >= hidden_deg[None, :]] * (depth - 1)
    masks.append(out_deg[:, None] > hidden_deg[None, :])
    return tuple(m.astype(np.float32) for m in masks)


class MaskedMLP(eqx.Module):
    """MADE conditioner: output ``(i, :)`` depends only on ``x[:i]`` and the context.

    The masks are recomputed from static sizes (cached numpy constants) rather than stored, so
    saved weights hold only trainable arrays and stacked layers share one mask set.

    Attributes:
        weights, biases: layer parameters (masked entries receive zero gradient).
        dim, context_dim, hidden_dim, depth, outputs_per_dim: static sizes.
    """

    weights: tuple[Array, ...]
    biases: tuple[Array, ...]
    dim: int = eqx.field(static=True)
    context_dim: int = eqx.field(static=True)
    hidden_dim: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    outputs_per_dim: int = eqx.field(static=True)

    def __init__(self, key, dim: int, context_dim: int, hidden_dim: int, depth: int,
                 outputs_per_dim: int):
        self.dim, self.context_dim, self.hidden_dim = dim, context_dim, hidden_dim
        self.depth, self.outputs_per_dim = depth, outputs_per_dim
        sizes = [dim + context_dim] + [hidden_dim] * depth + [dim * outputs_per_dim]
        self.weights, self.biases = _init_layers(key, sizes)

    def _masks(self) -> tuple[np.ndarray, ...]:
        return made_masks(self.dim, self.context_dim, self.hidden_dim, self.depth,
                          self.outputs_per_dim)

    def features(self, x: Float[Array, " dim"], context: Float[Array, " context_dim"]
                 ) -> Float[Array, " hidden_dim"]:
        """Last hidden layer (input to the output head)."""
        masks = self._masks()
        # Context product split off the first layer: unbatched (once per observation) under vmap
        # over draws, and loop-invariant in the sequential inverse (see ``MLP.__call__``).
        h = jax.nn.relu(_split_first_layer(self.weights[0] * masks[0], x, context) + self.biases[0])
        for weight, bias, mask in zip(self.weights[1:-1], self.biases[1:-1], masks[1:-1]):
            h = jax.nn.relu((weight * mask) @ h + bias)
        return h

    def head(self, h: Float[Array, " hidden_dim"], index: Array) -> Float[Array, " outputs_per_dim"]:
        """Outputs of coordinate ``index`` only: the sequential inverse needs one coordinate per
        pass, and slicing the output layer makes that pass several times cheaper."""
        p = self.outputs_per_dim
        weight = jax.lax.dynamic_slice_in_dim(self.weights[-1], index * p, p)
        mask = jax.lax.dynamic_slice_in_dim(jnp.asarray(self._masks()[-1]), index * p, p)
        return (weight * mask) @ h + jax.lax.dynamic_slice_in_dim(self.biases[-1], index * p, p)

    def __call__(self, x: Float[Array, " dim"], context: Float[Array, " context_dim"]
                 ) -> Float[Array, "dim outputs_per_dim"]:
        out = (self.weights[-1] * self._masks()[-1]) @ self.features(x, context) + self.biases[-1]
        return out.reshape(self.dim, self.outputs_per_dim)
