"""Typed, validated options of the Prefect flows (one pydantic model per flow).

Every flow takes exactly one options object, so a deployment's parameters, the CLI and the
tests all go through the same validation. Models are frozen and refuse unknown keys: a typo in a
deployment's parameters fails the run before any work starts instead of being ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Environment variable naming the project data folder (MLflow DB, artifacts, models, reports).
DATA_DIR_ENV = "SBI_OPS_DATA_DIR"
DEFAULT_MODEL_NAME = "sbi-posterior"
DEFAULT_EXPERIMENT = "sbi-ops-retrain"


def default_data_dir() -> Path:
    """The project data folder: ``$SBI_OPS_DATA_DIR`` or ``./data``, always absolute.

    Resolved once, here, so that nothing downstream depends on the working directory of a later
    call (MLflow would otherwise put artifacts under ``./mlruns`` of whatever cwd it sees).
    """
    return Path(os.environ.get(DATA_DIR_ENV) or "data").expanduser().resolve()


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidateOptions(_Options):
    """Options of ``validate_dataset``.

    Attributes:
        store: The simulation store to validate.
        report_dir: Where ``validation.json`` is written.
    """

    store: Path
    report_dir: Path


class TrainOptions(_Options):
    """Options of ``train_posterior``.

    Attributes:
        store: The (validated) simulation store.
        fingerprint: The store's dataset fingerprint (part of the cache key).
        estimator_config: ``sbi-ops train`` vocabulary (``estimator`` plus constructor keywords).
        models_dir: Parent folder of trained model directories.
    """

    store: Path
    fingerprint: str
    estimator_config: dict[str, Any] = Field(default_factory=dict)
    models_dir: Path

    @field_validator("estimator_config")
    @classmethod
    def _check_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        resolve_config(value)
        return value


class DiagnosticsSettings(_Options):
    """How the calibration gate is run (see ``sbi-ops diagnose`` for the statistics).

    Attributes:
        split: Held-out split used for calibration and the held-out negative log-probability.
        num_observations: Observations of the split used (the first ones; None = all).
        num_samples: Posterior draws per observation.
        seed: Sampling seed.
        thresholds: ``CalibrationThresholds`` fields (``max_calibration_error_excess``,
            ``max_calibration_error``, ``sbc_alpha``, ``tarp_alpha``, ``max_abs_tarp_atc``).
    """

    split: str = "test"
    num_observations: int | None = Field(default=500, ge=2)
    num_samples: int = Field(default=500, ge=2)
    seed: int = 0
    thresholds: dict[str, float | None] = Field(default_factory=dict)

    @field_validator("split")
    @classmethod
    def _check_split(cls, value: str) -> str:
        if value not in ("train", "validation", "test", "all"):
            raise ValueError(f"split must be train, validation, test or all; got {value!r}")
        return value

    @field_validator("thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        from sbi_core.calibration import CalibrationThresholds

        CalibrationThresholds.from_dict(dict(value))  # raises ValueError naming the bad key
        return value


class DiagnoseOptions(_Options):
    """Options of ``diagnose_posterior``: a model directory, a store, the settings."""

    model_dir: Path
    store: Path
    output_dir: Path
    settings: DiagnosticsSettings = Field(default_factory=DiagnosticsSettings)


class PromotionRule(_Options):
    """When a challenger becomes ``champion`` (documented in docs/operations.md).

    A candidate is promoted when there is no champion, or when both hold:
      * held-out NLL: ``candidate_nll < champion_nll - min_nll_improvement``;
      * calibration: ``candidate_cal_err <= champion_cal_err + calibration_tolerance``.

    Attributes:
        min_nll_improvement: Required decrease of the held-out negative log-probability (nats).
        calibration_tolerance: Allowed increase of the HPD calibration error.
    """

    min_nll_improvement: float = Field(default=0.0, ge=0.0)
    calibration_tolerance: float = Field(default=0.01, ge=0.0)


class RegisterOptions(_Options):
    """Options of ``register_posterior``."""

    model_dir: Path
    model_name: str = DEFAULT_MODEL_NAME
    run_id: str
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    rule: PromotionRule = Field(default_factory=PromotionRule)
    tracking_uri: str | None = None
    data_dir: Path | None = None


class SimulateOptions(_Options):
    """Options of ``simulate_dataset``."""

    task: str
    num_simulations: int = Field(ge=10)
    output: Path
    seed: int = 0
    overwrite: bool = False


class RetrainOptions(_Options):
    """Options of the parent ``retrain`` flow (the ``sbi-ops pipeline`` flags).

    Exactly one data source: ``store``, or ``task`` with ``num_simulations`` (a new store is
    simulated under the data folder).

    Attributes:
        store: An existing simulation store.
        task: Built-in task name to simulate (with ``num_simulations``, ``seed``).
        num_simulations: Simulations to draw for ``task``.
        seed: Simulation seed.
        model_name: Registered model name.
        tracking_uri: MLflow tracking URI (default: ``sqlite:///<data_dir>/mlflow.db``).
        data_dir: Project data folder (default: ``$SBI_OPS_DATA_DIR`` or ``./data``).
        experiment: MLflow experiment name.
        estimator_config: ``sbi-ops train`` vocabulary.
        diagnostics: Calibration gate settings.
        promotion: Champion promotion rule.
        if_data_changed: Skip everything (no validation, no MLflow run) when a registered version
            was already trained on this store fingerprint with this configuration.
    """

    store: Path | None = None
    task: str | None = None
    num_simulations: int | None = Field(default=None, ge=10)
    seed: int = 0
    model_name: str = DEFAULT_MODEL_NAME
    tracking_uri: str | None = None
    data_dir: Path | None = None
    experiment: str = DEFAULT_EXPERIMENT
    estimator_config: dict[str, Any] = Field(default_factory=dict)
    diagnostics: DiagnosticsSettings = Field(default_factory=DiagnosticsSettings)
    promotion: PromotionRule = Field(default_factory=PromotionRule)
    if_data_changed: bool = False

    @model_validator(mode="after")
    def _check_source(self) -> RetrainOptions:
        if (self.store is None) == (self.task is None):
            raise ValueError("give exactly one data source: store, or task with num_simulations")
        if self.task is not None and self.num_simulations is None:
            raise ValueError("task needs num_simulations")
        if self.store is not None and self.num_simulations is not None:
            raise ValueError("num_simulations only applies with task, not with store")
        return self

    @field_validator("estimator_config")
    @classmethod
    def _check_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        resolve_config(value)
        return value

    def resolved_data_dir(self) -> Path:
        """``data_dir`` made absolute, or the default data folder."""
        return self.data_dir.expanduser().resolve() if self.data_dir else default_data_dir()


def resolve_config(config: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """Resolve the shared ``sbi-ops train`` vocabulary (raises ``ValueError`` on unknown keys)."""
    from sbi_core.estimator_registry import resolve_estimator_options

    return resolve_estimator_options(dict(config))


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the fully resolved estimator configuration (defaults included).

    Resolving first means ``{}`` and ``{"num_epochs": 200}`` (the default) hash the same, so the
    cache and the skip check only react to changes that change training.
    """
    cls, options = resolve_config(config)
    payload = {"estimator_class": f"{cls.__module__}.{cls.__qualname__}", **options}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
