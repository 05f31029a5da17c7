"""Marginal P-P curves, posterior z-scores and posterior contraction.

P-P: for each parameter the posterior CDF at the truth, ``u = F_post(theta*)`` (estimated by the
normalised SBC rank), is U(0, 1) for a calibrated posterior; the P-P curve plots
``mean_b[u_b < a]`` against ``a`` and a KS test gives a p-value (this is the same information
as the SBC KS test, shown as a curve; it is reported, not gated on twice).

Z-score and contraction summarise accuracy and information gain per parameter (Schad, Betancourt
& Vasishth 2021, "Toward a principled Bayesian workflow in cognitive science"):
``z = (posterior mean - theta*) / posterior sd`` (mean ~0 and sd ~1 when calibrated; a shifted
mean is bias, sd > 1 is overconfidence) and ``contraction = 1 - posterior var / prior var``
(near 1: the data pin the parameter down; near 0: prior-dominated).

References:
    Talts et al. (2018), "Validating Bayesian Inference Algorithms with Simulation-Based
    Calibration". Schad, Betancourt & Vasishth (2021), Psychological Methods 26(1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float
from scipy import stats

from sbi_core.calibration._validation import as_samples_and_truth, check_levels
from sbi_core.calibration.coverage import DEFAULT_LEVELS
from sbi_core.calibration.sbc import normalised_ranks, sbc_ranks


@dataclass(frozen=True)
class PPResult:
    """Marginal P-P curves and per-parameter z-score / contraction summaries.

    Attributes:
        levels: Nominal levels ``(K,)``.
        pp_curves: Empirical CDF of ``u`` at each level, per parameter ``(P, K)``.
        ks_p_value: KS p-value of ``u`` against U(0, 1) per parameter ``(P,)``.
        z_scores: Posterior z-scores ``(B, P)``.
        z_score_mean: Mean z-score per parameter ``(P,)`` (bias indicator).
        z_score_std: Standard deviation of the z-scores per parameter ``(P,)`` (~1 if calibrated).
        contraction: Mean posterior contraction per parameter ``(P,)``.
    """

    levels: np.ndarray
    pp_curves: np.ndarray
    ks_p_value: np.ndarray
    z_scores: np.ndarray
    z_score_mean: np.ndarray
    z_score_std: np.ndarray
    contraction: np.ndarray


def posterior_z_scores(
    samples: Float[np.ndarray, "B S P"], true_parameters: Float[np.ndarray, "B P"]
) -> Float[np.ndarray, "B P"]:
    """``(posterior mean - truth) / posterior sd`` per observation and parameter."""
    sd = samples.std(axis=1, ddof=1)
    return (samples.mean(axis=1) - true_parameters) / np.where(sd > 0, sd, np.finfo(float).tiny)


def posterior_contraction(
    samples: Float[np.ndarray, "B S P"], prior_variance: Float[np.ndarray, " P"]
) -> Float[np.ndarray, "B P"]:
    """``1 - posterior variance / prior variance`` per observation and parameter."""
    return 1.0 - samples.var(axis=1, ddof=1) / prior_variance


def pp_and_z_scores(
    samples: Float[np.ndarray, "B S P"],
    true_parameters: Float[np.ndarray, "B P"],
    *,
    prior_variance: Float[np.ndarray, " P"] | None = None,
    levels: Float[np.ndarray, " K"] = DEFAULT_LEVELS,
) -> PPResult:
    """Marginal P-P curves with KS p-values, z-scores and contraction.

    Args:
        samples: Posterior draws ``(B, S, P)``.
        true_parameters: True parameters ``(B, P)``, drawn from the prior.
        prior_variance: Prior variance per parameter; default: the variance of
            ``true_parameters`` (a prior sample in the SBC setting).
        levels: Nominal levels of the P-P curves.

    Returns:
        A :class:`PPResult`.
    """
    samples, true_parameters = as_samples_and_truth(samples, true_parameters)
    levels = check_levels(levels)
    if prior_variance is None:
        prior_variance = true_parameters.var(axis=0, ddof=1)
    prior_variance = np.asarray(prior_variance, dtype=np.float64)
    if prior_variance.shape != (samples.shape[2],) or np.any(prior_variance <= 0):
        raise ValueError(f"prior_variance must be positive with shape ({samples.shape[2]},); "
                         f"got {prior_variance}")
    u = normalised_ranks(sbc_ranks(samples, true_parameters), samples.shape[1])
    curves = np.mean(u[None, :, :] < levels[:, None, None], axis=1).T  # (P, K)
    ks_p = np.array([stats.kstest(u[:, p], "uniform").pvalue for p in range(u.shape[1])])
    z = posterior_z_scores(samples, true_parameters)
    contraction = posterior_contraction(samples, prior_variance).mean(axis=0)
    return PPResult(levels, curves, ks_p, z, z.mean(axis=0), z.std(axis=0, ddof=1), contraction)
