"""Data-parallel training (jax.sharding) on 2 CPU devices: same loss curve as one device.

``XLA_FLAGS=--xla_force_host_platform_device_count=2`` must be set before JAX is imported, so the
comparison runs in a child process; it trains the same model with the same seed on one device and
data-parallel over both, in-memory and streamed, and prints the histories as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
#: float32 runs whose batch means are reduced in a different order (per device, then across);
#: measured max relative difference over 4 epochs: 2.8e-7 (in-memory and streamed).
RTOL, ATOL = 1e-5, 1e-7

CHILD = textwrap.dedent("""
    import json
    from types import SimpleNamespace

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sbi_core.configs import OptimizationConfig
    from sbi_core.training import InMemoryData, SBITrainer, StreamingData
    from sbi_core.training import data_parallel as dp

    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.1 * rng.normal(size=(256, 1))).astype(np.float32)
    train, valid = InMemoryData(y[:192], {"x": x[:192]}), InMemoryData(y[192:], {"x": x[192:]})

    class Store:
        def __init__(self, data):
            self.data = data
        def split_indices(self, split):
            return np.arange(self.data.num_samples)
        def iter_batches(self, split, batch_size, shuffle, seed, drop_last):
            n = self.data.num_samples
            order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
            for s in range(0, n - n % batch_size if drop_last else n, batch_size):
                i = order[s:s + batch_size]
                yield SimpleNamespace(parameters=self.data.parameters[i], observations={"x": self.data.observations["x"][i]})

    def loss(model, p, o, key):
        xj = o["x"] + 0.05 * jax.random.normal(key, o["x"].shape)
        return jnp.mean((jax.vmap(model)(xj) - p) ** 2)

    def evaluate(model, p, o):
        return jnp.mean((jax.vmap(model)(o["x"]) - p) ** 2)

    config = OptimizationConfig(learning_rate=1e-2, batch_size=32, num_epochs=4)
    out = {}
    for mode in ("memory", "stream"):
        for parallel in (False, True):
            data = (train, valid) if mode == "memory" else (StreamingData(Store(train)), StreamingData(Store(valid)))
            result = SBITrainer(config, progress=False, eval_chunk_size=40, data_parallel=parallel).fit(
                eqx.nn.MLP(3, 1, 16, 1, key=jax.random.key(0)), train_loss=loss, eval_loss=evaluate,
                train_data=data[0], validation_data=data[1])
            leaf = jax.tree.leaves(eqx.filter(result.model, eqx.is_inexact_array))[0]
            out[f"{mode}-{parallel}"] = {k: result.history[k] for k in ("train_loss", "validation_loss")} | {
                "weight_devices": len(leaf.sharding.device_set)}
    mesh = dp.data_parallel_mesh()
    batch = dp.put_global_batch(np.zeros((8, 3), np.float32), mesh)
    out["batch_shards"] = sorted(s.data.shape[0] for s in batch.addressable_shards)
    try:
        SBITrainer(OptimizationConfig(batch_size=31), progress=False, data_parallel=True).fit(
            eqx.nn.MLP(3, 1, 4, 1, key=jax.random.key(0)), train_loss=loss, eval_loss=evaluate,
            train_data=train, validation_data=valid)
    except ValueError as err:
        out["odd_batch_error"] = str(err)
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_data_parallel_loss_curve_matches_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    for mode in ("memory", "stream"):
        single, parallel = out[f"{mode}-False"], out[f"{mode}-True"]
        for key in ("train_loss", "validation_loss"):
            np.testing.assert_allclose(parallel[key], single[key], rtol=RTOL, atol=ATOL, err_msg=f"{mode} {key}")
        assert single["validation_loss"][-1] < single["validation_loss"][0]  # it trained
        assert single["weight_devices"] == 1 and parallel["weight_devices"] == 2  # replicated on both
    assert out["batch_shards"] == [4, 4]  # a batch of 8 is split 4 + 4
    assert "multiple of 2, got 31" in out["odd_batch_error"]


def test_resolve_mesh_options():
    from sbi_core.training import SBITrainer
    from sbi_core.training.data_parallel import resolve_mesh

    assert resolve_mesh(False) is None
    mesh = resolve_mesh(True)
    assert mesh.axis_names == ("data",) and mesh.devices.size >= 1
    assert resolve_mesh(mesh) is mesh
    import jax

    assert (resolve_mesh("auto") is None) == (jax.device_count() == 1)
    with pytest.raises(ValueError, match="data_parallel must be"):
        resolve_mesh("always")
    with pytest.raises(ValueError, match="data_parallel must be"):
        SBITrainer(progress=False, data_parallel="yes")
