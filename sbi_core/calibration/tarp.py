"""TARP: Tests of Accuracy with Random Points (Lemos et al. 2023).

For each observation ``b`` draw a random reference point ``r_b`` and compute the fraction of
posterior draws closer to it than the true parameters,
``f_b = mean_s[ ||theta_s - r_b|| < ||theta*_b - r_b|| ]``. The expected coverage probability
``ECP(a) = mean_b[f_b < a]`` equals ``a`` for every ``a`` if and only if the posterior is exact
(for references drawn from a distribution that does not depend on the truth). We report the ECP
curve, the area between it and the diagonal ("ATC", ``integral of ECP(a) - a``; in our tests
> 0 for underconfident and for biased posteriors, < 0 for overconfident ones, but a dispersion
error can also give an S-shaped curve with ATC near 0), and a KS test of ``f`` against U(0, 1),
which catches any departure. Both are gated.

Z-scoring (the sbi bug): distances are only meaningful if parameters with different units share
a scale, so we standardise. The *same* affine map, with mean and standard deviation taken from
the true parameters ``(B, P)`` of this batch, is applied to the true parameters, to every
posterior draw and to the reference points. sbi once z-scored the references with different
statistics from the draws/truths, which silently changes the reference distribution and the
test. Reference points are drawn uniformly from the bounding box of the z-scored true
parameters (the prior's typical range), as in the TARP paper; user-supplied references are given
in the original units and go through the same map.

References:
    Lemos, Coogan, Hezaveh & Perreault-Levasseur (2023), "Sampling-Based Accuracy Testing of
    Posterior Estimators for General Inference", ICML, arXiv:2302.03026.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float
from scipy import stats

from sbi_core.calibration._validation import as_samples_and_truth, check_levels
from sbi_core.calibration.coverage import DEFAULT_LEVELS


@dataclass(frozen=True)
class TARPResult:
    """TARP expected coverage, area-to-curve statistic and KS test.

    Attributes:
        levels: Credibility levels ``(K,)``.
        ecp: Expected coverage probability at each level ``(K,)``.
        coverage_values: Per-observation ``f_b`` ``(B,)``.
        atc: Signed area between ECP and the diagonal over [0, 1] (in [-0.5, 0.5]).
        ks_statistic: KS statistic of ``f`` against U(0, 1).
        ks_p_value: KS p-value.
    """

    levels: np.ndarray
    ecp: np.ndarray
    coverage_values: np.ndarray
    atc: float
    ks_statistic: float
    ks_p_value: float


def zscore_statistics(
    true_parameters: Float[np.ndarray, "B P"],
) -> tuple[Float[np.ndarray, " P"], Float[np.ndarray, " P"]]:
    """Mean and standard deviation of the true parameters, the one map used for everything."""
    mean = true_parameters.mean(axis=0)
    std = true_parameters.std(axis=0)
    # A constant parameter carries no distance information; keep it unscaled instead of / 0.
    std = np.where(std > 0, std, 1.0)
    return mean, std


def random_references(
    z_true: Float[np.ndarray, "B P"], rng: np.random.Generator
) -> Float[np.ndarray, "B P"]:
    """Uniform reference points in the bounding box of the (z-scored) true parameters."""
    low, high = z_true.min(axis=0), z_true.max(axis=0)
    return rng.uniform(low, high, size=z_true.shape)


def tarp_test(
    samples: Float[np.ndarray, "B S P"],
    true_parameters: Float[np.ndarray, "B P"],
    *,
    references: Float[np.ndarray, "B P"] | None = None,
    levels: Float[np.ndarray, " K"] = DEFAULT_LEVELS,
    seed: int = 0,
) -> TARPResult:
    """TARP coverage test (Lemos et al. 2023) with consistent z-scoring.

    Args:
        samples: Posterior draws ``(B, S, P)``.
        true_parameters: True parameters ``(B, P)``.
        references: Reference points ``(B, P)`` in the same units as ``true_parameters``;
            default: uniform in the bounding box of the true parameters, drawn with ``seed``.
        levels: Credibility levels for the ECP curve.
        seed: Seed of the reference-point generator.

    Returns:
        A :class:`TARPResult`.
    """
    samples, true_parameters = as_samples_and_truth(samples, true_parameters)
    levels = check_levels(levels)
    mean, std = zscore_statistics(true_parameters)
    z_true = (true_parameters - mean) / std
    z_samples = (samples - mean) / std
    if references is None:
        z_ref = random_references(z_true, np.random.default_rng(seed))
    else:
        references = np.asarray(references, dtype=np.float64)
        if references.shape != true_parameters.shape:
            raise ValueError(f"references must have shape {true_parameters.shape} (B, P); "
                             f"got {references.shape}")
        z_ref = (references - mean) / std
    d_samples = np.linalg.norm(z_samples - z_ref[:, None, :], axis=-1)  # (B, S)
    d_true = np.linalg.norm(z_true - z_ref, axis=-1)  # (B,)
    f = np.mean(d_samples < d_true[:, None], axis=1)
    ecp = np.mean(f[None, :] < levels[:, None], axis=1)
    ks = stats.kstest(f, "uniform")
    return TARPResult(levels, ecp, f, area_to_curve(f), float(ks.statistic), float(ks.pvalue))


def area_to_curve(coverage_values: Float[np.ndarray, " B"]) -> float:
    """Exact signed area ``integral_0^1 (ECP(a) - a) da`` from the per-observation values.

    ``ECP(a) = mean_b[f_b < a]`` integrates to ``1 - mean(f)``, so the area is ``0.5 - mean(f)``;
    computing it exactly avoids any dependence on the level grid.
    """
    return float(0.5 - np.mean(coverage_values))
