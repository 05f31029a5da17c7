"""Simulation fanned out with prefect-dask: workers write disjoint chunks of one store.

The integration test runs the real Prefect flow (session test harness) on a local Dask cluster
of 2 worker *processes* and checks the finished store is byte-identical to a serial
``simulate_to_store`` with the same seed and chunk size.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from flows.parallel_simulation import plan_chunk_ranges

N, CHUNK, SEED = 50, 8, 11  # 7 chunks, the last one short


def test_plan_chunk_ranges_is_a_contiguous_disjoint_cover():
    assert plan_chunk_ranges(list(range(7)), 2) == [[0, 1, 2, 3], [4, 5, 6]]
    assert plan_chunk_ranges([1, 4], 3) == [[1], [4]]
    assert plan_chunk_ranges([], 4) == []
    with pytest.raises(ValueError, match="n_workers"):
        plan_chunk_ranges([0], 0)


def _files(path) -> dict[str, bytes]:
    out = {}
    for d, _, names in os.walk(path):
        for name in names:
            full = os.path.join(d, name)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return out


@pytest.mark.integration
def test_dask_fan_out_matches_serial_store(prefect_harness, tmp_path):
    from flows.parallel_simulation import simulate_dataset_parallel
    from sbi_core.dataset import open_store, simulate_to_store
    from sbi_core.simulators import get_task

    out = simulate_dataset_parallel("gaussian_linear", N, tmp_path / "par.zarr", seed=SEED,
                                    chunk_size=CHUNK, n_workers=2, processes=True)
    serial = simulate_to_store(get_task("gaussian_linear"), N, tmp_path / "ser.zarr", seed=SEED,
                               chunk_size=CHUNK, progress=False)

    # Two worker processes (not this one), disjoint ranges covering every chunk.
    pids = {w["pid"] for w in out["workers"]}
    assert len(pids) == 2 and os.getpid() not in pids
    assert sorted(c for w in out["workers"] for c in w["chunks"]) == list(range(7))
    assert out["fingerprint"] == serial.fingerprint and out["n_samples"] == N

    par, ser = zarr.open_group(str(tmp_path / "par.zarr"), mode="r"), zarr.open_group(str(tmp_path / "ser.zarr"), mode="r")
    names = [k for k, _ in ser.arrays()] + [f"blocks/{b}/{k}" for b, g in ser["blocks"].groups() for k, _ in g.arrays()]
    for name in names:
        assert par[name][...].tobytes() == ser[name][...].tobytes(), name
    assert _files(tmp_path / "par.zarr") == _files(tmp_path / "ser.zarr")
    assert np.all(np.isfinite(open_store(tmp_path / "par.zarr").read("all")[0]))
    assert not os.path.exists(str(tmp_path / "par.zarr") + ".lock")
