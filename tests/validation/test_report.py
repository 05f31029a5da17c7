"""The report: JSON, human summary, Prefect table rows; and the documented check table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

from validation import CHECKS, validate_store


def _broken(store: Path) -> Path:
    zarr.open_group(str(store), mode="r+")["blocks/spectrum/values"][3, 1] = np.nan
    return store


def test_json_report_has_every_field(valid_store: Path, tmp_path: Path) -> None:
    report = validate_store(_broken(valid_store), fingerprint=False)
    data = json.loads(report.write_json(tmp_path / "r.json").read_text())
    assert data["valid"] is False and data["n_errors"] == 1 and data["n_samples"] == 64
    [failure] = data["failures"]
    assert failure["check"] == "values_finite"
    assert failure["location"] == "blocks/spectrum/values"
    assert failure["sample_indices"] == [3] and failure["count"] == 1
    assert failure["expected"] and failure["found"]


def test_table_rows_are_flat_json_values(valid_store: Path) -> None:
    rows = validate_store(_broken(valid_store), fingerprint=False).table_rows()
    assert rows and all(isinstance(v, (str, int, float)) for row in rows for v in row.values())
    assert rows[0]["samples"] == "3"
    json.dumps(rows)


def test_summary_first_line_is_the_verdict(valid_store: Path) -> None:
    text = validate_store(_broken(valid_store), fingerprint=False).summary()
    assert text.startswith("INVALID:") and "[values_finite]" in text and "sample 3" in text


def test_valid_store_report_has_fingerprint_when_reader_available(valid_store: Path) -> None:
    report = validate_store(valid_store)
    assert report.valid
    try:
        from sbi_core.dataset import open_store
    except ImportError:
        assert report.fingerprint is None
        return
    assert report.fingerprint == open_store(valid_store).fingerprint


def test_docs_list_every_check() -> None:
    docs = Path(__file__).parents[2] / "docs" / "validation.md"
    text = docs.read_text()
    missing = [name for name in CHECKS if f"`{name}`" not in text]
    assert not missing, f"docs/validation.md does not document {missing}"


def test_valid_zip_store_passes(valid_store: Path) -> None:
    from tests.validation.mutations import _to_zip

    archive = _to_zip(valid_store)
    report = validate_store(archive, fingerprint=False)
    assert report.valid, report.summary()
    assert report.n_samples == 64
