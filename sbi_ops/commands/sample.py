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
    "to --output: .npy (an (N, P) array) or .csv (header = parameter names)."
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
) -> None:
    """Sample a saved posterior for one observation."""
    if num_samples < 1:
        raise _fail(f"--num-samples must be a positive integer, got {num_samples}")
    if output.suffix.lower() not in (".npy", ".csv"):
        raise _fail(f"--output must end in .npy or .csv, got {output.name!r}")
    entries = _read_observation(observation)
    from sbi_ops.commands.train import enable_compilation_cache

    enable_compilation_cache()
    from sbi_core.compatibility import TaskCompatibilityError
    from sbi_core.persistence import PosteriorLoadError
    from sbi_core.posterior_base import PersistentPosteriorEstimator

    try:
        posterior = PersistentPosteriorEstimator.load(str(model_dir))
    except PosteriorLoadError as exc:
        raise _fail(str(exc)) from None
    try:
        blocks = observation_blocks(entries, posterior._schema_object())
        encoded = posterior.encode_observation(blocks)
        draws = posterior.to_physical(posterior.sample_posterior(encoded, num_samples, seed=seed))
    except (TaskCompatibilityError, ValueError) as exc:
        raise _fail(str(exc)) from None
    _write(output, draws.samples, list(posterior.parameter_names))
    bad = draws.metadata.get("num_nonfinite", 0)
    typer.echo(f"wrote {num_samples} x {posterior.parameter_dim} physical-unit samples to {output}"
               + (f" ({bad} non-finite draws clamped)" if bad else ""))


def register(app: typer.Typer) -> None:
    """Add ``sample`` to the ``sbi-ops`` application."""
    app.command("sample", help=HELP)(sample)
