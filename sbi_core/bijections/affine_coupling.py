"""Conditional affine coupling layer (RealNVP).

Reference:
    Dinh, Sohl-Dickstein, Bengio (2017), "Density estimation using Real NVP", ICLR.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from sbi_core.bijections.base import AbstractBijection, check_int
from sbi_core.bijections.conditioner import MLP, bounded_exp, coupling_split

#: Floor on the affine scale: keeps log|det| finite and the inverse well conditioned in float32.
MIN_SCALE = 1e-4
#: One layer scales by at most exp(+-LOG_SCALE_BOUND); several layers compose beyond that.
LOG_SCALE_BOUND = 8.0


def affine_scale(raw: Array) -> Array:
    """Positive scale from an unconstrained value: exactly 1 at ``raw = 0`` (identity start),
    multiplicative (exp-like) around it, bounded so a runaway conditioner cannot overflow."""
    return MIN_SCALE + (1.0 - MIN_SCALE) * bounded_exp(raw, LOG_SCALE_BOUND)


class AffineCoupling(AbstractBijection):
    """``z_b = x_b * scale(x_a, c) + shift(x_a, c)``, ``z_a = x_a``, with ``a = x[:dim // 2]``.

    For ``dim == 1`` the conditioned block is empty and the layer is an affine map whose shift
    and scale depend on the context only.

    Attributes:
        conditioner: MLP ``(x_a, context) -> (shift, raw_scale)`` for the transformed block.
        dim: number of coordinates.
        split: number of conditioning coordinates.
    """

    conditioner: MLP
    dim: int = eqx.field(static=True)
    split: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, dim: int, context_dim: int, hidden_dim: int,
                 conditioner_depth: int):
        self.dim = check_int("dim", dim, 1)
        check_int("context_dim", context_dim, 0)
        self.split = coupling_split(dim)
        self.conditioner = MLP(key, self.split + context_dim, 2 * (dim - self.split),
                               check_int("hidden_dim", hidden_dim, 1),
                               check_int("conditioner_depth", conditioner_depth, 1))

    def _shift_and_scale(self, x_a, context):
        raw = self.conditioner(x_a, context).reshape(2, -1)
        return raw[0], affine_scale(raw[1])

    def forward(self, x: Float[Array, " dim"], context: Float[Array, " context_dim"]):
        x_a, x_b = x[: self.split], x[self.split :]
        shift, scale = self._shift_and_scale(x_a, context)
        z = jnp.concatenate([x_a, x_b * scale + shift])
        return z, jnp.sum(jnp.log(scale))

    def inverse(self, z: Float[Array, " dim"], context: Float[Array, " context_dim"]):
        z_a, z_b = z[: self.split], z[self.split :]
        shift, scale = self._shift_and_scale(z_a, context)
        x = jnp.concatenate([z_a, (z_b - shift) / scale])
        return x, -jnp.sum(jnp.log(scale))
