"""Store writer: resume, overwrite safety, locking, input errors that touch nothing."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr

from sbi_core.dataset import (
    StoreExistsError,
    StoreIncompleteError,
    StoreLockedError,
    StorePathError,
    StoreWriter,
    create_store,
    open_store,
    simulate_to_store,
)
from sbi_core.dataset.locking import lock_path
from tests.sbi_core.test_dataset_support import FakeTask, all_modalities_payload

N, CHUNK = 37, 8


class _Crash(RuntimeError):
    pass


def _interrupt_after(monkeypatch, n_chunks):
    """Make StoreWriter.write_chunk crash after ``n_chunks`` successful calls; count calls."""
    calls = []
    original = StoreWriter.write_chunk

    def flaky(self, index, *args, **kwargs):
        if len(calls) >= n_chunks:
            raise _Crash("simulated crash")
        calls.append(index)
        return original(self, index, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "write_chunk", flaky)
    return calls


def _arrays(path):
    root = zarr.open_group(str(path), mode="r")
    return {k: root[k][...] for k in ("parameters", "blocks/spectrum/values", "blocks/spectrum/uncertainties", "blocks/aux/values")}


def _tree_snapshot(path):
    out = {}
    for d, _, files in os.walk(path):
        for f in files:
            full = os.path.join(d, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return out


def test_resume_after_crash_matches_uninterrupted_run(tmp_path, monkeypatch):
    reference = simulate_to_store(FakeTask(), N, tmp_path / "ref.zarr", seed=3, chunk_size=CHUNK, progress=False)
    calls = _interrupt_after(monkeypatch, 2)
    with pytest.raises(_Crash):
        simulate_to_store(FakeTask(), N, tmp_path / "s.zarr", seed=3, chunk_size=CHUNK, progress=False)
    assert not os.path.exists(lock_path(str(tmp_path / "s.zarr")))
    with pytest.raises(StoreIncompleteError, match="re-run the same"):
        open_store(tmp_path / "s.zarr")
    monkeypatch.undo()
    written = []
    original = StoreWriter.write_chunk
    monkeypatch.setattr(StoreWriter, "write_chunk", lambda self, i, *a, **k: (written.append(i), original(self, i, *a, **k)))
    resumed = simulate_to_store(FakeTask(), N, tmp_path / "s.zarr", seed=3, chunk_size=CHUNK, progress=False)
    assert calls == [0, 1] and written == [2, 3, 4]
    ref, got = _arrays(tmp_path / "ref.zarr"), _arrays(tmp_path / "s.zarr")
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key])
    assert resumed.fingerprint == reference.fingerprint
    assert np.all(np.isfinite(got["parameters"]))


def test_chunk_content_does_not_depend_on_total_count(tmp_path):
    small = simulate_to_store(FakeTask(), 10, tmp_path / "a.zarr", seed=1, chunk_size=CHUNK, progress=False)
    large = simulate_to_store(FakeTask(), 20, tmp_path / "b.zarr", seed=1, chunk_size=CHUNK, progress=False)
    np.testing.assert_array_equal(large.read(np.arange(10))[0], small.read("all")[0])


def test_resume_with_other_settings_is_refused(tmp_path, monkeypatch):
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(_Crash):
        simulate_to_store(FakeTask(), N, tmp_path / "s.zarr", seed=3, chunk_size=CHUNK, progress=False)
    monkeypatch.undo()
    before = _tree_snapshot(tmp_path / "s.zarr")
    with pytest.raises(StoreExistsError, match=r"other settings \(writer_info"):
        simulate_to_store(FakeTask(), N, tmp_path / "s.zarr", seed=4, chunk_size=CHUNK, progress=False)
    assert _tree_snapshot(tmp_path / "s.zarr") == before


def test_existing_store_is_kept_without_overwrite(tmp_path):
    simulate_to_store(FakeTask(), 10, tmp_path / "s.zarr", progress=False)
    before = _tree_snapshot(tmp_path / "s.zarr")
    with pytest.raises(StoreExistsError, match="already holds a complete simulation store; pass overwrite=True"):
        simulate_to_store(FakeTask(), 10, tmp_path / "s.zarr", progress=False)
    assert _tree_snapshot(tmp_path / "s.zarr") == before


def test_interrupted_overwrite_leaves_old_store_intact(tmp_path, monkeypatch):
    old = simulate_to_store(FakeTask(), 10, tmp_path / "s.zarr", seed=0, progress=False)
    old_fp = old.fingerprint
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(_Crash):
        simulate_to_store(FakeTask(), N, tmp_path / "s.zarr", seed=9, chunk_size=CHUNK, overwrite=True, progress=False)
    monkeypatch.undo()
    assert open_store(tmp_path / "s.zarr").fingerprint == old_fp
    new = simulate_to_store(FakeTask(), N, tmp_path / "s.zarr", seed=9, chunk_size=CHUNK, overwrite=True, progress=False)
    assert new.n_samples == N and new.fingerprint != old_fp
    assert sorted(os.listdir(tmp_path)) == ["s.zarr"]


def test_overwrite_refuses_something_that_is_not_a_store(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(StoreExistsError, match="refusing to overwrite"):
        simulate_to_store(FakeTask(), 10, tmp_path / "data", overwrite=True, progress=False)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"


def test_second_writer_is_locked_out_and_stale_lock_is_taken_over(tmp_path):
    payload = all_modalities_payload()
    with create_store(tmp_path / "s.zarr", task_payload=payload, n_samples=4, chunk_size=2):
        with pytest.raises(StoreLockedError, match=r"another writer \(pid"):
            create_store(tmp_path / "s.zarr", task_payload=payload, n_samples=4, chunk_size=2, resume=True)
    dead_pid = 2**22 + 12345  # above the default pid_max: never a live process
    with open(lock_path(str(tmp_path / "t.zarr")), "w") as f:
        json.dump({"pid": dead_pid, "host": os.uname().nodename, "since": 0}, f)
    with create_store(tmp_path / "t.zarr", task_payload=payload, n_samples=4, chunk_size=2) as writer:
        assert writer.pending_chunks() == [0, 1]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_samples": 0}, ValueError, "n_samples: expected a positive integer, got 0"),
        ({"n_samples": -5}, ValueError, "n_samples: expected a positive integer"),
        ({"chunk_size": 0}, ValueError, "chunk_size: expected a positive integer"),
        ({"task_payload": {**all_modalities_payload(), "blocks": [{"name": "x", "modality": "radio", "length": 3, "has_uncertainties": False}]}}, ValueError, r"modality: 'radio', expected one of"),
        ({"mask_blocks": ["nope"]}, ValueError, r"mask_blocks: unknown block\(s\) \['nope'\]"),
    ],
)
def test_invalid_arguments_touch_nothing(tmp_path, kwargs, error, message):
    args = {"task_payload": all_modalities_payload(), "n_samples": 4, "chunk_size": 2, **kwargs}
    with pytest.raises(error, match=message):
        create_store(tmp_path / "s.zarr", **args)
    assert os.listdir(tmp_path) == []


def test_unwritable_targets(tmp_path):
    with pytest.raises(StorePathError, match="parent directory .* does not exist"):
        create_store(tmp_path / "missing" / "s.zarr", task_payload=all_modalities_payload(), n_samples=4)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorePathError, match="is a file"):
        create_store(tmp_path / "file", task_payload=all_modalities_payload(), n_samples=4)
    assert (tmp_path / "file").read_text() == "x"


def test_bad_chunk_is_rejected_before_writing(tmp_path):
    with create_store(tmp_path / "s.zarr", task_payload=all_modalities_payload(), n_samples=4, chunk_size=2) as writer:
        with pytest.raises(ValueError, match=r"parameters has shape \(2, 2\), expected \(2, 3\)"):
            writer.write_chunk(0, np.zeros((2, 2)), {})
        with pytest.raises(ValueError, match=r"block 'photometry' has arrays \['values'\], expected \['uncertainties', 'values'\]"):
            blocks = {b["name"]: {"values": np.zeros((2, b["length"])), **({"uncertainties": np.ones((2, b["length"]))} if b["has_uncertainties"] else {})} for b in all_modalities_payload()["blocks"]}
            del blocks["photometry"]["uncertainties"]
            writer.write_chunk(0, np.zeros((2, 3)), blocks)
        assert writer.pending_chunks() == [0, 1]
        with pytest.raises(StoreIncompleteError, match=r"chunks \[0, 1\] not written"):
            writer.finalize()
