"""A tiny training problem for the crash tests (module-level functions: kernels compile once).

The run is the real :class:`~sbi_core.training.SBITrainer` with real checkpoints; only the model
is small (a width-8 MLP on a 3-feature regression), so a killed subprocess costs seconds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.configs import CheckpointConfig, EarlyStoppingConfig, OptimizationConfig
from sbi_core.training import InMemoryData, SBITrainer

# Shared by every subprocess of a test session (and across sessions): compiled once.
CACHE = Path(os.environ.get("SBI_RELIABILITY_XLA_CACHE", Path(tempfile.gettempdir()) / "sbi-reliability-xla"))


def use_compilation_cache() -> None:
    """For the killed subprocesses only (it changes process-wide JAX settings)."""
    from sbi_core.training import enable_compilation_cache

    enable_compilation_cache(CACHE, min_compile_time_s=0.0)


def data(n: int = 160) -> tuple[InMemoryData, InMemoryData]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    cut = n * 3 // 4
    return InMemoryData(y[:cut], {"x": x[:cut]}), InMemoryData(y[cut:], {"x": x[cut:]})


def model(seed: int = 0) -> eqx.nn.MLP:
    return eqx.nn.MLP(3, 1, 8, 1, key=jax.random.key(seed))


def train_loss(model, parameters, observations, key):
    x = observations["x"] + 0.05 * jax.random.normal(key, observations["x"].shape)
    return jnp.mean((jax.vmap(model)(x) - parameters) ** 2)


def eval_loss(model, parameters, observations):
    return jnp.mean((jax.vmap(model)(observations["x"]) - parameters) ** 2)


def optimization(epochs: int) -> OptimizationConfig:
    return OptimizationConfig(learning_rate=1e-2, batch_size=30, num_epochs=epochs, use_cosine_schedule=True)


def fit(directory, *, backend: str, epochs: int, resume: bool, callback=None, checkpoints: bool = True):
    """Train the toy; checkpoints every epoch in ``directory`` (None/``checkpoints=False``: none)."""
    checkpoint = CheckpointConfig(str(directory), backend=backend, resume=resume) if checkpoints else None
    trainer = SBITrainer(optimization(epochs), EarlyStoppingConfig(patience=None), checkpoint, seed=7, progress=False)
    train, validation = data()
    return trainer.fit(model(), train_loss=train_loss, eval_loss=eval_loss, train_data=train,
                       validation_data=validation, epoch_callback=callback)
