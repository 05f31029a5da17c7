"""Simulation-based calibration (SBC) ranks and uniformity tests.

For each observation and parameter the SBC rank is the number of posterior draws below the true
value, ``r = sum_s [theta_s < theta*]`` in ``{0, ..., S}``. If the posterior is the exact
posterior and the true parameters were drawn from the prior, the ranks are uniform on
``{0, ..., S}`` (Talts et al. 2018). A U-shaped histogram means overconfident, a hump means
underconfident, a slope means biased.

Two uniformity tests are reported per parameter:

* chi-square on a histogram of the ranks with ``num_bins`` equal-width bins (Talts et al. suggest
  enough observations per bin; by default ``min(20, max(2, B // 10))`` bins, i.e. >= 10 expected
  per bin);
* Kolmogorov-Smirnov of the normalised ranks ``(r + 0.5) / (S + 1)`` against U(0, 1) (the half
  offset centres each discrete rank inside its cell).

References:
    Talts, Betancourt, Simpson, Vehtari & Gelman (2018), "Validating Bayesian Inference
    Algorithms with Simulation-Based Calibration", arXiv:1804.06788.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int
from scipy import stats

from sbi_core.calibration._validation import as_samples_and_truth


@dataclass(frozen=True)
class SBCResult:
    """SBC ranks and per-parameter uniformity tests.

    Attributes:
        ranks: Integer ranks ``(B, P)`` in ``{0, ..., S}``.
        num_samples: ``S``, the number of posterior draws per observation.
        num_bins: Number of histogram bins of the chi-square test.
        chi2_statistic: Chi-square statistic per parameter ``(P,)``.
        chi2_p_value: Chi-square p-value per parameter ``(P,)``.
        ks_statistic: KS statistic per parameter ``(P,)``.
        ks_p_value: KS p-value per parameter ``(P,)``.
    """

    ranks: np.ndarray
    num_samples: int
    num_bins: int
    chi2_statistic: np.ndarray
    chi2_p_value: np.ndarray
    ks_statistic: np.ndarray
    ks_p_value: np.ndarray


def sbc_ranks(
    samples: Float[np.ndarray, "B S P"], true_parameters: Float[np.ndarray, "B P"]
) -> Int[np.ndarray, "B P"]:
    """Number of posterior draws below the true value, per observation and parameter."""
    samples, true_parameters = as_samples_and_truth(samples, true_parameters)
    return np.sum(samples < true_parameters[:, None, :], axis=1).astype(np.int64)


def default_num_bins(num_observations: int) -> int:
    """Histogram bins with about 10 or more expected ranks per bin, at most 20."""
    return int(min(20, max(2, num_observations // 10)))


def normalised_ranks(ranks: Int[np.ndarray, "B P"], num_samples: int) -> Float[np.ndarray, "B P"]:
    """Ranks mapped into (0, 1): ``(r + 0.5) / (S + 1)``; U(0, 1) for a calibrated posterior."""
    return (np.asarray(ranks, dtype=np.float64) + 0.5) / (num_samples + 1)


def rank_histogram(
    ranks: Int[np.ndarray, " B"], num_samples: int, num_bins: int
) -> Int[np.ndarray, " K"]:
    """Counts of ranks in ``num_bins`` equal-width bins over ``[0, S + 1)``."""
    edges = np.linspace(0.0, num_samples + 1, num_bins + 1)
    counts, _ = np.histogram(ranks, bins=edges)
    return counts


def sbc_test(
    samples: Float[np.ndarray, "B S P"],
    true_parameters: Float[np.ndarray, "B P"],
    *,
    num_bins: int | None = None,
) -> SBCResult:
    """SBC ranks with chi-square and KS uniformity tests per parameter (Talts et al. 2018).

    Args:
        samples: Posterior draws ``(B, S, P)``.
        true_parameters: True parameters ``(B, P)``, drawn from the prior.
        num_bins: Chi-square histogram bins; default :func:`default_num_bins`.

    Returns:
        An :class:`SBCResult`.
    """
    samples, true_parameters = as_samples_and_truth(samples, true_parameters)
    n_obs, n_samples, n_par = samples.shape
    bins = default_num_bins(n_obs) if num_bins is None else int(num_bins)
    if bins < 2:
        raise ValueError(f"num_bins must be >= 2; got {num_bins}")
    ranks = sbc_ranks(samples, true_parameters)
    u = normalised_ranks(ranks, n_samples)
    chi2_stat, chi2_p, ks_stat, ks_p = (np.empty(n_par) for _ in range(4))
    for p in range(n_par):
        counts = rank_histogram(ranks[:, p], n_samples, bins)
        # Expected counts follow the exact discrete mass of each bin (bins may hold unequal
        # numbers of the S + 1 possible ranks).
        edges = np.linspace(0.0, n_samples + 1, bins + 1)
        per_bin = np.diff(np.ceil(edges)).clip(min=0)
        expected = n_obs * per_bin / per_bin.sum()
        chi2_stat[p], chi2_p[p] = stats.chisquare(counts, expected)
        ks = stats.kstest(u[:, p], "uniform")
        ks_stat[p], ks_p[p] = ks.statistic, ks.pvalue
    return SBCResult(ranks, n_samples, bins, chi2_stat, chi2_p, ks_stat, ks_p)
