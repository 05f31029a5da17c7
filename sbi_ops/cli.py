"""Entry point of the ``sbi-ops`` console script.

Each sub-command lives in ``sbi_ops/commands/<name>.py`` and exposes ``register(app)``. Heavy
libraries (jax, prefect, mlflow) are imported inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="sbi-ops",
    help="Amortized Bayesian retrieval of exoplanet atmospheres: simulate, validate, train, "
    "sample, diagnose, register and serve neural posteriors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Commands in the order `--help` lists them. A command is listed here only once it is real.
COMMAND_MODULES: tuple[str, ...] = (
    "simulate",
    "validate",
    "train",
    "sample",
    "diagnose",
    "pipeline",
    "serve",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"sbi_ops.commands.{_name}").register(app)


def main() -> None:
    """Run the ``sbi-ops`` command line."""
    app()


if __name__ == "__main__":
    main()
