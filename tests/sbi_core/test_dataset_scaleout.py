"""Scale-out writing: a coordinator creates the store, attached writers fill disjoint chunks."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sbi_core.dataset import (
    StoreIncompleteError,
    StoreWriter,
    create_simulation_store,
    simulate_chunks,
    simulate_to_store,
)
from tests.sbi_core.test_dataset_support import FakeTask
from tests.sbi_core.test_dataset_writer import CHUNK, N, _arrays, _tree_snapshot


def test_attached_writers_on_disjoint_chunks_reproduce_the_serial_store(tmp_path):
    reference = simulate_to_store(FakeTask(), N, tmp_path / "ref.zarr", seed=3, chunk_size=CHUNK, progress=False)
    coordinator = create_simulation_store(FakeTask(), N, tmp_path / "s.zarr", seed=3, chunk_size=CHUNK)
    with coordinator:
        pending = coordinator.pending_chunks()
        halves = [pending[0::2], pending[1::2]]
        # Two writers in other threads, each with its own attached handle on the store.
        workers = [threading.Thread(target=lambda ix=ix: simulate_chunks(FakeTask(), StoreWriter.attach(coordinator.path), ix))
                   for ix in halves]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert coordinator.pending_chunks() == []
        store = coordinator.finalize()
    assert store.fingerprint == reference.fingerprint
    ref, got = _arrays(tmp_path / "ref.zarr"), _arrays(tmp_path / "s.zarr")
    for key in ref:
        assert got[key].tobytes() == ref[key].tobytes()
    assert _tree_snapshot(tmp_path / "s.zarr") == _tree_snapshot(tmp_path / "ref.zarr")


def test_attach_refuses_missing_and_complete_stores_and_cannot_finalize(tmp_path):
    with pytest.raises(StoreIncompleteError, match="no unfinished simulation store"):
        StoreWriter.attach(tmp_path / "absent.zarr")
    simulate_to_store(FakeTask(), 10, tmp_path / "done.zarr", chunk_size=CHUNK, progress=False)
    with pytest.raises(StoreIncompleteError, match="not an unfinished simulation store"):
        StoreWriter.attach(tmp_path / "done.zarr")
    coordinator = create_simulation_store(FakeTask(), 10, tmp_path / "s.zarr", chunk_size=CHUNK)
    with coordinator:
        worker = StoreWriter.attach(coordinator.path)
        with pytest.raises(RuntimeError, match="cannot finalize"):
            worker.finalize()
        worker.close()  # no lock to release: the coordinator still holds it
        simulate_chunks(FakeTask(), worker, coordinator.pending_chunks())
        assert np.all(worker.completed_chunks())
        coordinator.finalize()


def test_simulate_chunks_refuses_another_task(tmp_path):
    class Other(FakeTask):
        name = "other"

        def fingerprint(self) -> str:
            return "0" * 64

    coordinator = create_simulation_store(FakeTask(), 10, tmp_path / "s.zarr", chunk_size=CHUNK)
    with coordinator:
        with pytest.raises(ValueError, match="was not written by"):
            simulate_chunks(Other(), StoreWriter.attach(coordinator.path), [0])


def test_interrupted_fan_out_resumes_with_a_serial_run(tmp_path):
    reference = simulate_to_store(FakeTask(), N, tmp_path / "ref.zarr", seed=3, chunk_size=CHUNK, progress=False)
    coordinator = create_simulation_store(FakeTask(), N, tmp_path / "s.zarr", seed=3, chunk_size=CHUNK)
    with coordinator:  # a worker finished chunks 1 and 3, then the run died: lock released, store unfinished
        simulate_chunks(FakeTask(), StoreWriter.attach(coordinator.path), [1, 3])
    resumed = simulate_to_store(FakeTask(), N, tmp_path / "s.zarr", seed=3, chunk_size=CHUNK, progress=False)
    assert resumed.fingerprint == reference.fingerprint
    assert _tree_snapshot(tmp_path / "s.zarr") == _tree_snapshot(tmp_path / "ref.zarr")
