"""Learned, unconditional elementwise affine map (the optional base affine, ``use_base_affine``)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from sbi_core.bijections.affine_coupling import affine_scale
from sbi_core.bijections.base import AbstractBijection, check_int


class ElementwiseAffine(AbstractBijection):
    """``z = x * scale + shift`` with learned ``shift`` and softplus-positive ``scale``.

    Placed last in the density direction, it turns the standard base distribution into a learned
    diagonal location-scale family. Zero-initialised, so it starts as the identity.

    Attributes:
        shift: ``(dim,)`` offsets.
        raw_scale: ``(dim,)`` unconstrained scales (``affine_scale`` makes them positive).
    """

    shift: Float[Array, " dim"]
    raw_scale: Float[Array, " dim"]

    def __init__(self, dim: int):
        check_int("dim", dim, 1)
        self.shift = jnp.zeros(dim)
        self.raw_scale = jnp.zeros(dim)

    def forward(self, x: Float[Array, " dim"], context=None):
        scale = affine_scale(self.raw_scale)
        return x * scale + self.shift, jnp.sum(jnp.log(scale))

    def inverse(self, z: Float[Array, " dim"], context=None):
        scale = affine_scale(self.raw_scale)
        return (z - self.shift) / scale, -jnp.sum(jnp.log(scale))
