"""``sbi-ops simulate``: success, resume, and exit code 2 with clear errors on bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
from typer.testing import CliRunner

from sbi_core.dataset import StoreWriter, open_store, simulate_to_store
from sbi_core.simulators import get_task
from sbi_ops.cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["simulate", *map(str, args)])


def test_help_lists_the_options():
    result = _run("--help")
    assert result.exit_code == 0
    for option in ("--task", "--num-simulations", "--output", "--seed", "--chunk-size", "--overwrite"):
        assert option in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--task", "nope", "-n", 5), "unknown task 'nope'; available tasks: exo_transmission, gaussian_linear, two_moons"),
        (("--task", "two_moons", "-n", 0), "--num-simulations must be a positive integer, got 0"),
        (("--task", "two_moons", "-n", -3), "--num-simulations must be a positive integer, got -3"),
        (("--task", "two_moons", "-n", 5, "--chunk-size", 0), "--chunk-size must be a positive integer"),
        (("--task", "two_moons", "-n", 5, "--seed", -1), "--seed must be an integer in [0, 2**32)"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, args, message):
    result = _run(*args, "--output", tmp_path / "s.zarr")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert os.listdir(tmp_path) == []


def test_unwritable_path_exits_2(tmp_path):
    result = _run("--task", "two_moons", "-n", 5, "--output", tmp_path / "missing" / "s.zarr")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_read_only_parent_exits_2(tmp_path, monkeypatch):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):
        # Root ignores permission bits (CI runs as root): make the permission check see what an
        # ordinary user would, so the refusal path is exercised rather than skipped.
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == os.fspath(locked)
                            else real_access(p, mode, **kw))
    try:
        result = _run("--task", "two_moons", "-n", 5, "--output", locked / "s.zarr")
        assert result.exit_code == 2 and "is not writable" in result.output
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)


def test_simulate_resume_and_refuse_existing(tmp_path, monkeypatch):
    out = tmp_path / "s.zarr"
    calls = []
    original = StoreWriter.write_chunk

    def crash_on_second(self, index, *a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(index)
        return original(self, index, *a, **k)

    monkeypatch.setattr(StoreWriter, "write_chunk", crash_on_second)
    interrupted = _run("--task", "two_moons", "-n", 40, "--output", out, "--seed", 5, "--chunk-size", 16, "--no-progress")
    assert interrupted.exit_code == 130 and "re-run the same command to resume" in interrupted.output
    monkeypatch.undo()
    result = _run("--task", "two_moons", "-n", 40, "--output", out, "--seed", 5, "--chunk-size", 16, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "wrote 40 simulations of two_moons" in result.output and "fingerprint:" in result.output
    store = open_store(out)
    reference = simulate_to_store(get_task("two_moons"), 40, tmp_path / "ref.zarr", seed=5, chunk_size=16, progress=False)
    assert store.fingerprint == reference.fingerprint
    params, obs = store.read("all")
    assert params.shape == (40, 2) and np.all(np.isfinite(params))
    assert np.all(np.isfinite(obs.values[store.observation_schema.blocks[0].name]))
    before = _mtimes(out)
    again = _run("--task", "two_moons", "-n", 40, "--output", out, "--no-progress")
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.output
    assert _mtimes(out) == before


def _mtimes(root):
    return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs}
