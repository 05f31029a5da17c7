"""Staging leftovers of killed saves are removed by the next save, and nothing else is.

The SIGKILL version of this (a real save killed mid-write in a subprocess) is in
tests/reliability/test_crash_save.py; these tests pin the selection rules with hand-made siblings.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sbi_core.metadata_checksum import SIDECAR_NAME
from sbi_core.persistence import read_posterior_metadata, write_posterior_directory
from sbi_core.save_staging import lock_directory, remove_stale_staging, unlock


def _weights(content: bytes):
    return lambda directory: (directory / "weights.bin").write_bytes(content)


def _save(target: Path, content: bytes = b"w1") -> None:
    write_posterior_directory(target, {"schema_version": "test"}, _weights(content))


def _leftover(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    (path / "weights.bin").write_bytes(b"partial")
    return path


def test_the_next_save_removes_dead_staging_siblings_only(tmp_path):
    target = tmp_path / "model"
    _save(target)
    dead = [_leftover(tmp_path, ".model.tmp-0123abcd"), _leftover(tmp_path, ".model.old-89abcdef")]
    foreign = [_leftover(tmp_path, name) for name in (
        ".model.tmp-0123abc", ".model.tmp-0123abcdx", ".model.tmp-0123ABCD", ".other.tmp-0123abcd",
        "model.tmp-0123abcd", ".model.bak-0123abcd", ".model.tmp-0123abcd.keep")]
    (tmp_path / ".model.tmp-fedcba98").write_bytes(b"a file, not a staging directory")
    elsewhere = _leftover(tmp_path, "elsewhere")
    (tmp_path / ".model.old-76543210").symlink_to(elsewhere, target_is_directory=True)

    _save(target, b"w2")

    assert not any(p.exists() for p in dead)
    assert all(p.is_dir() for p in foreign) and elsewhere.is_dir()
    assert (tmp_path / ".model.tmp-fedcba98").is_file() and (tmp_path / ".model.old-76543210").is_symlink()
    assert (target / "weights.bin").read_bytes() == b"w2"


def test_a_staging_directory_locked_by_a_live_save_is_kept(tmp_path):
    target = tmp_path / "model"
    _save(target)
    live = _leftover(tmp_path, ".model.tmp-0badf00d")
    fd = lock_directory(live)  # what a running save holds (another open file: flock conflicts)
    try:
        assert remove_stale_staging(target) == []
        _save(target, b"w2")
        assert live.is_dir()
    finally:
        unlock(fd)
    assert remove_stale_staging(target) == [live] and not live.exists()


HOLD_LOCK = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
             "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")


def test_a_lock_held_by_another_process_is_respected_until_it_is_killed(tmp_path):
    target = tmp_path / "model"
    _save(target)
    live = _leftover(tmp_path, ".model.tmp-0badf00d")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert remove_stale_staging(target) == [] and live.is_dir()
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops its lock: no cleanup code runs
        holder.wait()
    assert remove_stale_staging(target) == [live]


def test_the_two_rename_crash_window_is_left_for_a_person(tmp_path):
    """Target missing beside an ``.old-`` sibling: those siblings are the only copies of the models."""
    target = tmp_path / "model"
    old = _leftover(tmp_path, ".model.old-11111111")
    new = _leftover(tmp_path, ".model.tmp-22222222")
    assert remove_stale_staging(target) == []
    assert old.is_dir() and new.is_dir()


def test_a_killed_first_save_is_cleaned_by_the_next_one(tmp_path):
    target = tmp_path / "model"
    partial = _leftover(tmp_path, ".model.tmp-33333333")
    _save(target)
    assert not partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_sidecar_is_written_in_sha256sum_format(tmp_path):
    target = tmp_path / "model"
    _save(target)
    digest = hashlib.sha256((target / "metadata.json").read_bytes()).hexdigest()
    assert (target / SIDECAR_NAME).read_text() == f"{digest}  metadata.json\n"
    assert sorted(os.listdir(target)) == ["metadata.json", SIDECAR_NAME, "weights.bin"]
    check = subprocess.run(["sha256sum", "--check", "--status", SIDECAR_NAME], cwd=target)
    assert check.returncode == 0
    assert read_posterior_metadata(target, ("test",))["schema_version"] == "test"


@pytest.mark.parametrize("content", ["", "0" * 64, f"{'0' * 64}  weights.bin\n", f"{'A' * 64}  metadata.json\n"])
def test_malformed_sidecar_is_refused(tmp_path, content):
    from sbi_core.persistence import PosteriorLoadError

    target = tmp_path / "model"
    _save(target)
    (target / SIDECAR_NAME).write_text(content)
    with pytest.raises(PosteriorLoadError, match=rf"{SIDECAR_NAME}: malformed"):
        read_posterior_metadata(target, ("test",))
