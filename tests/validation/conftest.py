"""Fixtures for the validator tests: a small valid store written with plain zarr."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.validation.store_factory import write_valid_store


@pytest.fixture
def valid_store(tmp_path: Path) -> Path:
    """A fresh valid store directory (64 samples, two blocks, splits)."""
    return write_valid_store(tmp_path / "store.zarr")
