"""Expected coverage of highest-posterior-density (HPD) regions.

For each observation the *HPD credibility* of the true parameters is the posterior mass with a
higher density than the truth, estimated from posterior draws as
``alpha_b = mean_s[log q(theta_s) > log q(theta*_b)]``. The HPD region of credibility ``a``
contains the truth iff ``alpha_b < a``, so the empirical (expected) coverage at level ``a`` is
``mean_b[alpha_b < a]``; a calibrated posterior has ``alpha_b ~ U(0, 1)`` and coverage equal to
the nominal level. Coverage below nominal means overconfident, above means underconfident.

The calibration error is the mean over levels of ``|empirical - nominal|``. Beside it we report
the Monte-Carlo floor: with ``N`` observations an exactly calibrated posterior still scatters by
``sqrt(a (1 - a) / N)`` at level ``a`` (binomial standard deviation), so the calibration error can
only be judged against that floor.

References:
    Hermans, Delaunoy, Rozet, Wehenkel, Begy & Louppe (2022), "A Trust Crisis In
    Simulation-Based Inference? Your Posterior Approximations Can Be Unfaithful", TMLR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from sbi_core.calibration._validation import as_log_probs, as_samples_and_truth, check_levels

DEFAULT_LEVELS: np.ndarray = np.round(np.linspace(0.01, 0.99, 99), 2)
"""Default grid of credibility levels (0.01, 0.02, ..., 0.99)."""


@dataclass(frozen=True)
class CoverageResult:
    """Expected coverage of HPD regions on a grid of credibility levels.

    Attributes:
        levels: Nominal credibility levels ``(K,)``.
        coverage: Empirical coverage at each level ``(K,)``.
        floor: Monte-Carlo standard deviation ``sqrt(a (1 - a) / N)`` at each level ``(K,)``.
        hpd_credibility: Per-observation HPD credibility of the truth ``(B,)``.
        calibration_error: Mean over levels of ``|coverage - levels|``.
        calibration_error_floor: Mean over levels of ``floor``.
        density_source: ``"log_prob"`` (the posterior's own density) or
            ``"gaussian_approximation"`` (a Gaussian fitted to the draws; see ``hpd_credibility``).
    """

    levels: np.ndarray
    coverage: np.ndarray
    floor: np.ndarray
    hpd_credibility: np.ndarray
    calibration_error: float
    calibration_error_floor: float
    density_source: str


def hpd_credibility(
    log_prob_samples: Float[np.ndarray, "B S"], log_prob_true: Float[np.ndarray, " B"]
) -> Float[np.ndarray, " B"]:
    """Posterior mass above the density of the truth, per observation.

    Ties (equal densities) count half, so a discrete set of draws does not bias the estimate.

    Args:
        log_prob_samples: ``log q(theta_s | x_b)`` of the posterior draws.
        log_prob_true: ``log q(theta*_b | x_b)`` of the true parameters.

    Returns:
        ``alpha_b`` in [0, 1]; ~U(0, 1) for a calibrated posterior (Hermans et al. 2022).
    """
    truth = log_prob_true[:, None]
    above = np.mean(log_prob_samples > truth, axis=1)
    ties = np.mean(log_prob_samples == truth, axis=1)
    return above + 0.5 * ties


def gaussian_log_prob(
    samples: Float[np.ndarray, "B S P"], points: Float[np.ndarray, "B M P"]
) -> Float[np.ndarray, "B M"]:
    """Log-density of ``points`` under a Gaussian fitted to each observation's draws.

    Used only when the posterior's own ``log_prob`` is not available; the HPD regions are then
    those of the Gaussian approximation (ellipsoids), which is exact for Gaussian posteriors and
    an approximation otherwise. The report records which density was used.
    """
    mean = samples.mean(axis=1, keepdims=True)
    centred = samples - mean
    cov = np.einsum("bsi,bsj->bij", centred, centred) / (samples.shape[1] - 1)
    cov += 1e-12 * np.eye(cov.shape[-1]) * np.trace(cov, axis1=1, axis2=2)[:, None, None]
    chol = np.linalg.cholesky(cov)
    diff = np.swapaxes(points - mean, 1, 2)  # (B, P, M)
    solved = np.linalg.solve(chol, diff)
    log_det = np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
    return -0.5 * np.sum(solved**2, axis=1) - log_det[:, None]


def expected_coverage(
    samples: Float[np.ndarray, "B S P"],
    true_parameters: Float[np.ndarray, "B P"],
    log_prob_samples: Float[np.ndarray, "B S"] | None = None,
    log_prob_true: Float[np.ndarray, " B"] | None = None,
    *,
    levels: Float[np.ndarray, " K"] = DEFAULT_LEVELS,
) -> CoverageResult:
    """Expected coverage of HPD regions and the calibration error (Hermans et al. 2022).

    Args:
        samples: Posterior draws ``(B, S, P)``.
        true_parameters: True parameters ``(B, P)``.
        log_prob_samples: Posterior log-density of the draws ``(B, S)``; with ``log_prob_true``.
        log_prob_true: Posterior log-density of the true parameters ``(B,)``.
        levels: Credibility levels strictly inside (0, 1), increasing.

    Returns:
        A :class:`CoverageResult`. Without log-densities a Gaussian fitted to the draws defines
        the HPD regions (``density_source="gaussian_approximation"``).

    Raises:
        ValueError: On mismatched shapes, non-finite inputs, or only one of the log-densities.
    """
    samples, true_parameters = as_samples_and_truth(samples, true_parameters)
    levels = check_levels(levels)
    n_obs, n_samples, _ = samples.shape
    if (log_prob_samples is None) != (log_prob_true is None):
        raise ValueError("pass both log_prob_samples and log_prob_true, or neither")
    if log_prob_samples is None:
        source = "gaussian_approximation"
        log_prob_samples = gaussian_log_prob(samples, samples)
        log_prob_true = gaussian_log_prob(samples, true_parameters[:, None, :])[:, 0]
    else:
        source = "log_prob"
        log_prob_samples, log_prob_true = as_log_probs(
            log_prob_samples, log_prob_true, n_obs, n_samples
        )
    alpha = hpd_credibility(log_prob_samples, log_prob_true)
    coverage = np.mean(alpha[None, :] < levels[:, None], axis=1)
    floor = np.sqrt(levels * (1.0 - levels) / n_obs)
    return CoverageResult(
        levels=levels,
        coverage=coverage,
        floor=floor,
        hpd_credibility=alpha,
        calibration_error=float(np.mean(np.abs(coverage - levels))),
        calibration_error_floor=float(np.mean(floor)),
        density_source=source,
    )
