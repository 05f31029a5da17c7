"""Every broken store of the catalogue is rejected by ``sbi-ops validate`` with exit code 1,
a report entry naming the array/field (and sample index), and untouched bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.validation.mutations import CASES, Case
from tests.validation.store_factory import tree_digest, write_valid_store
from tests.validation.cli_app import validate_app


def test_catalogue_is_large_and_distinct() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_store_is_rejected(case: Case, tmp_path: Path) -> None:
    store = case.mutate(write_valid_store(tmp_path / "store.zarr"))
    before = tree_digest(store)
    report_path = tmp_path / "report.json"

    result = CliRunner().invoke(validate_app(), ["validate", str(store), "--report",
                                                 str(report_path)])

    assert result.exit_code == 1, result.output
    assert tree_digest(store) == before, "validation modified the store"
    report = json.loads(report_path.read_text())
    assert report["valid"] is False
    matches = [f for f in report["failures"] if f["check"] == case.check
               and case.location in f["location"] and f["severity"] == "error"]
    assert matches, f"no {case.check} error at {case.location}: {report['failures']}"
    failure = matches[0]
    assert case.location in failure["message"]
    if case.index is not None:
        assert case.index in failure["sample_indices"]
        assert str(case.index) in failure["message"]
    assert f"[{case.check}]" in result.output  # the human summary names the check


def test_valid_store_passes_with_exit_0(valid_store: Path, tmp_path: Path) -> None:
    before = tree_digest(valid_store)
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(validate_app(), ["validate", str(valid_store), "--report",
                                                 str(report_path)])
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output
    assert tree_digest(valid_store) == before
    report = json.loads(report_path.read_text())
    assert report["valid"] is True and report["failures"] == []
