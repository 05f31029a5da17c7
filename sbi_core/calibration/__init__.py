"""Calibration diagnostics of amortized posteriors, on plain arrays.

Inputs: ``samples (B, S, P)``, ``true_parameters (B, P)``, optionally ``log_prob_samples
(B, S)`` and ``log_prob_true (B,)``. :func:`run_calibration` runs expected HPD coverage
(Hermans et al. 2022), SBC (Talts et al. 2018), TARP (Lemos et al. 2023), P-P, z-scores and
contraction and returns a :class:`SimulationBasedCalibrationReport`.
"""

from sbi_core.calibration.coverage import (
    DEFAULT_LEVELS,
    CoverageResult,
    expected_coverage,
    hpd_credibility,
)
from sbi_core.calibration.diagnose import (
    diagnose_posterior,
    matching_task,
    predictive_diagnostics,
    write_diagnostics,
)
from sbi_core.calibration.posterior_arrays import (
    CalibrationArrays,
    blocks_from_stacked,
    posterior_calibration_arrays,
    posterior_mean_function,
)
from sbi_core.calibration.pp import PPResult, pp_and_z_scores
from sbi_core.calibration.predictive import (
    posterior_predictive_check,
    predictive_bands,
    replicate_observations,
    summarize_replicates,
)
from sbi_core.calibration.reports import (
    CalibrationThresholds,
    LocalSensitivityPointReport,
    LocalSensitivityReport,
    PosteriorPredictiveReport,
    SimulationBasedCalibrationReport,
    evaluate_thresholds,
)
from sbi_core.calibration.runner import run_calibration
from sbi_core.calibration.sbc import SBCResult, sbc_ranks, sbc_test
from sbi_core.calibration.sensitivity import local_sensitivity
from sbi_core.calibration.tarp import TARPResult, tarp_test

__all__ = [
    "DEFAULT_LEVELS",
    "CalibrationArrays",
    "CalibrationThresholds",
    "CoverageResult",
    "LocalSensitivityPointReport",
    "LocalSensitivityReport",
    "PPResult",
    "PosteriorPredictiveReport",
    "SBCResult",
    "SimulationBasedCalibrationReport",
    "TARPResult",
    "blocks_from_stacked",
    "diagnose_posterior",
    "evaluate_thresholds",
    "expected_coverage",
    "hpd_credibility",
    "local_sensitivity",
    "matching_task",
    "posterior_calibration_arrays",
    "posterior_mean_function",
    "posterior_predictive_check",
    "pp_and_z_scores",
    "predictive_bands",
    "predictive_diagnostics",
    "replicate_observations",
    "run_calibration",
    "sbc_ranks",
    "sbc_test",
    "summarize_replicates",
    "tarp_test",
    "write_diagnostics",
]
