"""Checkpoints: round trips on both backends, retention, atomicity under injected crashes."""

from __future__ import annotations

import importlib.util
import math

import equinox as eqx
import jax
import numpy as np
import optax
import pytest

from sbi_core import checkpoints as ckpt_module
from sbi_core.checkpoints import (
    Checkpointer,
    CheckpointError,
    CheckpointMismatchError,
    resolve_backend,
)
from sbi_core.configs import CheckpointConfig

BACKENDS = ["equinox", "orbax"]


def _groups(seed: int = 0, width: int = 4):
    model = eqx.nn.MLP(2, 1, width, 1, key=jax.random.key(seed))
    params, _ = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optax.adamw(1e-3).init(params)
    return {"params": params, "opt_state": opt_state, "key": jax.random.key_data(jax.random.key(seed))}


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_and_retention(tmp_path, backend):
    checkpointer = Checkpointer(CheckpointConfig(str(tmp_path), backend=backend))
    assert checkpointer.latest_step() is None
    assert checkpointer.restore_latest(_groups()) is None
    meta = {"epoch": 0, "history": {"loss": [1.0, math.nan]}, "best": math.inf}
    for seed in range(3):
        saved = _groups(seed)
        step = checkpointer.save(saved, dict(meta, epoch=seed))
    checkpointer.wait_until_finished()
    assert step == 3 and checkpointer.latest_step() == 3
    groups, restored_meta = checkpointer.restore_latest(_groups(0))
    _assert_same(groups, saved)
    assert restored_meta["epoch"] == 2 and restored_meta["best"] == math.inf
    assert math.isnan(restored_meta["history"]["loss"][1])
    checkpointer.close()
    # Retention: the latest two committed steps survive; a new checkpointer continues numbering.
    reopened = Checkpointer(CheckpointConfig(str(tmp_path), backend=backend))
    assert reopened._backend.steps() == [2, 3]
    assert reopened.save(saved, meta) == 4
    reopened.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_restore_rejects_a_different_model(tmp_path, backend):
    checkpointer = Checkpointer(CheckpointConfig(str(tmp_path), backend=backend))
    checkpointer.save(_groups(width=4), {"epoch": 1})
    with pytest.raises(CheckpointMismatchError, match="group 'params' array 0 is shape/dtype"):
        checkpointer.restore_latest(_groups(width=8))
    checkpointer.close()


def test_crash_between_temp_write_and_rename_keeps_last_good(tmp_path, monkeypatch):
    config = CheckpointConfig(str(tmp_path), backend="equinox")
    checkpointer = Checkpointer(config)
    good = _groups(1)
    checkpointer.save(good, {"epoch": 1})

    def crash(tmp, final):
        raise KeyboardInterrupt("simulated kill between temp write and rename")

    monkeypatch.setattr(ckpt_module, "_publish", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save(_groups(2), {"epoch": 2})
    monkeypatch.undo()
    # The fully written temp directory exists but was never committed: it is not a checkpoint.
    assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    reopened = Checkpointer(config)
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())  # debris cleaned
    groups, meta = reopened.restore_latest(_groups(0))
    assert meta["epoch"] == 1
    _assert_same(groups, good)
    assert reopened.save(_groups(3), {"epoch": 3}) == 2


def test_crash_during_prune_and_orbax_temp_dirs_are_ignored(tmp_path):
    checkpointer = Checkpointer(CheckpointConfig(str(tmp_path), backend="equinox"))
    checkpointer.save(_groups(1), {"epoch": 1})
    (tmp_path / ".trash-ckpt_00000000-1").mkdir()  # a prune killed half-way
    (tmp_path / "ckpt_0000009").mkdir()  # not a step name: ignored
    assert checkpointer.restore_latest(_groups(0))[1]["epoch"] == 1
    if importlib.util.find_spec("orbax.checkpoint") is None:
        return
    orbax_dir = tmp_path / "orbax"
    orbax_ckpt = Checkpointer(CheckpointConfig(str(orbax_dir), backend="orbax"))
    orbax_ckpt.save(_groups(1), {"epoch": 1})
    orbax_ckpt.wait_until_finished()
    (orbax_dir / "2.orbax-checkpoint-tmp-1234").mkdir()  # an async save killed mid-way
    assert orbax_ckpt.latest_step() == 1
    assert orbax_ckpt.restore_latest(_groups(0))[1]["epoch"] == 1
    orbax_ckpt.close()


def test_corrupt_latest_falls_back_to_previous(tmp_path):
    checkpointer = Checkpointer(CheckpointConfig(str(tmp_path), backend="equinox"))
    checkpointer.save(_groups(1), {"epoch": 1})
    checkpointer.save(_groups(2), {"epoch": 2})
    arrays = tmp_path / "ckpt_00000002" / "arrays.eqx"
    data = bytearray(arrays.read_bytes())
    data[-3] ^= 0xFF  # a bit flip inside the last array
    arrays.write_bytes(bytes(data))
    assert checkpointer.restore_latest(_groups(0))[1]["epoch"] == 1
    (tmp_path / "ckpt_00000001" / "meta.json").write_text("{truncated")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        checkpointer.restore_latest(_groups(0))


def test_resolve_backend(monkeypatch):
    assert resolve_backend("equinox") == "equinox"
    with pytest.raises(ValueError, match="'auto', 'orbax' or 'equinox'"):
        resolve_backend("pickle")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert resolve_backend("auto") == "equinox"
    with pytest.raises(ValueError, match="orbax-checkpoint is not installed"):
        resolve_backend("orbax")
