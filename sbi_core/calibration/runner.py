"""One entry point that runs every calibration diagnostic on arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

from sbi_core.calibration._validation import as_samples_and_truth
from sbi_core.calibration.coverage import DEFAULT_LEVELS, expected_coverage
from sbi_core.calibration.pp import pp_and_z_scores
from sbi_core.calibration.reports import (
    CalibrationThresholds,
    SimulationBasedCalibrationReport,
    evaluate_thresholds,
)
from sbi_core.calibration.sbc import sbc_test
from sbi_core.calibration.tarp import tarp_test


def run_calibration(
    samples: Float[np.ndarray, "B S P"],
    true_parameters: Float[np.ndarray, "B P"],
    log_prob_samples: Float[np.ndarray, "B S"] | None = None,
    log_prob_true: Float[np.ndarray, " B"] | None = None,
    *,
    parameter_names: Sequence[str],
    thresholds: CalibrationThresholds | None = None,
    levels: Float[np.ndarray, " K"] = DEFAULT_LEVELS,
    prior_variance: Float[np.ndarray, " P"] | None = None,
    seed: int = 0,
    metadata: Mapping[str, Any] | None = None,
) -> SimulationBasedCalibrationReport:
    """Expected HPD coverage, SBC, TARP, P-P, z-scores and contraction in one report.

    The truths must be draws from the prior (or from the distribution the posterior was trained
    on) and ``samples[b]`` draws from the posterior given the observation simulated from
    ``true_parameters[b]``. All arrays share one parameter space; physical units are what the
    reports speak (convert log-densities with the parameter transform's log-Jacobian first).

    Args:
        samples: Posterior draws ``(B, S, P)``.
        true_parameters: True parameters ``(B, P)``.
        log_prob_samples: Posterior log-density of the draws ``(B, S)``; optional.
        log_prob_true: Posterior log-density of the truths ``(B,)``; optional. Without both,
            HPD coverage uses a Gaussian fitted to the draws (recorded in the report).
        parameter_names: ``P`` names, in column order.
        thresholds: Pass/fail thresholds; default :class:`CalibrationThresholds()`.
        levels: Credibility levels of the coverage, TARP and P-P curves.
        prior_variance: Prior variance per parameter for the contraction; default: the
            variance of ``true_parameters``.
        seed: Seed of the TARP reference points.
        metadata: Free-form context stored in the report.

    Returns:
        A :class:`SimulationBasedCalibrationReport`; ``report.passed`` and ``report.failures``
        judge it against ``thresholds``.

    References:
        Hermans et al. (2022) "A Trust Crisis In Simulation-Based Inference?"; Talts et al.
        (2018) SBC; Lemos et al. (2023) TARP.
    """
    samples, true_parameters = as_samples_and_truth(samples, true_parameters)
    names = tuple(str(n) for n in parameter_names)
    if len(names) != samples.shape[2]:
        raise ValueError(f"parameter_names has {len(names)} names but samples have "
                         f"P = {samples.shape[2]} parameters")
    thresholds = CalibrationThresholds() if thresholds is None else thresholds
    coverage = expected_coverage(samples, true_parameters, log_prob_samples, log_prob_true,
                                 levels=levels)
    sbc = sbc_test(samples, true_parameters)
    tarp = tarp_test(samples, true_parameters, levels=levels, seed=seed)
    pp = pp_and_z_scores(samples, true_parameters, prior_variance=prior_variance, levels=levels)
    failures = evaluate_thresholds(names, coverage, sbc, tarp, thresholds)
    return SimulationBasedCalibrationReport(
        parameter_names=names,
        num_observations=samples.shape[0],
        num_samples=samples.shape[1],
        coverage=coverage,
        sbc=sbc,
        tarp=tarp,
        pp=pp,
        thresholds=thresholds,
        failures=tuple(failures),
        seed=seed,
        metadata=dict(metadata or {}),
    )
