"""``sbi-ops validate`` through the real command line: exit codes 0 / 1 / 2 and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zarr
from typer.testing import CliRunner

from tests.validation.cli_app import validate_app
from tests.validation.store_factory import tree_digest, write_valid_store


def _run(*args: str):
    return CliRunner().invoke(validate_app(), ["validate", *args])


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(str(tmp_path / "nope.zarr"))
    assert result.exit_code == 2
    assert "no such store" in result.output


def test_report_into_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    store = write_valid_store(tmp_path / "s.zarr")
    result = _run(str(store), "--report", str(tmp_path / "missing" / "r.json"))
    assert result.exit_code == 2


def test_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    store = write_valid_store(tmp_path / "s.zarr")
    assert _run(str(store), "--chunk-size", "0").exit_code == 2
    assert _run(str(store), "--ks-alpha", "2").exit_code == 2


def test_valid_store_exit_0_and_json_report(tmp_path: Path) -> None:
    store = write_valid_store(tmp_path / "s.zarr")
    result = _run(str(store), "--report", str(tmp_path / "r.json"), "-q", "--no-fingerprint")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("VALID")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["valid"] is True and report["fingerprint"] is None


def test_strict_turns_warnings_into_exit_1(tmp_path: Path) -> None:
    store = write_valid_store(tmp_path / "s.zarr")
    zarr.open_group(str(store), mode="r+")["blocks/photometry/values"][:, 0] = 1.0
    assert _run(str(store)).exit_code == 0
    assert _run(str(store), "--strict").exit_code == 1


def test_real_console_entry_point_lists_validate() -> None:
    pytest.importorskip("sbi_ops.commands.simulate")
    from sbi_ops.cli import app

    result = CliRunner().invoke(app, ["validate", "--help"])
    assert result.exit_code == 0 and "--report" in result.output


def test_store_from_sbi_ops_simulate_two_moons_passes(tmp_path: Path) -> None:
    pytest.importorskip("sbi_ops.commands.simulate")
    from sbi_ops.cli import app

    store = tmp_path / "two_moons.zarr"
    made = CliRunner().invoke(app, ["simulate", "--task", "two_moons", "--num-simulations", "300",
                                    "--output", str(store), "--no-progress"])
    assert made.exit_code == 0, made.output
    before = tree_digest(store)
    result = CliRunner().invoke(app, ["validate", str(store), "--report",
                                      str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["valid"] and report["n_warnings"] == 0 and report["fingerprint"]
    assert tree_digest(store) == before
