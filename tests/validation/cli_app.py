"""The ``sbi-ops`` app for CLI tests of ``validate``.

Uses the real ``sbi_ops.cli.app`` when it imports; while other commands listed there are still
being written, falls back to an app holding only ``validate`` (registered the same way).
"""

from __future__ import annotations

import typer


def validate_app() -> typer.Typer:
    """A Typer app on which ``["validate", STORE, ...]`` runs the validate command."""
    try:
        from sbi_ops.cli import app
    except ImportError:
        from sbi_ops.commands.validate import register

        app = typer.Typer()
        app.callback()(lambda: None)  # keep "validate" a sub-command, as in sbi-ops
        register(app)
    return app
