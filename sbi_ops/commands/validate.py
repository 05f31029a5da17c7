"""``sbi-ops validate STORE [--report FILE.json]``: exit 0 valid, 1 invalid, 2 usage error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def validate(
    store: Annotated[Path, typer.Argument(help="Simulation store: Zarr v3 directory or zip.")],
    report: Annotated[Optional[Path], typer.Option(
        "--report", help="Write the full JSON report to this file.")] = None,
    chunk_size: Annotated[Optional[int], typer.Option(
        "--chunk-size", min=1, help="Samples read per step (default: about 8 MiB).")] = None,
    ks_alpha: Annotated[float, typer.Option(
        "--ks-alpha", help="Level of the KS test of parameters against their priors.")] = 1e-6,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Treat warnings as errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the verdict.")] = False,
    fingerprint: Annotated[bool, typer.Option(
        "--fingerprint/--no-fingerprint",
        help="Compute the dataset fingerprint of a valid store (a second streamed read).")] = True,
) -> None:
    """Check a simulation store (format 1.0) before training; never modifies it."""
    if not store.exists():
        typer.echo(f"error: no such store: {store}", err=True)
        raise typer.Exit(EXIT_USAGE)
    if report is not None and not report.parent.exists():
        typer.echo(f"error: --report: directory {report.parent} does not exist", err=True)
        raise typer.Exit(EXIT_USAGE)
    if not 0 < ks_alpha < 1:
        typer.echo(f"error: --ks-alpha must be in (0, 1), got {ks_alpha}", err=True)
        raise typer.Exit(EXIT_USAGE)
    from validation import ValidationPolicy, validate_store  # pandas/pandera: keep --help fast

    result = validate_store(store, chunk_size=chunk_size, ks_alpha=ks_alpha,
                            policy=ValidationPolicy(warnings_as_errors=strict),
                            fingerprint=fingerprint)
    summary = result.summary()
    typer.echo(summary.splitlines()[0] if quiet else summary)
    if report is not None:
        result.write_json(report)
        typer.echo(f"report written to {report}")
    raise typer.Exit(EXIT_VALID if result.valid else EXIT_INVALID)


def register(app: typer.Typer) -> None:
    """Add the ``validate`` command to the ``sbi-ops`` application."""
    app.command("validate")(validate)
