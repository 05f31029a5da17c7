"""``sbi-ops sample``: draw physical-unit posterior samples for one observation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

HELP = (
    "Draw --num-samples posterior samples for the observation in --observation (JSON: "
    '{"blocks": [{"name": ..., "values": [...], "uncertainties": [...]}]}; modality and '
    "coordinates default to the model's observation schema) and write them, in physical units, "
    "to --output: .npy (an (N, P) array) or .csv (header = parameter names). With "
    "--importance-sampling the draws are reweighted by the task's likelihood x prior / posterior "
    "density (the built-in task named in the model's metadata; --task-option key=value for "
    "non-default task options) and resampled; ESS, sampling efficiency and log-evidence +- its "
    "standard error are printed, low efficiency is a warning on stderr."
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _read_observation(path: Path) -> list[dict[str, Any]]:
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise _fail(f"--observation {path}: cannot read JSON ({exc})") from None
    blocks = payload.get("blocks") if isinstance(payload, dict) else None
    if not isinstance(blocks, list) or not blocks:
        raise _fail(f'--observation {path}: expected {{"blocks": [{{"name": ..., "values": [...]}}, ...]}}')
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or "name" not in block or "values" not in block:
            raise _fail(f"--observation {path}: blocks[{i}] needs 'name' and 'values'")
    return blocks


def observation_blocks(entries: list[dict[str, Any]], schema: Any) -> list[Any]:
    """Build ``ObservationBlock``s; modality and coordinates default to the schema's."""
    import numpy as np

    from sbi_core.observation import ObservationBlock

    specs = {spec.name: spec for spec in schema.blocks}
    blocks = []
    for entry in entries:
        spec = specs.get(entry["name"])
        modality = entry.get("modality") or (spec.modality if spec is not None else None)
        if modality is None:
            raise ValueError(f"block {entry['name']!r} is not in the model's schema (blocks: {sorted(specs)})")
        coords = entry.get("coordinates")
        if coords is None and spec is not None:
            coords = getattr(spec, "coordinates", None)
        mask = entry.get("mask")
        blocks.append(ObservationBlock(
            name=entry["name"], modality=modality,
            values=np.asarray(entry["values"], dtype=np.float64),
            uncertainties=None if entry.get("uncertainties") is None else np.asarray(entry["uncertainties"], np.float64),
            coordinates=None if coords is None else np.asarray(coords, np.float64),
            mask=None if mask is None else np.asarray(mask, bool),
        ))
    return blocks


def _write(output: Path, samples: Any, names: list[str]) -> None:
    import numpy as np

    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".npy":
        np.save(output, np.asarray(samples, np.float64), allow_pickle=False)
    else:
        np.savetxt(output, samples, delimiter=",", header=",".join(names), comments="", fmt="%.9g")


def sample(
    model_dir: Path = typer.Argument(..., help="Saved posterior directory."),
    observation: Path = typer.Option(..., "--observation", help="Observation JSON file."),
    num_samples: int = typer.Option(..., "--num-samples", "-n", help="Number of draws (> 0)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output .npy or .csv file."),
    seed: int = typer.Option(None, "--seed", help="Sampling seed (default: the model's seed)."),
    importance_sampling: bool = typer.Option(
        False, "--importance-sampling", help="Reweight by the task likelihood and resample."),
    num_proposals: int = typer.Option(
        None, "--num-proposals", help="Importance-sampling proposals (default: --num-samples)."),
    task_options: list[str] = typer.Option(
        [], "--task-option", help="key=value option of the built-in task's factory (repeatable)."),
    efficiency_threshold: float = typer.Option(
        None, "--efficiency-threshold", help="Warn below this sampling efficiency (default 0.01)."),
) -> None:
    """Sample a saved posterior for one observation."""
    if num_samples < 1:
        raise _fail(f"--num-samples must be a positive integer, got {num_samples}")
    if output.suffix.lower() not in (".npy", ".csv"):
        raise _fail(f"--output must end in .npy or .csv, got {output.name!r}")
    _check_importance_options(importance_sampling, num_proposals, task_options, efficiency_threshold)
    entries = _read_observation(observation)
    posterior = _load(model_dir)
    if importance_sampling:
        draws, bad = _importance_draws(posterior, entries, num_samples, num_proposals or num_samples,
                                       seed, task_options, efficiency_threshold)
    else:
        draws, bad = _draws(posterior, entries, num_samples, seed)
    _write(output, draws, list(posterior.parameter_names))
    kind = "importance-resampled physical-unit" if importance_sampling else "physical-unit"
    typer.echo(f"wrote {num_samples} x {posterior.parameter_dim} {kind} samples to {output}"
               + (f" ({bad} non-finite draws clamped)" if bad else ""))


def _check_importance_options(enabled: bool, num_proposals: int | None, task_options: list[str],
                              efficiency_threshold: float | None) -> None:
    if not enabled and (num_proposals is not None or task_options or efficiency_threshold is not None):
        raise _fail("--num-proposals, --task-option and --efficiency-threshold only apply with "
                    "--importance-sampling")
    if num_proposals is not None and num_proposals < 1:
        raise _fail(f"--num-proposals must be a positive integer, got {num_proposals}")
    if efficiency_threshold is not None and not 0.0 <= efficiency_threshold <= 1.0:
        raise _fail(f"--efficiency-threshold must lie in [0, 1], got {efficiency_threshold}")


def _load(model_dir: Path) -> Any:
    from sbi_ops.commands.train import enable_compilation_cache

    enable_compilation_cache()
    from sbi_core.persistence import PosteriorLoadError
    from sbi_core.posterior_base import PersistentPosteriorEstimator

    try:
        return PersistentPosteriorEstimator.load(str(model_dir))
    except PosteriorLoadError as exc:
        raise _fail(str(exc)) from None


def _encode(posterior: Any, entries: list[dict[str, Any]]) -> tuple[list[Any], Any]:
    from sbi_core.compatibility import TaskCompatibilityError

    try:
        blocks = observation_blocks(entries, posterior._schema_object())
        return blocks, posterior.encode_observation(blocks)
    except (TaskCompatibilityError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _draws(posterior: Any, entries: list[dict[str, Any]], num_samples: int, seed: int | None) -> tuple[Any, int]:
    """Plain amortized draws in physical units and the count of clamped non-finite draws."""
    _, encoded = _encode(posterior, entries)
    try:
        draws = posterior.to_physical(posterior.sample_posterior(encoded, num_samples, seed=seed))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    return draws.samples, int(draws.metadata.get("num_nonfinite", 0))


def _importance_draws(posterior: Any, entries: list[dict[str, Any]], num_samples: int, num_proposals: int,
                      seed: int | None, task_options: list[str],
                      efficiency_threshold: float | None) -> tuple[Any, int]:
    """Importance-resampled physical-unit draws (exit 2 when the task has no likelihood)."""
    from sbi_ops.commands.sample_importance import (
        ImportanceSamplingUnavailable,
        importance_resample,
        likelihood_task,
        parse_task_options,
    )

    try:
        task = likelihood_task(posterior, parse_task_options(task_options))
    except ImportanceSamplingUnavailable as exc:
        raise _fail(str(exc)) from None
    blocks, encoded = _encode(posterior, entries)
    try:
        draws = importance_resample(posterior, encoded, blocks, task, num_samples=num_samples,
                                    num_proposals=num_proposals, seed=posterior.seed if seed is None else seed,
                                    efficiency_threshold=efficiency_threshold)
    except ImportanceSamplingUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    return draws, 0


def register(app: typer.Typer) -> None:
    """Add ``sample`` to the ``sbi-ops`` application."""
    app.command("sample", help=HELP)(sample)
