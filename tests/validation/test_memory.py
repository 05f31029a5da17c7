"""Streaming: validating a store several times larger than a small budget stays within it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import psutil
import zarr

from tests.validation.store_factory import manifest, sample_parameters, write_valid_store
from validation import validate_store

N, LENGTH, CHUNK = 12_288, 512, 512  # values alone: 48 MiB of float64
BUDGET_MIB = 24


def _write_large_store(path: Path) -> Path:
    m = manifest(N)
    m["blocks"] = [{"name": "spectrum", "modality": "spectrum", "length": LENGTH,
                    "has_uncertainties": False}]
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["sbi_store"] = m
    rng = np.random.default_rng(0)
    group.create_array("parameters", data=sample_parameters(rng, N), chunks=(CHUNK, 3))
    values = group.require_group("blocks").require_group("spectrum").create_array(
        "values", shape=(N, LENGTH), chunks=(CHUNK, LENGTH), dtype="float64", compressors=None)
    for start in range(0, N, 4 * CHUNK):
        values[start:start + 4 * CHUNK] = rng.random((4 * CHUNK, LENGTH))
    return path


def test_peak_memory_growth_is_bounded(tmp_path: Path) -> None:
    validate_store(write_valid_store(tmp_path / "warm.zarr"), fingerprint=False)  # imports
    store = _write_large_store(tmp_path / "large.zarr")
    proc = psutil.Process()
    baseline = proc.memory_info().rss
    peak, done = [baseline], threading.Event()

    def poll() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], proc.memory_info().rss)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    report = validate_store(store, chunk_size=CHUNK, fingerprint=False)
    done.set()
    thread.join()
    assert report.valid, report.summary()
    growth_mib = (peak[0] - baseline) / 2**20
    store_mib = N * LENGTH * 8 / 2**20
    print(f"peak RSS growth {growth_mib:.1f} MiB validating {store_mib:.0f} MiB")
    assert growth_mib < BUDGET_MIB < store_mib, f"grew {growth_mib:.0f} MiB"
