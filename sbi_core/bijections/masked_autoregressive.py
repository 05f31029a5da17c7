"""Conditional masked autoregressive flow layer with an affine transformer (MAF).

Reference:
    Papamakarios, Pavlakou, Murray (2017), "Masked Autoregressive Flow for Density
    Estimation", NeurIPS. Germain et al. (2015) for the MADE masks.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from sbi_core.bijections.affine_coupling import affine_scale
from sbi_core.bijections.base import AbstractBijection, check_int
from sbi_core.bijections.conditioner import MaskedMLP


def made_hidden_width(dim: int, hidden_dim: int, transform_units: int) -> int:
    """Hidden width of the MADE: ``max(hidden_dim, transform_units * dim)``.

    ``autoregressive_transform_units`` is read as the minimum number of MADE hidden units per
    input dimension, so the conditioner's capacity per coordinate does not shrink as the
    parameter dimension grows (hidden degrees are shared cyclically among the coordinates).
    """
    return max(hidden_dim, transform_units * dim)


class MaskedAutoregressive(AbstractBijection):
    """``z_i = x_i * scale_i(x_{<i}, c) + shift_i(x_{<i}, c)`` in one MADE pass.

    The density direction (``forward``) costs one conditioner pass; sampling (``inverse``) costs
    ``dim`` passes, run as a ``lax.fori_loop``. Coordinate order is the identity; the flow
    reverses coordinates between layers.

    Attributes:
        made: masked conditioner returning ``(dim, 2)`` = (shift, raw scale).
        dim: number of coordinates.
    """

    made: MaskedMLP
    dim: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, dim: int, context_dim: int, hidden_dim: int,
                 conditioner_depth: int, transform_units: int):
        self.dim = check_int("dim", dim, 1)
        width = made_hidden_width(dim, check_int("hidden_dim", hidden_dim, 1),
                                  check_int("autoregressive_transform_units", transform_units, 1))
        self.made = MaskedMLP(key, dim, check_int("context_dim", context_dim, 0), width,
                              check_int("conditioner_depth", conditioner_depth, 1), 2)

    def _shift_and_scale(self, x, context):
        raw = self.made(x, context)
        return raw[:, 0], affine_scale(raw[:, 1])

    def forward(self, x: Float[Array, " dim"], context: Float[Array, " context_dim"]):
        shift, scale = self._shift_and_scale(x, context)
        return x * scale + shift, jnp.sum(jnp.log(scale))

    def inverse(self, z: Float[Array, " dim"], context: Float[Array, " context_dim"]):
        def one_pass(_, x):
            # After pass i, coordinates 0..i are exact (each depends only on earlier ones).
            shift, scale = self._shift_and_scale(x, context)
            return (z - shift) / scale

        x = jax.lax.fori_loop(0, self.dim, one_pass, jnp.zeros_like(z))
        _, scale = self._shift_and_scale(x, context)
        return x, -jnp.sum(jnp.log(scale))
