"""``sbi-ops simulate``: fill a simulation store from a built-in task, chunked and resumable."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

HELP = (
    "Simulate (parameters, observation) pairs of a built-in task into a Zarr store (format 1.0). "
    "Chunks are written as they finish: re-running the same command on an interrupted store "
    "resumes it. An existing complete store is kept unless --overwrite is given (the old store "
    "is replaced only once the new one is complete)."
)


def _fail(message: str) -> typer.Exit:
    """Print ``error: message`` to stderr; return the exit (code 2: usage/input error)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def simulate(
    task: str = typer.Option(..., "--task", help="Built-in task name, e.g. exo_transmission."),
    num_simulations: int = typer.Option(..., "--num-simulations", "-n", help="Number of simulations (> 0)."),
    output: Path = typer.Option(..., "--output", "-o", help="Store directory to write (e.g. sims.zarr)."),
    seed: int = typer.Option(0, "--seed", help="Base seed; chunk i uses fold_in(PRNGKey(seed), i)."),
    chunk_size: int = typer.Option(1024, "--chunk-size", help="Simulations per chunk (and per Zarr chunk)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --output."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Simulate a task into a store."""
    from sbi_core.dataset.errors import StoreExistsError, StoreFormatError, StoreLockedError, StorePathError
    from sbi_core.dataset.paths import check_writable_target, existing_kind

    if num_simulations < 1:
        raise _fail(f"--num-simulations must be a positive integer, got {num_simulations}")
    if chunk_size < 1:
        raise _fail(f"--chunk-size must be a positive integer, got {chunk_size}")
    if not 0 <= seed < 2**32:
        raise _fail(f"--seed must be an integer in [0, 2**32), got {seed}")
    path = os.path.normpath(str(output))
    try:
        check_writable_target(path)
    except StorePathError as exc:
        raise _fail(str(exc)) from None
    if existing_kind(path) in ("complete", "foreign") and not overwrite:
        raise _fail(f"{path!r} already exists; pass --overwrite to replace it (nothing was changed)")
    task_obj = _lookup_task(task)
    from sbi_core.dataset import simulate_to_store

    start = time.perf_counter()
    try:
        store = simulate_to_store(task_obj, num_simulations, path, seed=seed, chunk_size=chunk_size, overwrite=overwrite, progress=progress)
    except (StoreExistsError, StorePathError, StoreLockedError, StoreFormatError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished chunks are kept in {path}; re-run the same command to resume", err=True)
        raise typer.Exit(code=130) from None
    elapsed = time.perf_counter() - start
    typer.echo(f"wrote {store.n_samples} simulations of {store.task_name}@{store.task_version} to {store.path} in {elapsed:.1f} s")
    typer.echo(f"fingerprint: {store.fingerprint}")


def _lookup_task(name: str):
    """The task called ``name``, or exit 2 listing the available ones."""
    from sbi_core.simulators import available_tasks, get_task

    try:
        return get_task(name)
    except KeyError:
        raise _fail(f"unknown task {name!r}; available tasks: {', '.join(sorted(available_tasks()))}") from None


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the ``sbi-ops`` application."""
    app.command("simulate", help=HELP)(simulate)
