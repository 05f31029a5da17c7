"""Conditional rational-quadratic spline coupling layer (neural spline flow).

Reference:
    Durkan, Bekasov, Murray, Papamakarios (2019), "Neural Spline Flows", NeurIPS.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from sbi_core.bijections.base import AbstractBijection, BatchContext, check_float, check_int, context_axis
from sbi_core.bijections.conditioner import MLP, coupling_split
from sbi_core.bijections.rational_quadratic_spline import (
    MIN_BIN_HEIGHT, MIN_BIN_WIDTH, SplineKnots, rqs_forward, rqs_inverse, spline_knots,
    spline_statistics)


class SplineCoupling(AbstractBijection):
    """Coupling layer whose transformed block goes through per-coordinate RQ splines.

    ``x_a = x[:dim // 2]`` conditions (with the context) the knots of one spline per coordinate
    of ``x_b = x[dim // 2:]``. Each spline covers ``[-spline_bound, spline_bound]`` with
    ``num_bins`` bins and is the identity outside. A zero-initialised conditioner output gives
    uniform bins and unit derivatives: the identity map. For ``dim == 1`` the spline depends on
    the context only.

    Attributes:
        conditioner: MLP ``(x_a, context) -> (3 * num_bins - 1)`` raw knot values per coordinate.
        dim, split, num_bins, spline_bound: static sizes.
    """

    conditioner: MLP
    dim: int = eqx.field(static=True)
    split: int = eqx.field(static=True)
    num_bins: int = eqx.field(static=True)
    spline_bound: float = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, dim: int, context_dim: int, hidden_dim: int,
                 conditioner_depth: int, num_bins: int, spline_bound: float):
        self.dim = check_int("dim", dim, 1)
        check_int("context_dim", context_dim, 0)
        self.num_bins = check_int("num_spline_bins", num_bins, 2)
        if num_bins * max(MIN_BIN_WIDTH, MIN_BIN_HEIGHT) >= 1.0:
            raise ValueError(f"num_spline_bins must be < {int(1 / MIN_BIN_WIDTH)} (the minimum "
                             f"bin width is {MIN_BIN_WIDTH} of the interval), got {num_bins}")
        self.spline_bound = check_float("spline_bound", spline_bound, low=0.0)
        self.split = coupling_split(dim)
        self.conditioner = MLP(key, self.split + context_dim,
                               (dim - self.split) * (3 * num_bins - 1),
                               check_int("hidden_dim", hidden_dim, 1),
                               check_int("conditioner_depth", conditioner_depth, 1))

    def _knots(self, raw: Float[Array, "*batch outputs"]) -> SplineKnots:
        """Knots from conditioner outputs ``(*batch, n_t * (3K - 1))``, bins leading: each
        knot array has shape ``(K + 1, n_t, *batch)`` (batch minor, see the spline module)."""
        k = self.num_bins
        raw = raw.reshape(*raw.shape[:-1], self.dim - self.split, 3 * k - 1)
        raw = jnp.moveaxis(raw, (-1, -2), (0, 1))  # (3K - 1, n_t, *batch)
        return spline_knots(raw[:k], raw[k : 2 * k], raw[2 * k :], self.spline_bound)

    def _apply(self, fn, value, context):
        value_a, value_b = value[: self.split], value[self.split :]
        knots = self._knots(self.conditioner(value_a, context))
        out_b, log_det = fn(value_b, knots, self.spline_bound)
        return jnp.concatenate([value_a, out_b]), jnp.sum(log_det), knots

    def _apply_batch(self, fn, value, context):
        value_a, value_b = value[:, : self.split], value[:, self.split :]
        raw = jax.vmap(self.conditioner, in_axes=(0, context_axis(context)))(value_a, context)
        # The splines run on (n_t, n) arrays: the batch is the contiguous axis XLA vectorises.
        out_b, log_det = fn(value_b.T, self._knots(raw), self.spline_bound)
        return jnp.concatenate([value_a, out_b.T], axis=1), jnp.sum(log_det, axis=0)

    def forward(self, x: Float[Array, " dim"], context: Float[Array, " context_dim"]):
        z, log_det, _ = self._apply(rqs_forward, x, context)
        return z, log_det

    def inverse(self, z: Float[Array, " dim"], context: Float[Array, " context_dim"]):
        x, log_det, _ = self._apply(rqs_inverse, z, context)
        return x, log_det

    def forward_batch(self, x: Float[Array, "n dim"], context: BatchContext):
        return self._apply_batch(rqs_forward, x, context)

    def inverse_batch(self, z: Float[Array, "n dim"], context: BatchContext):
        return self._apply_batch(rqs_inverse, z, context)

    def forward_with_statistics(self, x, context):
        """Forward pass plus :func:`spline_statistics` per transformed coordinate
        (leading axis ``dim - dim // 2``)."""
        z, log_det, knots = self._apply(rqs_forward, x, context)
        return z, log_det, spline_statistics(knots)
