"""Hand-written conditional bijections (one family per module) for the conditional flows.

Convention: ``forward`` maps parameters to latent (density direction), ``inverse`` maps latent
to parameters (sampling direction); both act on one sample and return ``(output, log|det J|)``.
See ``docs/decisions.md (Flows are hand-written)`` for why these are written here rather than imported.
"""

from sbi_core.bijections.affine_coupling import AffineCoupling
from sbi_core.bijections.base import AbstractBijection, Chain, Repeated
from sbi_core.bijections.elementwise_affine import ElementwiseAffine
from sbi_core.bijections.masked_autoregressive import MaskedAutoregressive
from sbi_core.bijections.neural_autoregressive import NeuralAutoregressive
from sbi_core.bijections.permutation import Permutation
from sbi_core.bijections.rational_quadratic_spline import (
    SplineKnots, rqs_forward, rqs_inverse, spline_knots, spline_statistics)
from sbi_core.bijections.spline_coupling import SplineCoupling

__all__ = [
    "AbstractBijection", "AffineCoupling", "Chain", "ElementwiseAffine", "MaskedAutoregressive",
    "NeuralAutoregressive", "Permutation", "Repeated", "SplineCoupling", "SplineKnots",
    "rqs_forward", "rqs_inverse", "spline_knots", "spline_statistics",
]
