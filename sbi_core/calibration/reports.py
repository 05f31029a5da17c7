"""Calibration, posterior-predictive and sensitivity reports (JSON-serialisable).

Every report has ``to_dict()`` (plain Python, strict-JSON friendly), ``to_json()`` and
``from_dict()``; arrays are stored as lists in parameter order, NaN as ``null``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from sbi_core.calibration._serialization import (
    check_keys,
    field_names,
    float_array,
    optional_float,
    to_jsonable,
)
from sbi_core.calibration.coverage import CoverageResult
from sbi_core.calibration.pp import PPResult
from sbi_core.calibration.sbc import SBCResult
from sbi_core.calibration.tarp import TARPResult


@dataclass(frozen=True)
class CalibrationThresholds:
    """Pass/fail thresholds of :class:`SimulationBasedCalibrationReport`.

    Defaults and why:
        * ``max_calibration_error_excess=0.01``: the calibration error (mean |empirical -
          nominal| HPD coverage) may exceed its Monte-Carlo floor (mean ``sqrt(a(1-a)/N)``) by
          at most 0.01. An exact posterior's error is about ``0.8 x floor`` on average
          (``E|N(0, s)| = 0.8 s``), so floor + 0.01 keeps false alarms rare at N >= 200 while a
          posterior whose 68% region covers 60% fails.
        * ``max_calibration_error=None``: optional absolute cap (issue 6 uses 0.02 for the
          exoplanet model over >= 1000 test observations).
        * ``sbc_alpha=0.01``: family-wise level of the SBC uniformity tests; each of the
          ``2 P`` tests (chi-square and KS per parameter) must have ``p >= sbc_alpha / (2 P)``
          (Bonferroni), so an exact posterior fails with probability <= 1%.
        * ``tarp_alpha=0.01``: TARP KS p-value must be >= 0.01.
        * ``max_abs_tarp_atc=0.05``: |area between TARP ECP and the diagonal| <= 0.05; the
          exact posterior's ATC has standard deviation ``sqrt(1/12)/sqrt(N)`` (0.02 at N=200).

    Raises:
        ValueError: When a threshold is out of its range.
    """

    max_calibration_error_excess: float = 0.01
    max_calibration_error: float | None = None
    sbc_alpha: float = 0.01
    tarp_alpha: float = 0.01
    max_abs_tarp_atc: float = 0.05

    def __post_init__(self) -> None:
        for name in ("sbc_alpha", "tarp_alpha"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"CalibrationThresholds.{name} must be in [0, 1); "
                                 f"got {getattr(self, name)}")
        for name in ("max_calibration_error_excess", "max_abs_tarp_atc", "max_calibration_error"):
            value = getattr(self, name)
            if value is not None and not value >= 0.0:
                raise ValueError(f"CalibrationThresholds.{name} must be >= 0; got {value}")

    def to_dict(self) -> dict[str, Any]:
        """The thresholds as a plain dict."""
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> CalibrationThresholds:
        """Rebuild from :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(payload) - field_names(cls)
        if unknown:
            raise ValueError(f"unknown CalibrationThresholds keys {sorted(unknown)}; "
                             f"allowed: {sorted(field_names(cls))}")
        return cls(**payload)


def evaluate_thresholds(
    parameter_names: tuple[str, ...],
    coverage: CoverageResult,
    sbc: SBCResult,
    tarp: TARPResult,
    thresholds: CalibrationThresholds,
) -> list[str]:
    """Human-readable failures of each diagnostic against the thresholds (empty = passed)."""
    failures: list[str] = []
    limit = coverage.calibration_error_floor + thresholds.max_calibration_error_excess
    if coverage.calibration_error > limit:
        failures.append(f"coverage: calibration error {coverage.calibration_error:.4f} > "
                        f"floor {coverage.calibration_error_floor:.4f} + "
                        f"{thresholds.max_calibration_error_excess}")
    cap = thresholds.max_calibration_error
    if cap is not None and coverage.calibration_error > cap:
        failures.append(f"coverage: calibration error {coverage.calibration_error:.4f} > {cap}")
    per_test = thresholds.sbc_alpha / (2 * len(parameter_names))
    for i, name in enumerate(parameter_names):
        for test, p in (("chi-square", sbc.chi2_p_value[i]), ("KS", sbc.ks_p_value[i])):
            if not p >= per_test:
                failures.append(f"sbc: {name} {test} p-value {p:.3g} < {per_test:.3g} "
                                f"(alpha {thresholds.sbc_alpha} / {2 * len(parameter_names)})")
    if not tarp.ks_p_value >= thresholds.tarp_alpha:
        failures.append(f"tarp: KS p-value {tarp.ks_p_value:.3g} < {thresholds.tarp_alpha}")
    if not abs(tarp.atc) <= thresholds.max_abs_tarp_atc:
        failures.append(f"tarp: |ATC| {abs(tarp.atc):.4f} > {thresholds.max_abs_tarp_atc}")
    return failures


def _result_from_dict(cls: type, payload: dict[str, Any]) -> Any:
    """Rebuild a result dataclass whose fields are arrays, floats, ints or strings."""
    check_keys(cls.__name__, payload, field_names(cls))
    kwargs = {}
    for f in fields(cls):
        value = payload[f.name]
        if isinstance(value, list):
            value = np.array(value, dtype=np.int64) if f.name == "ranks" else float_array(value)
        elif f.type in ("float", float):
            value = optional_float(value)
        kwargs[f.name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class SimulationBasedCalibrationReport:
    """All calibration diagnostics of one posterior on one set of held-out observations.

    Attributes:
        parameter_names: Parameter names, in column order.
        num_observations: ``B``, the number of held-out observations.
        num_samples: ``S``, posterior draws per observation.
        coverage: Expected HPD coverage and calibration error (Hermans et al. 2022).
        sbc: SBC ranks and uniformity tests (Talts et al. 2018).
        tarp: TARP expected coverage, ATC and KS test (Lemos et al. 2023).
        pp: Marginal P-P curves, z-scores and contraction.
        thresholds: The thresholds ``failures`` was computed against.
        failures: Human-readable threshold failures; empty when the posterior passed.
        seed: Seed of the random parts (TARP reference points).
        metadata: Free-form context (model, split, store fingerprint, ...).
    """

    parameter_names: tuple[str, ...]
    num_observations: int
    num_samples: int
    coverage: CoverageResult
    sbc: SBCResult
    tarp: TARPResult
    pp: PPResult
    thresholds: CalibrationThresholds = field(default_factory=CalibrationThresholds)
    failures: tuple[str, ...] = ()
    seed: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when no threshold failed."""
        return not self.failures

    @property
    def calibration_error(self) -> float:
        """Mean |empirical - nominal| HPD coverage over the level grid."""
        return self.coverage.calibration_error

    def with_thresholds(self, thresholds: CalibrationThresholds) -> SimulationBasedCalibrationReport:
        """The same diagnostics judged against other thresholds."""
        failures = evaluate_thresholds(
            self.parameter_names, self.coverage, self.sbc, self.tarp, thresholds
        )
        return replace(self, thresholds=thresholds, failures=tuple(failures))

    def summary(self) -> dict[str, Any]:
        """A small dict for tables and logs (no per-observation arrays)."""
        return {
            "passed": self.passed,
            "num_observations": self.num_observations,
            "num_samples": self.num_samples,
            "calibration_error": self.coverage.calibration_error,
            "calibration_error_floor": self.coverage.calibration_error_floor,
            "sbc_min_p_value": float(min(self.sbc.chi2_p_value.min(), self.sbc.ks_p_value.min())),
            "tarp_atc": self.tarp.atc,
            "tarp_ks_p_value": self.tarp.ks_p_value,
            "z_score_mean": dict(zip(self.parameter_names, self.pp.z_score_mean.tolist())),
            "z_score_std": dict(zip(self.parameter_names, self.pp.z_score_std.tolist())),
            "contraction": dict(zip(self.parameter_names, self.pp.contraction.tolist())),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-ready dict (arrays as lists, NaN as null) plus ``passed``."""
        payload = to_jsonable(self)
        payload["passed"] = self.passed
        return payload

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict` (strict: no NaN literals)."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> SimulationBasedCalibrationReport:
        """Rebuild a report from :meth:`to_dict` output (``passed`` is recomputed, not read)."""
        payload = {k: v for k, v in payload.items() if k != "passed"}
        check_keys(cls.__name__, payload, field_names(cls))
        return cls(
            parameter_names=tuple(payload["parameter_names"]),
            num_observations=int(payload["num_observations"]),
            num_samples=int(payload["num_samples"]),
            coverage=_result_from_dict(CoverageResult, payload["coverage"]),
            sbc=_result_from_dict(SBCResult, payload["sbc"]),
            tarp=_result_from_dict(TARPResult, payload["tarp"]),
            pp=_result_from_dict(PPResult, payload["pp"]),
            thresholds=CalibrationThresholds.from_dict(payload["thresholds"]),
            failures=tuple(payload["failures"]),
            seed=int(payload["seed"]),
            metadata=dict(payload["metadata"]),
        )

    @classmethod
    def from_json(cls, text: str) -> SimulationBasedCalibrationReport:
        """Rebuild a report from :meth:`to_json` text."""
        return cls.from_dict(json.loads(text))


def _plain_from_dict(cls: type, payload: dict[str, Any], arrays: tuple[str, ...]) -> Any:
    """Rebuild a flat report dataclass, turning the named fields back into float arrays."""
    check_keys(cls.__name__, payload, field_names(cls))
    kwargs = dict(payload)
    for name in arrays:
        if kwargs[name] is not None:
            kwargs[name] = float_array(kwargs[name])
    return cls(**kwargs)


@dataclass(frozen=True)
class PosteriorPredictiveReport:
    """Posterior-predictive check of one observation block over many observations.

    Replicated data are simulated from posterior draws (plus observational noise when the
    simulator is noise-free and uncertainties are known). A well-calibrated, well-specified model
    puts ~68% / ~95% of the observed points inside the central 68% / 95% predictive bands, and
    the reduced chi-square ``chi2 / L`` of each observation is ~1 (Gelman, Meng & Stern 1996,
    "Posterior predictive assessment of model fitness via realized discrepancies").

    Attributes:
        block_name: The observation block checked.
        num_observations: ``B``.
        num_draws: Posterior draws pushed through the simulator per observation.
        num_points: ``L``, points per observation.
        fraction_in_68: Fraction of all observed points inside the 68% bands.
        fraction_in_95: Fraction of all observed points inside the 95% bands.
        fraction_in_68_per_observation: ``(B,)``.
        fraction_in_95_per_observation: ``(B,)``.
        chi2: ``sum_l (obs - mean_rep)^2 / var_rep`` per observation ``(B,)``.
        reduced_chi2: ``chi2 / L`` per observation ``(B,)``.
        noise_added: Whether Gaussian observational noise was added to the simulator output.
        metadata: Free-form context.
    """

    block_name: str
    num_observations: int
    num_draws: int
    num_points: int
    fraction_in_68: float
    fraction_in_95: float
    fraction_in_68_per_observation: np.ndarray
    fraction_in_95_per_observation: np.ndarray
    chi2: np.ndarray
    reduced_chi2: np.ndarray
    noise_added: bool
    metadata: dict[str, Any] = field(default_factory=dict)

    _ARRAYS = ("fraction_in_68_per_observation", "fraction_in_95_per_observation", "chi2",
               "reduced_chi2")

    def summary(self) -> dict[str, Any]:
        """Fractions inside the bands and the median reduced chi-square."""
        return {"block_name": self.block_name, "fraction_in_68": self.fraction_in_68,
                "fraction_in_95": self.fraction_in_95,
                "median_reduced_chi2": float(np.median(self.reduced_chi2))}

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-ready dict."""
        return to_jsonable(self)

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> PosteriorPredictiveReport:
        """Rebuild from :meth:`to_dict` output."""
        return _plain_from_dict(cls, payload, cls._ARRAYS)


@dataclass(frozen=True)
class LocalSensitivityPointReport:
    """How the posterior mean moves when one input element is perturbed by its uncertainty.

    Attributes:
        element_index: Index of the perturbed element within the block.
        coordinate: Its coordinate (e.g. wavelength in micron), or None.
        perturbation: Size of the perturbation applied (the element's uncertainty).
        mean_shift: Change of the posterior mean per parameter ``(P,)`` (central difference
            ``(m(x + d e) - m(x - d e)) / 2`` when symmetric, else ``m(x + d e) - m(x)``).
        normalised_shift: ``mean_shift`` in units of the baseline posterior sd ``(P,)``, or None.
    """

    element_index: int
    coordinate: float | None
    perturbation: float
    mean_shift: np.ndarray
    normalised_shift: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-ready dict."""
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> LocalSensitivityPointReport:
        """Rebuild from :meth:`to_dict` output."""
        return _plain_from_dict(cls, payload, ("mean_shift", "normalised_shift"))


@dataclass(frozen=True)
class LocalSensitivityReport:
    """Local sensitivity of the posterior mean to each element of one observation block.

    Attributes:
        parameter_names: Parameter names, in column order.
        block_name: The perturbed block.
        baseline_mean: Posterior mean at the unperturbed observation ``(P,)``.
        baseline_std: Posterior sd at the unperturbed observation ``(P,)``, or None.
        symmetric: Whether central differences were used.
        points: One :class:`LocalSensitivityPointReport` per perturbed element.
        metadata: Free-form context.
    """

    parameter_names: tuple[str, ...]
    block_name: str
    baseline_mean: np.ndarray
    baseline_std: np.ndarray | None
    symmetric: bool
    points: tuple[LocalSensitivityPointReport, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def shift_matrix(self, normalised: bool = False) -> np.ndarray:
        """Mean shifts stacked as ``(L, P)`` (normalised by the posterior sd if asked)."""
        if normalised and self.baseline_std is None:
            raise ValueError("normalised shifts need baseline_std; none was given")
        key = "normalised_shift" if normalised else "mean_shift"
        return np.stack([getattr(p, key) for p in self.points])

    def most_influential(self, parameter: str, k: int = 5) -> list[LocalSensitivityPointReport]:
        """The ``k`` elements whose perturbation moves ``parameter``'s mean the most."""
        if parameter not in self.parameter_names:
            raise ValueError(f"unknown parameter {parameter!r}; known: {list(self.parameter_names)}")
        column = np.abs(self.shift_matrix()[:, self.parameter_names.index(parameter)])
        return [self.points[i] for i in np.argsort(column)[::-1][:k]]

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-ready dict."""
        return to_jsonable(self)

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> LocalSensitivityReport:
        """Rebuild from :meth:`to_dict` output."""
        check_keys(cls.__name__, payload, field_names(cls))
        return cls(
            parameter_names=tuple(payload["parameter_names"]),
            block_name=payload["block_name"],
            baseline_mean=float_array(payload["baseline_mean"]),
            baseline_std=None if payload["baseline_std"] is None
            else float_array(payload["baseline_std"]),
            symmetric=bool(payload["symmetric"]),
            points=tuple(LocalSensitivityPointReport.from_dict(p) for p in payload["points"]),
            metadata=dict(payload["metadata"]),
        )
