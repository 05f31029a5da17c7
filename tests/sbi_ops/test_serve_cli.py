"""``sbi-ops serve`` argument checks: bad values exit 2 with a message and never start a server."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sbi_ops.cli import app


@pytest.mark.parametrize(("flags", "message"), [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--port", "0"], "--port must be in 1..65535, got 0"),
])
def test_bad_serve_options_exit_2_before_anything_starts(tmp_path, monkeypatch, flags, message):
    monkeypatch.setattr("os.execve", lambda *a: pytest.fail("a server was started"))
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "no-model"), *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_missing_model_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr("os.execve", lambda *a: pytest.fail("a server was started"))
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "no-model"), "--workers", "2",
                                      "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert "no such model directory or URI" in result.output
