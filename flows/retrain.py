"""Prefect flows: one per stage, and the parent ``retrain`` that chains them.

``retrain``: [simulate] -> validate (gate) -> train (cached) -> diagnose (gate) -> register +
promote, with one MLflow run per retrain. A failed gate ends the flow run Failed with the reason
(a :class:`~flows.stages.GateFailure`), marks the MLflow run FAILED and registers nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.events import emit_event
from sbi_core.metadata_checksum import SIDECAR_NAME

from flows import registry, tasks
from flows.options import (
    DiagnoseOptions,
    RegisterOptions,
    RetrainOptions,
    SimulateOptions,
    TrainOptions,
    ValidateOptions,
    config_hash,
    default_data_dir,
    resolve_config,
)
from flows.stages import CalibrationGateFailure, GateFailure, ValidationGateFailure, plot_history
from flows.tracking import MlflowService

#: Custom event emitted when a store is (re)written; the deployment trigger listens for it.
DATASET_UPDATED_EVENT = "sbi.dataset.updated"


def emit_dataset_updated(store: str, fingerprint: str, extra: dict[str, Any] | None = None) -> None:
    """Emit ``sbi.dataset.updated`` for a store (any producer may call this)."""
    emit_event(event=DATASET_UPDATED_EVENT,
               resource={"prefect.resource.id": f"sbi.store.{fingerprint[:16]}",
                         "prefect.resource.name": str(store)},
               payload={"store": str(store), "fingerprint": fingerprint, **(extra or {})})


@flow(name="simulate-dataset")
def simulate_dataset(options: SimulateOptions) -> dict[str, Any]:
    """Simulate a store, then announce it with the ``sbi.dataset.updated`` event."""
    outcome = tasks.simulate_task(options.task, options.num_simulations, str(options.output), options.seed)
    emit_dataset_updated(outcome["store"], outcome["fingerprint"],
                         {"task": outcome["task"], "n_samples": outcome["n_samples"]})
    return outcome


@flow(name="validate-dataset")
def validate_dataset(options: ValidateOptions) -> dict[str, Any]:
    """Validate a store; raise :class:`ValidationGateFailure` (flow Failed) when invalid."""
    outcome = tasks.validate_task(str(options.store), str(options.report_dir))
    if not outcome["valid"]:
        raise ValidationGateFailure(f"validation gate: {options.store} is invalid "
                                    f"({outcome['n_errors']} error(s))\n{outcome['summary']}", outcome)
    return outcome


def model_dir_for(options: TrainOptions) -> Path:
    """Deterministic model directory: ``<models_dir>/<fingerprint[:16]>-<config hash[:16]>``."""
    return options.models_dir / f"{options.fingerprint[:16]}-{config_hash(options.estimator_config)[:16]}"


@flow(name="train-posterior")
def train_posterior(options: TrainOptions) -> dict[str, Any]:
    """Train (or reuse the cached model for the same fingerprint and config)."""
    model_dir = model_dir_for(options)
    train = tasks.train_task
    if not all((model_dir / name).is_file() for name in ("metadata.json", SIDECAR_NAME)):
        # A cache record pointing at a deleted model directory must not be reused, nor one saved
        # before metadata.json had its checksum sidecar (it would no longer load).
        train = train.with_options(refresh_cache=True)
    state = train(str(options.store), dict(options.estimator_config), str(model_dir),
                  options.fingerprint, config_hash(options.estimator_config), return_state=True)
    outcome = state.result()
    return {**outcome, "cached": state.name == "Cached"}


@flow(name="diagnose-posterior")
def diagnose_posterior(options: DiagnoseOptions, fingerprint: str = "") -> dict[str, Any]:
    """Calibrate; raise :class:`CalibrationGateFailure` (flow Failed) when a threshold fails."""
    outcome = tasks.diagnose_task(str(options.model_dir), str(options.store), str(options.output_dir),
                                  options.settings, fingerprint)
    if not outcome["passed"]:
        raise CalibrationGateFailure("calibration gate: " + "; ".join(outcome["failures"]), outcome)
    return outcome


@flow(name="register-posterior")
def register_posterior(options: RegisterOptions) -> dict[str, Any]:
    """Log the pyfunc model into the run, register a version, set aliases by the promotion rule."""
    from flows.packaging import log_pyfunc

    data_dir = options.data_dir or default_data_dir()
    service = MlflowService.create(options.tracking_uri, data_dir)

    def log_model() -> str:
        with service.active_run(options.run_id):
            return log_pyfunc(options.model_dir).model_uri

    # Resumes a registration of the same data and config that a killed process left unfinished.
    done = registry.register_and_promote(service, options.model_name, options.tags, options.metrics,
                                         options.rule, Path(data_dir) / "locks", log_model)
    return {"model_name": options.model_name, "version": str(done.version.version),
            "model_uri": done.version.source,
            "promoted": done.decision.promote, "reason": done.decision.reason,
            "compared_to": done.decision.champion_version, "resumed": done.resumed}


def _result(status: str, **fields: Any) -> dict[str, Any]:
    return {"status": status, **fields}


@flow(name="retrain")
def retrain(options: RetrainOptions) -> dict[str, Any]:
    """Validate, train, diagnose and register a posterior; see the module docstring.

    Returns:
        ``status`` (``registered``, ``unchanged``: this data and config are already registered,
        or ``skipped``: ``if_data_changed`` and nothing changed), ``model_name``, ``version``,
        ``promoted``, ``reason``, ``run_id``, ``fingerprint``, ``metrics``.

    Raises:
        ValidationGateFailure: The store is invalid (nothing trained or registered).
        CalibrationGateFailure: The calibration gate failed (nothing registered).
    """
    data = options.resolved_data_dir()
    service = MlflowService.create(options.tracking_uri, data, options.experiment)
    store = _store(options, data)
    cfg = config_hash(options.estimator_config)
    if options.if_data_changed:
        skipped = _skip_if_unchanged(service, options, store, cfg)
        if skipped is not None:
            return skipped
    run_id = service.start_run(f"retrain-{Path(store).name}",
                               tags={"store": str(store), "config_hash": cfg, "model_name": options.model_name})
    try:
        result = _run_stages(service, options, store, cfg, run_id, data)
    except GateFailure as exc:
        _record_failure(service, run_id, exc)
        raise
    except BaseException:
        service.end_run(run_id, "FAILED")
        raise
    service.end_run(run_id, "FINISHED")
    return result


def _store(options: RetrainOptions, data: Path) -> Path:
    if options.store is not None:
        return options.store.expanduser().resolve()
    output = data / "stores" / f"{options.task}-n{options.num_simulations}-seed{options.seed}.zarr"
    outcome = simulate_dataset(SimulateOptions(task=options.task, num_simulations=options.num_simulations,
                                               output=output, seed=options.seed))
    return Path(outcome["store"])


def _skip_if_unchanged(service: MlflowService, options: RetrainOptions, store: Path, cfg: str) -> dict | None:
    fingerprint = tasks.fingerprint_task(str(store))
    existing = fingerprint and registry.find_version(service, options.model_name, fingerprint, cfg)
    if not existing:
        return None
    return _result("skipped", model_name=options.model_name, version=str(existing.version),
                   promoted=False, run_id=existing.run_id, fingerprint=fingerprint, metrics={},
                   reason=f"data unchanged: version {existing.version} was trained on this fingerprint "
                          "with this configuration")


def _run_stages(service: MlflowService, options: RetrainOptions, store: Path, cfg: str,
                run_id: str, data: Path) -> dict[str, Any]:
    work = data / "runs" / run_id
    validation = validate_dataset(ValidateOptions(store=store, report_dir=work / "validation"))
    fingerprint = validation["fingerprint"]
    tasks.track_task(service, run_id, files={"validation": validation["report_path"]},
                     tags={"dataset_fingerprint": fingerprint})
    training = train_posterior(TrainOptions(store=store, fingerprint=fingerprint, models_dir=data / "models",
                                            estimator_config=options.estimator_config))
    _track_training(service, run_id, options, training, work)
    diagnostics = diagnose_posterior(DiagnoseOptions(model_dir=Path(training["model_dir"]), store=store,
                                                     output_dir=work / "diagnostics",
                                                     settings=options.diagnostics), fingerprint)
    tasks.track_task(service, run_id, metrics=diagnostics["metrics"],
                     files={"diagnostics": str(work / "diagnostics")})
    summary = {"fingerprint": fingerprint, "run_id": run_id, "metrics": diagnostics["metrics"],
               "model_name": options.model_name, "training_cached": training["cached"],
               "model_dir": training["model_dir"]}
    existing = registry.find_version(service, options.model_name, fingerprint, cfg)
    if existing is not None:
        return _result("unchanged", version=str(existing.version), promoted=False, **summary,
                       reason=f"version {existing.version} already holds this data and configuration")
    task = training["task"]
    tags = registry.version_tags(fingerprint, cfg, diagnostics["metrics"],
                                 {"task": f"{task['name']}@{task['version']}", "run_id": run_id})
    registration = register_posterior(RegisterOptions(
        model_dir=Path(training["model_dir"]), model_name=options.model_name, run_id=run_id, tags=tags,
        metrics=diagnostics["metrics"], rule=options.promotion, tracking_uri=service.tracking_uri,
        data_dir=data))
    tasks.track_task(service, run_id, tags={"registered_version": registration["version"],
                                            "promotion.reason": registration["reason"]})
    return _result("registered", version=registration["version"], promoted=registration["promoted"],
                   reason=registration["reason"], **summary)


def _track_training(service: MlflowService, run_id: str, options: RetrainOptions,
                    training: dict[str, Any], work: Path) -> None:
    cls, resolved = resolve_config(options.estimator_config)
    task = training["task"]
    plot = plot_history(training["history"], work / "plots" / "training.png")
    final = {f"final_{k}": v for k, v in training["validation_metrics"].items()}
    tasks.track_task(service, run_id, params={"estimator": cls.__name__, **resolved,
                                              "diagnostics": options.diagnostics.model_dump(),
                                              "promotion": options.promotion.model_dump()},
                     history=training["history"], metrics={**final, "training_seconds": training["training_seconds"]},
                     files={"plots": str(plot)},
                     tags={"task_name": str(task["name"]), "task_version": str(task["version"]),
                           "training_cached": str(training["cached"]).lower()})


def _record_failure(service: MlflowService, run_id: str, exc: GateFailure) -> None:
    outcome = exc.outcome
    try:
        if isinstance(exc, ValidationGateFailure) and outcome.get("report_path"):
            service.log_artifact(run_id, Path(outcome["report_path"]), "validation")
        if isinstance(exc, CalibrationGateFailure) and outcome.get("metrics"):
            service.log_metrics(run_id, outcome["metrics"])
        service.client().set_tag(run_id, "gate_failure", exc.message[:5000])
    finally:
        service.end_run(run_id, "FAILED")
