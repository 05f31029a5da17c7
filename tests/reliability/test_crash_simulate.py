"""Item 1: ``sbi-ops simulate`` killed with SIGKILL at random points, then resumed.

Each trial runs the real command in a subprocess that SIGKILLs itself at its N-th file-system
mutation under the store path (N drawn uniformly per seed from all the mutations an
uninterrupted run makes; writes are torn in half), then re-runs the same command in this
process. The finished store must equal an uninterrupted run with the same seed and chunk size:
same fingerprint, same arrays, no lock file or staging directory left behind.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from typer.testing import CliRunner

from sbi_core.dataset import open_store
from sbi_core.dataset.errors import StoreIncompleteError
from sbi_core.dataset.paths import existing_kind
from sbi_ops.cli import app
from tests.reliability.helpers import counting, kill_points, run_many, was_killed

runner = CliRunner()
FAST_SEEDS = (0, 1, 2)
SLOW_SEEDS = tuple(range(3, 9))


def simulate_args(store, seed: int, overwrite: bool = False) -> list[str]:
    args = ["--task", "two_moons", "-n", "40", "--chunk-size", "8", "--output", str(store),
            "--seed", str(seed), "--no-progress"]
    return args + (["--overwrite"] if overwrite else [])


def simulate_here(store, seed: int, overwrite: bool = False):
    result = runner.invoke(app, ["simulate", *simulate_args(store, seed, overwrite)])
    return result


def arrays_of(store) -> dict[str, np.ndarray]:
    params, obs = store.read("all")
    return {"parameters": params, **{f"{k}/values": np.asarray(v) for k, v in obs.values.items()}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs (seed 3, and seed 1 for the overwrite trials), with their mutation counts."""
    base = tmp_path_factory.mktemp("reference")
    out = {}
    for seed in (3, 1):
        path = base / f"seed{seed}.zarr"
        with counting(path) as faults:
            result = simulate_here(path, seed)
        assert result.exit_code == 0, result.output
        out[seed] = {"path": path, "events": faults.count(), "store": open_store(path)}
    out["overwrite_events"] = _overwrite_events(base, out[1]["path"])
    return out


def _overwrite_events(base, old) -> int:
    import shutil

    path = base / "overwrite.zarr"
    shutil.copytree(old, path)
    with counting(path) as faults:
        result = simulate_here(path, 3, overwrite=True)
    assert result.exit_code == 0, result.output
    return faults.count()


def take_over_stale_lock(path) -> None:
    """A lock left by the killed writer must be stale: the next writer takes it over."""
    from sbi_core.dataset.locking import WriterLock

    lock = WriterLock(str(path))
    lock.acquire()  # raises StoreLockedError if it looked held
    lock.release()


def assert_equal_to_reference(path, reference_store) -> None:
    store = open_store(path)
    assert store.fingerprint == reference_store.fingerprint
    got, want = arrays_of(store), arrays_of(reference_store)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    leftovers = sorted(p.name for p in path.parent.iterdir() if p.name != path.name and p.name.startswith(path.name))
    assert leftovers == [], f"left behind: {leftovers}"


def state_after_kill(path) -> str:
    """What a reader sees after the kill: never a store that opens but is wrong."""
    kind = existing_kind(str(path))
    if kind == "partial":
        with pytest.raises(StoreIncompleteError, match="re-run the same `sbi-ops simulate` command"):
            open_store(path)
    return kind


def resume_trials(tmp_path, reference, seeds):
    total = reference[3]["events"]
    points = kill_points(total, seeds, always=[total])  # the last: after the store is complete
    jobs = [(tmp_path / f"k{k}.zarr", k, "simulate", *simulate_args(tmp_path / f"k{k}.zarr", 3)) for k in points]
    for (path, k, *_), result in zip(jobs, run_many(jobs)):
        assert was_killed(result), f"kill point {k}/{total}: exit {result.returncode}\n{result.stderr[-2000:]}"
        kind = state_after_kill(path)
        assert kind in ("absent", "partial", "complete"), f"kill point {k}: {kind} at {path}"
        again = simulate_here(path, 3)
        # A kill after the store was marked complete leaves nothing to resume: the re-run
        # refuses to touch the finished store (exit 2) and the store is already whole.
        assert again.exit_code == 0 or (kind == "complete" and "already exists" in again.output), again.output
        if again.exit_code != 0:
            # The re-run stops before taking the lock, so the dead writer's lock file is still
            # there; it is stale (dead pid on this host) and the next writer takes it over.
            take_over_stale_lock(path)
        assert_equal_to_reference(path, reference[3]["store"])
    return len(points)


def test_kill_9_during_simulate_then_resume_gives_identical_store(tmp_path, reference):
    assert resume_trials(tmp_path, reference, FAST_SEEDS) >= 2


@pytest.mark.slow
def test_kill_9_during_simulate_sweep(tmp_path, reference):
    assert resume_trials(tmp_path, reference, SLOW_SEEDS) >= 4


def overwrite_trials(tmp_path, reference, points):
    import shutil

    old, new = reference[1]["store"], reference[3]["store"]
    jobs = []
    for k in points:
        path = tmp_path / f"o{k}.zarr"
        shutil.copytree(reference[1]["path"], path)
        jobs.append((path, k, "simulate", *simulate_args(path, 3, overwrite=True)))
    for (path, k, *_), result in zip(jobs, run_many(jobs)):
        assert was_killed(result), f"kill point {k}: exit {result.returncode}\n{result.stderr[-2000:]}"
        # The old store stays whole until the new one is complete and swapped in.
        assert existing_kind(str(path)) == "complete", f"kill point {k}: {existing_kind(str(path))} at {path}"
        assert open_store(path).fingerprint in (old.fingerprint, new.fingerprint)
        again = simulate_here(path, 3, overwrite=True)
        assert again.exit_code == 0, again.output
        assert_equal_to_reference(path, new)


def test_kill_9_during_overwrite_keeps_old_or_new_store(tmp_path, reference):
    total = reference["overwrite_events"]
    overwrite_trials(tmp_path, reference, kill_points(total, FAST_SEEDS[:2]))


@pytest.mark.slow
def test_kill_9_during_overwrite_at_every_swap_step(tmp_path, reference):
    """The last five mutations of an overwrite: the swap (exchange + rename aside) and the removal of the old store."""
    total = reference["overwrite_events"]
    overwrite_trials(tmp_path, reference, list(range(max(1, total - 4), total + 1)))
