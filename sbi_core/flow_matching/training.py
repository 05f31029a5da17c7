"""Training plumbing of the flow-matching posterior: its training data and the trainer call.

Data preparation is shared with the conditional-flow posterior (:mod:`sbi_core.posterior_data`):
when a split fits in memory it is read once, mapped to flow space, preprocessed and handed to
:class:`~sbi_core.training.SBITrainer` as ``InMemoryData`` (a whole epoch in one compiled
``lax.scan``); larger splits stream through the same ``prepare``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from sbi_core.configs import with_parameter_average
from sbi_core.posterior_data import build_data, make_prepare
from sbi_core.training import InMemoryData, SBITrainer, StreamingData

from .coordinates import flow_space_for


@dataclass(frozen=True)
class TrainingData:
    """Prepared train/validation sources and the flow-space training targets."""

    train: InMemoryData | StreamingData
    validation: InMemoryData | StreamingData
    targets: np.ndarray
    info: dict[str, Any]


def build_training_data(dataset: Any, transform: Any, parameter_space: str, preprocessor: Any) -> TrainingData:
    """Train/validation sources (in memory when they fit) and the flow-space training targets.

    The preparation is the conditional-flow posterior's (:mod:`sbi_core.posterior_data`), in the
    flow space of ``parameter_space`` (:func:`~.coordinates.flow_space_for`).
    """
    prepare = make_prepare(transform, flow_space_for(parameter_space), preprocessor)
    train, validation, targets, info = build_data(dataset, prepare)
    return TrainingData(train, validation, targets, info)


def run_training(posterior: Any, model: Any, data: TrainingData,
                 parameter_average_decay: float | None = None) -> tuple[Any, Any]:
    """Fit ``model`` with the posterior's config groups (plus the fit keyword
    ``parameter_average_decay``); return it and TrainingArtifacts."""
    from sbi_core.posterior_base import TrainingArtifacts

    repeats = int(posterior.validation_loss_repeats)
    eval_key = jax.random.PRNGKey(posterior.seed + 1)
    decay = parameter_average_decay
    optimization = with_parameter_average(posterior.optimization_config, decay)
    trainer = SBITrainer(optimization, posterior.early_stopping_config,
                         posterior.checkpoint_config, seed=posterior.seed, progress=posterior.progress)
    start = time.perf_counter()
    result = trainer.fit(
        model,
        train_loss=lambda m, theta, obs, key: m.loss(theta, obs, key),
        # A fixed key makes the stochastic FM loss comparable across epochs.
        eval_loss=lambda m, theta, obs: m.averaged_loss(theta, obs, eval_key, repeats),
        train_data=data.train,
        validation_data=data.validation,
    )
    elapsed = time.perf_counter() - start
    artifacts = TrainingArtifacts(
        history=dict(result.history),
        validation_metrics={"validation_loss": float(result.best_validation_loss)},
        metadata={"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                  "stopped_early": result.stopped_early, "resumed_from_epoch": result.resumed_from_epoch,
                  "skipped_nonfinite_steps": result.skipped_nonfinite_steps,
                  "steps_per_epoch": result.steps_per_epoch, "checkpoint_backend": result.checkpoint_backend,
                  "training_time_s": elapsed, "parameter_average_decay": decay, **data.info},
    )
    return result.model, artifacts
