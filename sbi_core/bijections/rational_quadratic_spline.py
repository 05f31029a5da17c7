"""Monotone rational-quadratic spline on ``[-bound, bound]`` with identity tails.

Reference:
    Durkan, Bekasov, Murray, Papamakarios (2019), "Neural Spline Flows", NeurIPS, Section 3.1
    and Appendix A (forward map, derivative and the stable root of the inverse quadratic).

Layout: the bins (knots) are the *leading* axis of every knot array, and any trailing shape is a
batch of independent splines: ``x`` of shape ``S`` goes with knots of shape ``(num_bins + 1, *S)``.
A single spline is the case ``S = ()``. Keeping the bins major lets a whole batch of splines be
evaluated with the batch as the minor (contiguous) axis, which XLA:CPU vectorises; with the bins
minor (what ``vmap`` of the one-spline form produces) every elementwise step ran over rows of 10
and the spline arithmetic dominated a training step (``docs/decisions.md``, "Spline layout").
Bin lookup uses a one-hot select instead of a gather: for the 4-16 bins used in practice it
vectorises better on CPU and has a trivially correct gradient.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

#: Smallest bin width/height as a fraction of the interval and smallest knot derivative. They keep
#: every bin invertible in float32 (no zero-width bins, no flat segments).
MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
# squareplus(_DERIVATIVE_SHIFT) + MIN_DERIVATIVE == 1 (squareplus^-1(y) = y - 1/y): a zero raw
# derivative gives slope 1, so a zero-initialised conditioner yields the identity spline.
_DERIVATIVE_SHIFT = (1.0 - MIN_DERIVATIVE) - 1.0 / (1.0 - MIN_DERIVATIVE)


class SplineKnots(NamedTuple):
    """Knots of a batch ``S`` of splines: positions ``x``/``y`` and derivatives ``d``
    (``(num_bins + 1, *S)`` each), plus the normalised bin widths/heights (``(num_bins, *S)``,
    each summing to 1 over the leading axis)."""

    x: Float[Array, "knots *batch"]
    y: Float[Array, "knots *batch"]
    derivatives: Float[Array, "knots *batch"]
    widths: Float[Array, "bins *batch"]
    heights: Float[Array, "bins *batch"]


def _normalised_bins(raw: Float[Array, "bins *batch"], minimum: float) -> Float[Array, "bins *batch"]:
    num_bins = raw.shape[0]
    return minimum + (1.0 - minimum * num_bins) * jax.nn.softmax(raw, axis=0)


def _knot_positions(fractions: Float[Array, "bins *batch"], bound: float) -> Float[Array, "knots *batch"]:
    zero = jnp.zeros((1, *fractions.shape[1:]), fractions.dtype)
    cumulative = jnp.concatenate([zero, jnp.cumsum(fractions, axis=0)])
    # Pin the end knots exactly: float32 cumsum drift would otherwise open a gap at the boundary.
    positions = (2.0 * cumulative - 1.0) * bound
    return positions.at[0].set(-bound).at[-1].set(bound)


def spline_knots(raw_widths: Float[Array, "bins *batch"], raw_heights: Float[Array, "bins *batch"],
                 raw_derivatives: Float[Array, "bins_minus_1 *batch"], bound: float) -> SplineKnots:
    """Turn unconstrained conditioner outputs into valid knots (bins on the leading axis).

    Args:
        raw_widths: unnormalised log-widths, one per bin (softmax-normalised over the bins).
        raw_heights: unnormalised log-heights, one per bin.
        raw_derivatives: unconstrained interior knot derivatives (``num_bins - 1``, mapped by
            ``MIN_DERIVATIVE + squareplus(raw + shift)``); the two
            boundary derivatives are fixed at 1 so the spline joins the identity tails smoothly.
        bound: half-width of the spline interval.

    Returns:
        The knots; all zeros in, identity spline out.
    """
    widths = _normalised_bins(raw_widths, MIN_BIN_WIDTH)
    heights = _normalised_bins(raw_heights, MIN_BIN_HEIGHT)
    # squareplus (Barron 2021) instead of softplus: same shape where it matters, linear growth,
    # and it vectorises on XLA:CPU where a fused softplus does not (measured ~40x per element).
    interior = MIN_DERIVATIVE + jax.nn.squareplus(raw_derivatives + _DERIVATIVE_SHIFT)
    one = jnp.ones((1, *interior.shape[1:]), interior.dtype)
    derivatives = jnp.concatenate([one, interior, one])
    return SplineKnots(_knot_positions(widths, bound), _knot_positions(heights, bound),
                       derivatives, widths, heights)


def _bin_values(value, edges, knots: SplineKnots):
    """Left/right knot values of the bin containing ``value`` (one-hot select over the bins)."""
    index = jnp.sum(value >= edges[1:-1], axis=0)
    bins = jnp.arange(edges.shape[0] - 1).reshape(-1, *(1,) * value.ndim)
    onehot = bins == index

    def pick(array):
        return jnp.sum(jnp.where(onehot, array, 0.0), axis=0)

    return (pick(knots.x[:-1]), pick(knots.x[1:]), pick(knots.y[:-1]), pick(knots.y[1:]),
            pick(knots.derivatives[:-1]), pick(knots.derivatives[1:]))


def _log_slope(xi, slope, d0, d1):
    """log dy/dx inside a bin at relative position ``xi`` (Durkan et al. 2019, eq. 5)."""
    t = xi * (1.0 - xi)
    denominator = slope + (d1 + d0 - 2.0 * slope) * t
    numerator = d1 * xi**2 + 2.0 * slope * t + d0 * (1.0 - xi) ** 2
    # One log of the ratio: every factor is within ~[1e-6, 1e6] thanks to the bin/derivative
    # floors, so the product cannot under/overflow in float32, and it saves two logs per call.
    return jnp.log(slope * slope * numerator / (denominator * denominator))


def rqs_forward(x: Float[Array, "*batch"], knots: SplineKnots, bound: float
                ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """Apply the splines to ``x`` elementwise; identity outside ``[-bound, bound]``.

    Returns:
        ``(y, log|dy/dx|)``.
    """
    inside = jnp.abs(x) < bound
    # Evaluate on a clipped copy so the unused branch never produces NaN (or NaN gradients).
    xc = jnp.clip(x, -bound, bound)
    x0, x1, y0, y1, d0, d1 = _bin_values(xc, knots.x, knots)
    width, height = x1 - x0, y1 - y0
    slope = height / width
    xi = (xc - x0) / width
    t = xi * (1.0 - xi)
    y = y0 + height * (slope * xi**2 + d0 * t) / (slope + (d1 + d0 - 2.0 * slope) * t)
    log_det = _log_slope(xi, slope, d0, d1)
    return jnp.where(inside, y, x), jnp.where(inside, log_det, 0.0)


def rqs_inverse(y: Float[Array, "*batch"], knots: SplineKnots, bound: float
                ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """Invert the splines at ``y`` elementwise; identity outside ``[-bound, bound]``.

    The bin-local quadratic ``a xi^2 + b xi + c = 0`` is solved with the cancellation-free root
    ``xi = 2c / (-b - sqrt(b^2 - 4ac))`` (Durkan et al. 2019, Appendix A), robust in float32.

    Returns:
        ``(x, log|dx/dy|)``.
    """
    inside = jnp.abs(y) < bound
    yc = jnp.clip(y, -bound, bound)
    x0, x1, y0, y1, d0, d1 = _bin_values(yc, knots.y, knots)
    width, height = x1 - x0, y1 - y0
    slope = height / width
    offset = yc - y0
    curvature = d1 + d0 - 2.0 * slope
    a = height * (slope - d0) + offset * curvature
    b = height * d0 - offset * curvature
    c = -slope * offset
    discriminant = jnp.maximum(b**2 - 4.0 * a * c, 0.0)
    xi = jnp.clip(2.0 * c / (-b - jnp.sqrt(discriminant)), 0.0, 1.0)
    x = x0 + xi * width
    log_det = -_log_slope(xi, slope, d0, d1)
    return jnp.where(inside, x, y), jnp.where(inside, log_det, 0.0)


def spline_statistics(knots: SplineKnots) -> dict[str, Array]:
    """Shape statistics the posterior's spline regularisers penalise.

    Returns:
        Per spline of the batch ``S``: ``min_bin_width_ratio`` / ``min_bin_height_ratio``
        (shape ``S``): smallest bin over the uniform bin size ``1/num_bins`` (1 for a uniform
        spline, -> 0 for a collapsing bin); ``bin_width_entropy`` / ``bin_height_entropy``:
        Shannon entropy of the normalised widths/heights divided by ``log(num_bins)`` (1 =
        uniform); ``knot_derivatives`` (shape ``(*S, num_bins - 1)``, bins last like the other
        per-spline statistics' batch): the interior knot derivatives.
    """
    num_bins = knots.widths.shape[0]

    def entropy(p):
        return -jnp.sum(p * jnp.log(p), axis=0) / math.log(num_bins)

    return {
        "min_bin_width_ratio": jnp.min(knots.widths, axis=0) * num_bins,
        "min_bin_height_ratio": jnp.min(knots.heights, axis=0) * num_bins,
        "bin_width_entropy": entropy(knots.widths),
        "bin_height_entropy": entropy(knots.heights),
        "knot_derivatives": jnp.moveaxis(knots.derivatives[1:-1], 0, -1),
    }
