"""iter_batches: in memory under the budget, block-shuffled streaming with bounded memory above it."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
import zarr

from sbi_core.batch import PosteriorBatch
from sbi_core.dataset import open_store

N, L, CHUNK = 6000, 200, 250  # values + uncertainties ~ 9.6 MB as float32, 400 kB per chunk


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "big.zarr"
    rng = np.random.default_rng(0)
    root = zarr.open_group(str(path), mode="w")
    root.attrs["sbi_store"] = {
        "format_version": "1.0",
        "task": {"name": "big", "version": "1"},
        "parameters": [{"name": "p", "unit": "", "prior": {"kind": "normal", "loc": 0, "scale": 1}}],
        "blocks": [{"name": "spectrum", "modality": "spectrum", "length": L, "has_uncertainties": True}],
        "n_samples": N,
    }
    # Row i carries i in its parameter, so batches can be checked against their indices.
    root.create_array("parameters", data=np.arange(N, dtype=np.float32)[:, None], chunks=(CHUNK, 1))
    root.create_array("blocks/spectrum/values", data=rng.normal(size=(N, L)).astype(np.float32), chunks=(CHUNK, L))
    root.create_array("blocks/spectrum/uncertainties", data=np.ones((N, L), np.float32), chunks=(CHUNK, L))
    return path


def _epoch(store, **kwargs):
    return list(store.iter_batches("train", **kwargs))


def test_streaming_visits_every_train_row_once_in_shuffled_blocks(big_store):
    store = open_store(big_store, memory_budget_bytes=2 * 1024**2)
    assert not store.fits_in_memory("train")
    batches = _epoch(store, batch_size=64, shuffle=True, seed=1)
    assert all(isinstance(b, PosteriorBatch) for b in batches)
    idx = np.concatenate([b.metadata["indices"] for b in batches])
    np.testing.assert_array_equal(np.sort(idx), store.split_indices("train"))
    for b in batches:
        np.testing.assert_array_equal(b.parameters[:, 0], b.metadata["indices"])
    assert idx[0] >= CHUNK or not np.all(np.diff(idx[:64]) > 0)  # not stored order
    again = np.concatenate([b.metadata["indices"] for b in _epoch(store, batch_size=64, shuffle=True, seed=1)])
    other = np.concatenate([b.metadata["indices"] for b in _epoch(store, batch_size=64, shuffle=True, seed=2)])
    np.testing.assert_array_equal(idx, again)
    assert not np.array_equal(idx, other)
    ordered = np.concatenate([b.metadata["indices"] for b in _epoch(store, batch_size=64, shuffle=False)])
    np.testing.assert_array_equal(ordered, store.split_indices("train"))


def test_streaming_memory_stays_bounded(big_store):
    budget = 2 * 1024**2
    store = open_store(big_store, memory_budget_bytes=budget)
    assert store.split_nbytes("train") > 3 * budget
    gc.collect()
    tracemalloc.start()
    try:
        n = 0
        for batch in store.iter_batches("train", batch_size=128, shuffle=True, seed=0):
            n += batch.batch_size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == len(store.split_indices("train"))
    # A window of at most a few chunks plus one batch, far below the split's size.
    assert peak < 2 * budget, f"peak {peak / 1e6:.1f} MB for a {budget / 1e6:.1f} MB budget"


def test_in_memory_when_it_fits_and_drop_last(big_store):
    store = open_store(big_store)
    assert store.fits_in_memory("validation")
    batches = _epoch_split(store, "validation", batch_size=100, drop_last=True)
    n_val = len(store.split_indices("validation"))
    assert [b.batch_size for b in batches] == [100] * (n_val // 100)
    full = _epoch_split(store, "validation", batch_size=100, drop_last=False)
    assert sum(b.batch_size for b in full) == n_val
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        next(iter(store.iter_batches("train", batch_size=0)))


def _epoch_split(store, split, **kwargs):
    return list(store.iter_batches(split, shuffle=True, seed=0, **kwargs))


def test_iter_chunks_covers_split_in_stored_order(big_store):
    store = open_store(big_store, memory_budget_bytes=0)
    pieces = list(store.iter_chunks("test"))
    idx = np.concatenate([p[0] for p in pieces])
    np.testing.assert_array_equal(idx, store.split_indices("test"))
    assert all(len(p[0]) <= CHUNK for p in pieces)
