"""Fixed coordinate permutations (no parameters, log|det| = 0)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from sbi_core.bijections.base import AbstractBijection, check_int


class Permutation(AbstractBijection):
    """``z = x[indices]``. The indices are static, so stacked layers share them.

    Attributes:
        indices: the permutation of ``range(dim)`` as a tuple.
    """

    indices: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, indices):
        indices = tuple(int(i) for i in np.asarray(indices).reshape(-1))
        if sorted(indices) != list(range(len(indices))) or not indices:
            raise ValueError(f"Permutation indices must be a permutation of range(n), n >= 1; "
                             f"got {indices}")
        self.indices = indices

    @classmethod
    def reverse(cls, dim: int) -> Permutation:
        """The coordinate reversal used between coupling/autoregressive layers: each coordinate
        is conditioned on by the next layer's transformed ones."""
        return cls(tuple(range(check_int("dim", dim, 1) - 1, -1, -1)))

    def forward(self, x: Float[Array, " dim"], context=None):
        return x[np.asarray(self.indices)], jnp.zeros((), x.dtype)

    def inverse(self, z: Float[Array, " dim"], context=None):
        return z[np.argsort(self.indices)], jnp.zeros((), z.dtype)

    def forward_batch(self, x: Float[Array, "n dim"], context=None):
        return x[:, np.asarray(self.indices)], jnp.zeros(x.shape[:1], x.dtype)

    def inverse_batch(self, z: Float[Array, "n dim"], context=None):
        return z[:, np.argsort(self.indices)], jnp.zeros(z.shape[:1], z.dtype)
