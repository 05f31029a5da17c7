"""Item 1: training with checkpoints killed with SIGKILL, then resumed.

Both backends move a pruned step out of the way (a rename) before deleting it, so a kill
mid-prune never leaves a half-deleted step under a committed name (orbax deleted in place
before the fix in sbi_core/checkpoints.py; this test found a half-deleted step).

Equinox backend: the subprocess SIGKILLs itself at its N-th file-system mutation inside the
checkpoint directory (N random per seed; writes torn in half). Orbax backend (asynchronous
saves in a background thread): killed from outside at a random time after its first commit.

After each kill, *every* committed checkpoint left on disk is resumed on its own (a copy of the
directory holding only that step) and the original directory is resumed as is; each resumed run
must finish with the same validation-loss history as an uninterrupted run. On one machine and
XLA build the runs are bitwise reproducible; ``RTOL`` only allows for reduction-order changes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.reliability import training_toy
from tests.reliability.helpers import REPO, counting, kill_points, run_many, was_killed

EPOCHS = 6
RTOL = 1e-6
FAST_SEEDS = (0, 1, 2)
SLOW_SEEDS = tuple(range(3, 8))
_STEP = re.compile(r"^(ckpt_\d{8}|\d+)$")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("train-ref")
    with counting(base / "eqx") as faults:
        result = training_toy.fit(base / "eqx", backend="equinox", epochs=EPOCHS, resume=False)
    return {"result": result, "events": faults.count()}


def committed_steps(directory) -> list[str]:
    return sorted((p.name for p in directory.iterdir() if p.is_dir() and _STEP.match(p.name)),
                  key=lambda name: int(re.sub(r"\D", "", name)))


def assert_matches(resumed, reference) -> None:
    assert resumed.epochs_run == EPOCHS
    np.testing.assert_allclose(resumed.history["validation_loss"], reference.history["validation_loss"], rtol=RTOL)
    assert resumed.best_validation_loss == pytest.approx(reference.best_validation_loss, rel=RTOL)


def check_after_kill(directory, backend: str, reference, scratch) -> int:
    """Resume from every committed checkpoint alone, then from the directory as left; returns #steps."""
    steps = committed_steps(directory) if directory.exists() else []
    for step in steps:
        alone = scratch / f"{directory.name}-only-{step}"
        alone.mkdir()
        shutil.copytree(directory / step, alone / step)
        resumed = training_toy.fit(alone, backend=backend, epochs=EPOCHS, resume=True)
        if backend == "equinox":
            epoch = json.loads((directory / step / "meta.json").read_text())["epoch"]
            assert resumed.resumed_from_epoch == epoch, step
        else:
            assert resumed.resumed_from_epoch is not None, step
        assert_matches(resumed, reference)
    resumed = training_toy.fit(directory, backend=backend, epochs=EPOCHS, resume=True)
    assert (resumed.resumed_from_epoch is None) == (not steps)
    assert_matches(resumed, reference)
    return len(steps)


def equinox_trials(tmp_path, reference, seeds) -> int:
    points = kill_points(reference["events"], seeds)
    jobs = [(tmp_path / f"k{k}", k, "train", "equinox", EPOCHS) for k in points]
    checked = 0
    for (directory, k, *_), result in zip(jobs, run_many(jobs)):
        assert was_killed(result), f"kill point {k}: exit {result.returncode}\n{result.stderr[-2000:]}"
        checked += check_after_kill(directory, "equinox", reference["result"], tmp_path)
    return checked


def test_kill_9_during_training_then_resume_equinox(tmp_path, reference):
    assert equinox_trials(tmp_path, reference, FAST_SEEDS) >= 1


@pytest.mark.slow
def test_kill_9_during_training_sweep_equinox(tmp_path, reference):
    assert equinox_trials(tmp_path, reference, SLOW_SEEDS) >= 3


def _timed_kill(directory, seed: int) -> None:
    """Start an orbax run (0.2 s pause per epoch) and SIGKILL it at a random moment after its first commit."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "tests.reliability.driver", str(directory), "0", "train", "orbax", str(EPOCHS), "0.2"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if directory.exists() and committed_steps(directory):
                break
            time.sleep(0.02)
        time.sleep(random.Random(seed).uniform(0.0, 1.0))
        assert process.poll() is None, "the training subprocess ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_kill_9_during_training_orbax_async(tmp_path, reference):
    for seed in (0, 1):
        directory = tmp_path / f"orbax{seed}"
        _timed_kill(directory, seed)
        check_after_kill(directory, "orbax", reference["result"], tmp_path)
