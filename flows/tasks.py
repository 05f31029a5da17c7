"""Thin Prefect tasks over the plain stages in ``flows/stages.py``.

Retries only where a failure can be transient (reading a store, talking to MLflow), never on
training or diagnostics (a crash there is a bug or a resource problem; retrying hides it).
Training and diagnostics are cached: the key is the dataset fingerprint + config hash (+ the
model directory), results are persisted as JSON (never pickled), so an unchanged input is not
retrained across runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows import stages
from flows.options import DiagnosticsSettings
from flows.tracking import MlflowService

IO_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay_seconds": 2}
_CACHED: dict[str, Any] = {"persist_result": True, "result_serializer": "json"}


def _digest(*parts: Any) -> str:
    text = json.dumps([str(p) if isinstance(p, Path) else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def train_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """``train-<fingerprint+config hash+model dir digest>``: same data and config -> same key."""
    return "sbi-train-" + _digest(parameters["fingerprint"], parameters["config_hash"],
                                  str(Path(parameters["model_dir"]).resolve()))


def diagnose_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Key over the model's metadata.json bytes, the store fingerprint and the settings."""
    meta = Path(parameters["model_dir"]) / "metadata.json"
    model = hashlib.sha256(meta.read_bytes()).hexdigest() if meta.is_file() else "missing"
    settings = parameters["settings"]
    settings = settings.model_dump() if hasattr(settings, "model_dump") else settings
    return "sbi-diagnose-" + _digest(model, parameters["fingerprint"], settings,
                                     str(Path(parameters["output_dir"]).resolve()))


@task(name="validate-store", **IO_RETRIES)
def validate_task(store: str, report_dir: str) -> dict[str, Any]:
    """Validate a store and publish the report as Markdown and table artifacts."""
    outcome = stages.validate_stage(store, report_dir)
    create_markdown_artifact(key="validation-report", markdown=stages.validation_markdown(outcome),
                             description=f"validation of {store}")
    if outcome["table_rows"]:
        create_table_artifact(key="validation-failures", table=outcome["table_rows"],
                              description="validation findings, one row per failure")
    return outcome


@task(name="train-posterior", cache_key_fn=train_cache_key, **_CACHED)
def train_task(store: str, estimator_config: dict[str, Any], model_dir: str, fingerprint: str,
               config_hash: str) -> dict[str, Any]:
    """Train and save; a progress artifact marks the start and the end of training.

    ``fingerprint`` and ``config_hash`` are arguments only so that they key the cache.
    """
    progress = create_progress_artifact(progress=0.0, key="training-progress",
                                        description=f"training on {Path(store).name}")
    outcome = stages.train_stage(store, estimator_config, model_dir)
    update_progress_artifact(progress, progress=100.0,
                             description=f"trained {len(outcome['history'].get('train_loss', []))} epochs")
    return outcome


@task(name="diagnose-posterior", cache_key_fn=diagnose_cache_key, **_CACHED)
def diagnose_task(model_dir: str, store: str, output_dir: str, settings: DiagnosticsSettings,
                  fingerprint: str) -> dict[str, Any]:
    """Calibrate a saved posterior; publish a table and a Markdown summary."""
    outcome = stages.diagnose_stage(model_dir, store, output_dir, settings)
    create_table_artifact(key="diagnostics-summary", table=stages.diagnostics_rows(outcome),
                          description="calibration metrics of the trained posterior")
    verdict = "PASSED" if outcome["passed"] else "FAILED"
    failures = "".join(f"\n- {f}" for f in outcome["failures"])
    create_markdown_artifact(key="diagnostics-verdict", markdown=f"# Calibration gate: {verdict}{failures}")
    return outcome


@task(name="simulate-store", **IO_RETRIES)
def simulate_task(task_name: str, num_simulations: int, output: str, seed: int) -> dict[str, Any]:
    """Simulate a built-in task into a store (resumable, so a retry completes the store)."""
    return stages.simulate_stage(task_name, num_simulations, output, seed=seed)


@task(name="store-fingerprint", **IO_RETRIES)
def fingerprint_task(store: str) -> str | None:
    """The store's dataset fingerprint, or None when it cannot be opened (validation will say why)."""
    from sbi_core.dataset import open_store

    try:
        return open_store(store).fingerprint
    except Exception:  # noqa: BLE001 - a broken store is reported by validation, not here
        return None


@task(name="mlflow-log", **IO_RETRIES)
def track_task(service: MlflowService, run_id: str, *, params: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None, history: dict[str, list[float]] | None = None,
               files: dict[str, str] | None = None, tags: dict[str, str] | None = None) -> None:
    """Log parameters, metrics, per-epoch curves, files (artifact dir -> path) and tags."""
    if params:
        service.log_params(run_id, params)
    if metrics:
        service.log_metrics(run_id, metrics)
    if history:
        service.log_history(run_id, history)
    for artifact_path, path in (files or {}).items():
        service.log_artifact(run_id, Path(path), artifact_path or None)
    client = service.client() if tags else None
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
