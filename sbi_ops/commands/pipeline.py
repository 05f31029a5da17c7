"""``sbi-ops pipeline``: run the Prefect ``retrain`` flow end to end on the embedded defaults.

Exit codes: 0 trained/registered, unchanged or skipped; 1 the store failed validation; 2 usage
error; 3 the calibration gate failed; 4 a stage crashed (see the log).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_CALIBRATION, EXIT_CRASH = 0, 1, 2, 3, 4
#: Top-level config sections that configure the pipeline rather than the estimator.
PIPELINE_SECTIONS = ("diagnostics", "promotion")

HELP = (
    "Run the retrain pipeline (validate -> train -> diagnose -> register) as a Prefect flow with "
    "MLflow tracking. --config/--set share the 'sbi-ops train' vocabulary; in addition the "
    "sections 'diagnostics' (split, num_observations, num_samples, seed, thresholds) and "
    "'promotion' (min_nll_improvement, calibration_tolerance) configure the gates, e.g. "
    "--set diagnostics.num_observations=200. Exit codes: 0 ok/skipped, 1 validation failed, "
    "2 usage error, 3 calibration gate failed, 4 a stage crashed."
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def _offline_defaults() -> None:
    """No telemetry and a startup timeout that suits small machines (before prefect imports)."""
    for key, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DO_NOT_TRACK", "true"),
                       ("MLFLOW_DISABLE_TELEMETRY", "true"),
                       ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")):
        os.environ.setdefault(key, value)


def split_config(config: dict[str, Any], overrides: dict[str, Any]) -> tuple[dict, dict, dict]:
    """``(estimator config, diagnostics, promotion)`` from a YAML mapping and ``--set`` pairs.

    ``--set diagnostics.thresholds.sbc_alpha=0.001`` sets a nested key; everything else is the
    estimator vocabulary (checked later against the estimator's keywords).
    """
    merged: dict[str, Any] = {k: v for k, v in config.items() if k not in PIPELINE_SECTIONS}
    sections: dict[str, dict[str, Any]] = {}
    for name in PIPELINE_SECTIONS:
        value = config.get(name) or {}
        if not isinstance(value, dict):
            raise ValueError(f"config section {name!r} must be a mapping, got {type(value).__name__}")
        sections[name] = dict(value)
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head in PIPELINE_SECTIONS and rest:
            target = sections[head]
            *parents, leaf = rest.split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value
        else:
            merged[key] = value
    return merged, sections["diagnostics"], sections["promotion"]


def _options(store, task, num_simulations, seed, model_name, tracking_uri, data_dir, config,
             set_options, if_data_changed) -> Any:
    from pydantic import ValidationError

    from sbi_core.estimator_registry import EstimatorOptionsError, parse_set_options
    from sbi_ops.commands.train import _read_config

    try:
        estimator, diagnostics, promotion = split_config(_read_config(config), parse_set_options(set_options))
        from flows.options import RetrainOptions

        fields = {"store": store, "task": task, "num_simulations": num_simulations, "seed": seed,
                  "tracking_uri": tracking_uri, "data_dir": data_dir, "estimator_config": estimator,
                  "diagnostics": diagnostics, "promotion": promotion, "if_data_changed": if_data_changed}
        if model_name:
            fields["model_name"] = model_name
        return RetrainOptions(**fields)
    except (EstimatorOptionsError, ValueError) as exc:
        message = str(exc)
        if isinstance(exc, ValidationError):
            message = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        raise _fail(message) from None


def pipeline(
    store: Annotated[Optional[Path], typer.Option("--store", help="Existing simulation store.")] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="Built-in task to simulate.")] = None,
    num_simulations: Annotated[Optional[int], typer.Option("--num-simulations", help="Simulations for --task.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Simulation seed (with --task).")] = 0,
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="Registered model name.")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: sqlite under the data folder).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Data folder (default $SBI_OPS_DATA_DIR or ./data).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of options.")] = None,
    set_options: Annotated[list[str], typer.Option("--set", help="key=value option (repeatable).")] = [],  # noqa: B006
    if_data_changed: Annotated[bool, typer.Option("--if-data-changed", help="Skip when this store and config are already registered.")] = False,
) -> None:
    """Run the retrain pipeline."""
    if (store is None) == (task is None):
        raise _fail("give exactly one of --store STORE or --task NAME --num-simulations N")
    if task is not None and num_simulations is None:
        raise _fail("--task needs --num-simulations N")
    if store is not None and not store.exists():
        raise _fail(f"no such store: {store}")
    options = _options(store, task, num_simulations, seed, model_name, tracking_uri, data_dir, config,
                       set_options, if_data_changed)
    _offline_defaults()
    raise typer.Exit(run_pipeline(options))


def run_pipeline(options: Any) -> int:
    """Run ``retrain``; print the outcome; return the exit code."""
    from flows.retrain import retrain
    from flows.stages import GateFailure

    try:
        result = retrain(options)
    except GateFailure as exc:
        typer.echo(f"FAILED {exc.message}", err=True)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the flow's own log has the traceback
        typer.echo(f"error: the pipeline crashed: {type(exc).__name__}: {exc}", err=True)
        return EXIT_CRASH
    typer.echo(summary(result))
    return EXIT_OK


def summary(result: dict[str, Any]) -> str:
    """A short human summary of a ``retrain`` result."""
    lines = [f"{result['status']}: model {result.get('model_name')} version {result.get('version')}"
             + (" (champion)" if result.get("promoted") else ""),
             f"reason: {result.get('reason')}",
             f"dataset fingerprint: {result.get('fingerprint')}", f"MLflow run: {result.get('run_id')}"]
    for key in ("heldout_nll", "calibration_error", "sbc_min_p_value", "tarp_atc"):
        if key in result.get("metrics", {}):
            lines.append(f"  {key:<20}{result['metrics'][key]:.4f}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add ``pipeline`` to the ``sbi-ops`` application."""
    app.command("pipeline", help=HELP)(pipeline)
