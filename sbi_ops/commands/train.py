"""``sbi-ops train``: train a posterior on a simulation store and save it."""

from __future__ import annotations

import time
from pathlib import Path

import typer

HELP = (
    "Train a posterior on STORE and save it to --output (metadata.json + weights). Options come "
    "from --config FILE.yaml and --set key=value (later wins): the estimator's constructor "
    "keywords plus 'estimator: conditional_flow | flow_matching'. Unknown keys are an error. "
    "Defaults train to convergence: up to 200 epochs, early stopping (patience 15) on the "
    "validation split, batch size 256, cosine learning-rate schedule."
)


def enable_compilation_cache() -> None:
    """Turn on JAX's persistent compilation cache for this process (CLI only).

    Repeated ``sbi-ops train``/``sample`` runs then skip recompiling kernels they compiled
    before. Directory: ``$JAX_COMPILATION_CACHE_DIR`` or ``$XDG_CACHE_HOME/sbi-ops/jax``
    (``~/.cache/sbi-ops/jax``); ``SBI_OPS_COMPILATION_CACHE=0`` turns it off.
    """
    import os

    if os.environ.get("SBI_OPS_COMPILATION_CACHE", "1") == "0":
        return
    import jax

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(base, "sbi-ops", "jax")
    try:
        os.makedirs(directory, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except (OSError, AttributeError):  # read-only home or an older jax: just compile
        return


def _fail(message: str) -> typer.Exit:
    """Print ``error: message`` to stderr; return the exit (code 2: usage/input error)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _read_config(path: Path | None) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(f"--config {path}: cannot read YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _fail(f"--config {path}: expected a mapping of option: value, got {type(data).__name__}")
    return data


def train(
    store: Path = typer.Argument(..., help="Simulation store (Zarr directory or zip)."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to save the trained posterior to."),
    config: Path = typer.Option(None, "--config", help="YAML file of options."),
    set_options: list[str] = typer.Option([], "--set", help="key=value option (repeatable)."),
) -> None:
    """Train a posterior on a store."""
    from sbi_core.estimator_registry import (
        EstimatorOptionsError,
        parse_set_options,
        resolve_estimator_options,
        split_fit_options,
    )

    try:
        cls, options = resolve_estimator_options(_read_config(config), parse_set_options(set_options))
        options, fit_options = split_fit_options(options)
    except EstimatorOptionsError as exc:
        raise _fail(str(exc)) from None
    enable_compilation_cache()
    from sbi_core.dataset import open_store
    from sbi_core.dataset.errors import StoreFormatError, StorePathError

    try:
        reader = open_store(store)
    except (StoreFormatError, StorePathError, OSError) as exc:
        raise _fail(f"cannot open store {store}: {exc}") from None
    try:
        posterior = cls(parameter_dim=reader.parameter_dim, **options)
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None
    start = time.perf_counter()
    artifacts = posterior.fit(reader, **fit_options)
    posterior.save(str(output))
    _summary(posterior, artifacts, time.perf_counter() - start, output)


def _summary(posterior, artifacts, elapsed: float, output: Path) -> None:
    meta, metrics = artifacts.metadata, artifacts.validation_metrics
    family = getattr(posterior, "effective_flow_family", None)
    typer.echo(f"trained {type(posterior).__name__}" + (f" ({family})" if family else "")
               + f" on {posterior.task_name}@{posterior.task_version}, {posterior.parameter_dim} parameters "
               f"in {posterior.parameter_space!r} space")
    typer.echo(f"epochs: {meta.get('epochs_run')} (best {meta.get('best_epoch')}, stopped early: "
               f"{meta.get('stopped_early')}); best validation loss {metrics.get('validation_loss'):.4f}")
    if "gate_passed" in meta:
        typer.echo(f"stability gate passed: {meta['gate_passed']}")
    typer.echo(f"wall time {elapsed:.1f} s; saved to {output}")


def register(app: typer.Typer) -> None:
    """Add ``train`` to the ``sbi-ops`` application."""
    app.command("train", help=HELP)(train)
