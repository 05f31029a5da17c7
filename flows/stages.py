"""The pipeline stages as plain functions (no Prefect, no MLflow): unit-tested on their own.

Each stage takes paths and plain options and returns a JSON-ready dict, so the Prefect tasks in
``flows/tasks.py`` can persist results with the JSON serializer (cache records never unpickle).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from flows.options import DiagnosticsSettings, resolve_config


class GateFailure(RuntimeError):
    """A quality gate stopped the pipeline; ``exit_code`` is the CLI's exit status."""

    exit_code = 1

    def __init__(self, message: str, outcome: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome or {}


class ValidationGateFailure(GateFailure):
    """The store failed validation (exit code 1)."""

    exit_code = 1


class CalibrationGateFailure(GateFailure):
    """The trained posterior failed the calibration gate (exit code 3)."""

    exit_code = 3


def _jsonable(value: Any) -> Any:
    from sbi_core.persistence import to_jsonable

    return json.loads(json.dumps(to_jsonable(value), default=str))


# ---------------------------------------------------------------------------------- validate
def validate_stage(store: str | Path, report_dir: str | Path) -> dict[str, Any]:
    """Validate ``store``; write ``validation.json`` into ``report_dir``.

    Returns:
        ``valid``, ``fingerprint``, ``summary`` (text), ``report_path``, ``table_rows``,
        ``n_errors``, ``n_warnings``, ``n_samples``.
    """
    from validation import validate_store

    report = validate_store(Path(store))
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report.write_json(report_dir / "validation.json")
    return {"valid": report.valid, "fingerprint": report.fingerprint, "summary": report.summary(),
            "report_path": str(path), "table_rows": _jsonable(report.table_rows()),
            "n_errors": len(report.errors), "n_warnings": len(report.warnings),
            "n_samples": report.n_samples}


def validation_markdown(outcome: dict[str, Any]) -> str:
    """The validation outcome as a Markdown artifact (verdict, counts, first failures)."""
    lines = [f"# Store validation: {'VALID' if outcome['valid'] else 'INVALID'}", "",
             f"- samples: {outcome['n_samples']}", f"- errors: {outcome['n_errors']}, "
             f"warnings: {outcome['n_warnings']}", f"- fingerprint: `{outcome['fingerprint']}`",
             f"- report: `{outcome['report_path']}`", ""]
    rows = outcome["table_rows"][:20]
    if rows:
        lines += ["| severity | check | location | message |", "|---|---|---|---|"]
        lines += [f"| {r['severity']} | {r['check']} | `{r['location']}` | "
                  f"{str(r['message']).replace('|', '/')} |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- train
def train_stage(store: str | Path, estimator_config: dict[str, Any], model_dir: str | Path) -> dict[str, Any]:
    """Train a posterior on ``store`` and save it to ``model_dir`` (the library's atomic save).

    Returns:
        ``model_dir``, ``history`` (per-epoch lists), ``validation_metrics``, ``metadata``,
        ``training_seconds``, ``estimator_class``, ``task``.
    """
    from sbi_core.dataset import open_store

    from sbi_core.estimator_registry import split_fit_options

    cls, options = resolve_config(estimator_config)
    options, fit_options = split_fit_options(options)
    reader = open_store(str(store))
    posterior = cls(parameter_dim=reader.parameter_dim, **options)
    start = time.perf_counter()
    artifacts = posterior.fit(reader, **fit_options)
    Path(model_dir).parent.mkdir(parents=True, exist_ok=True)
    posterior.save(str(model_dir))
    return {"model_dir": str(model_dir), "history": _jsonable(dict(artifacts.history)),
            "validation_metrics": _jsonable(dict(artifacts.validation_metrics)),
            "metadata": _jsonable(dict(artifacts.metadata)),
            "training_seconds": time.perf_counter() - start, "estimator_class": cls.__name__,
            "task": {"name": reader.task_name, "version": reader.task_version}}


def plot_history(history: dict[str, list[float]], path: str | Path) -> Path:
    """Loss curves and learning rate per epoch, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key in ("train_loss", "validation_loss"):
        if history.get(key):
            left.plot(range(1, len(history[key]) + 1), history[key], label=key)
    left.set(xlabel="epoch", ylabel="loss", title="training")
    left.legend()
    if history.get("learning_rate"):
        right.plot(range(1, len(history["learning_rate"]) + 1), history["learning_rate"])
    right.set(xlabel="epoch", title="learning rate")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- diagnose
def heldout_negative_log_prob(posterior: Any, store: Any, split: str, num_observations: int | None) -> float:
    """Mean ``-log q(theta_true | x)`` over held-out observations, in physical units.

    Physical units make the number comparable across models trained in different parameter
    spaces (the promotion rule compares versions).
    """
    from sbi_core.calibration.diagnose import select_observations
    from sbi_core.calibration.posterior_arrays import blocks_from_stacked, posterior_calibration_arrays

    indices = select_observations(store, split, num_observations)
    parameters, observations = store.read(indices)
    blocks = blocks_from_stacked(store.observation_schema, observations)
    arrays = posterior_calibration_arrays(posterior, parameters, blocks, num_samples=2, with_log_prob=True)
    return float(-np.mean(arrays.log_prob_true))


def diagnose_stage(model_dir: str | Path, store: str | Path, output_dir: str | Path,
                   settings: DiagnosticsSettings) -> dict[str, Any]:
    """Calibration report, plots and the held-out NLL of a saved posterior.

    Returns:
        ``passed``, ``failures``, ``metrics`` (flat floats), ``summary``, ``report_path``,
        ``plots`` (name -> path).
    """
    from sbi_core.calibration import CalibrationThresholds
    from sbi_core.calibration.diagnose import diagnose_posterior, write_diagnostics
    from sbi_core.dataset import open_store
    from sbi_core.posterior_base import PersistentPosteriorEstimator

    posterior = PersistentPosteriorEstimator.load(str(model_dir))
    reader = open_store(str(store))
    report = diagnose_posterior(posterior, reader, split=settings.split,
                                num_observations=settings.num_observations,
                                num_samples=settings.num_samples, seed=settings.seed,
                                thresholds=CalibrationThresholds.from_dict(dict(settings.thresholds)))
    files = write_diagnostics(report, output_dir)
    summary = report.summary()
    metrics = {k: float(summary[k]) for k in ("calibration_error", "calibration_error_floor",
                                              "sbc_min_p_value", "tarp_atc", "tarp_ks_p_value")}
    metrics["heldout_nll"] = heldout_negative_log_prob(posterior, reader, settings.split,
                                                       settings.num_observations)
    metrics["calibration_passed"] = float(report.passed)
    return {"passed": report.passed, "failures": list(report.failures), "metrics": metrics,
            "summary": _jsonable(summary), "report_path": str(files["report"]),
            "plots": {k: str(v) for k, v in files.items() if k != "report"}}


def diagnostics_rows(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """Table-artifact rows: one per metric, plus one per failure."""
    rows = [{"metric": k, "value": round(v, 6)} for k, v in outcome["metrics"].items()]
    rows += [{"metric": "failure", "value": f} for f in outcome["failures"]]
    return rows


# ---------------------------------------------------------------------------------- simulate
def simulate_stage(task: str, num_simulations: int, output: str | Path, seed: int = 0,
                   overwrite: bool = False) -> dict[str, Any]:
    """Simulate a built-in task into a store (resumes an interrupted run).

    Returns:
        ``store``, ``fingerprint``, ``n_samples``, ``task``.
    """
    from sbi_core.dataset import simulate_to_store
    from sbi_core.simulators import get_task

    reader = simulate_to_store(get_task(task), num_simulations, str(output), seed=seed,
                               overwrite=overwrite, progress=False)
    return {"store": str(Path(output).resolve()), "fingerprint": reader.fingerprint,
            "n_samples": reader.n_samples, "task": {"name": reader.task_name, "version": reader.task_version}}
