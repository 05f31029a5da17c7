"""``sbi_core.fsutil.replace_directory``: the atomic exchange behind store overwrite and save."""

from __future__ import annotations

import sys

import pytest

from sbi_core import fsutil


def make(path, marker: str):
    path.mkdir()
    (path / marker).write_text(marker)
    return path


@pytest.mark.parametrize("atomic", [True, False])
def test_replace_directory_puts_new_at_target_and_old_aside(tmp_path, monkeypatch, atomic):
    if not atomic:
        monkeypatch.setattr(fsutil, "_RENAMEAT2", None)  # the two-rename fallback
    elif fsutil._RENAMEAT2 is None:
        pytest.skip("renameat2 not available on this platform")
    new, target, aside = make(tmp_path / "new", "new"), make(tmp_path / "target", "old"), tmp_path / "aside"
    fsutil.replace_directory(new, target, aside)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aside", "target"]
    assert (target / "new").is_file() and (aside / "old").is_file()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux only")
def test_exchange_paths_swaps_and_reports_errors(tmp_path):
    a, b = make(tmp_path / "a", "x"), make(tmp_path / "b", "y")
    assert fsutil.exchange_paths(a, b) is True
    assert (a / "y").is_file() and (b / "x").is_file()
    with pytest.raises(OSError, match="No such file"):
        fsutil.exchange_paths(a, tmp_path / "missing")


def test_fallback_restores_target_when_the_second_rename_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil, "_RENAMEAT2", None)
    target, aside = make(tmp_path / "target", "old"), tmp_path / "aside"
    with pytest.raises(FileNotFoundError):
        fsutil.replace_directory(tmp_path / "missing-new", target, aside)
    assert (target / "old").is_file() and not aside.exists()
