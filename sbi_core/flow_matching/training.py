"""Training plumbing of the flow-matching posterior: data preparation and the trainer call.

When a split fits in memory it is read once, mapped to flow space, preprocessed and
handed to :class:`~sbi_core.training.SBITrainer` as ``InMemoryData`` (a whole epoch
in one compiled ``lax.scan``); larger splits stream through the same ``prepare``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np

from sbi_core.training import InMemoryData, SBITrainer, StreamingData

from .coordinates import flow_space_for


@dataclass(frozen=True)
class TrainingData:
    """Prepared train/validation sources and the flow-space training targets."""

    train: InMemoryData | StreamingData
    validation: InMemoryData | StreamingData
    targets: np.ndarray
    info: dict[str, Any]


def make_prepare(transform: Any, parameter_space: str, preprocessor: Any) -> Callable:
    """Raw ``(physical parameters, observations)`` -> ``(flow-space float32, preprocessed)``."""
    flow_space = flow_space_for(parameter_space)

    def prepare(parameters: np.ndarray, observations: Any) -> tuple[np.ndarray, Any]:
        x = np.asarray(parameters, np.float64)
        if flow_space != "physical":
            if transform is None:
                raise ValueError(
                    "the store has no parameter priors, so parameters cannot be mapped to "
                    f"{flow_space!r} space; use parameter_space='physical'"
                )
            x = np.asarray(transform.transform(x, "physical", flow_space), np.float64)
        obs = preprocessor.apply(observations) if preprocessor is not None else observations
        obs = jax.tree_util.tree_map(
            lambda a: np.asarray(a, np.float32) if np.issubdtype(np.asarray(a).dtype, np.floating)
            else np.asarray(a), obs)
        return x.astype(np.float32), obs

    return prepare


def build_training_data(dataset: Any, transform: Any, parameter_space: str, preprocessor: Any) -> TrainingData:
    """Train/validation sources (in memory when they fit) and the training targets."""
    prepare = make_prepare(transform, parameter_space, preprocessor)
    fits = getattr(dataset, "fits_in_memory", lambda split: True)
    if fits("train"):
        train = InMemoryData.from_store(dataset, "train", prepare)
        targets = np.asarray(train.parameters)
    else:
        train = StreamingData(dataset, "train", prepare)
        targets = np.concatenate([prepare(p, o)[0] for _, p, o in dataset.iter_chunks("train")])
    validation = (InMemoryData.from_store(dataset, "validation", prepare) if fits("validation")
                  else StreamingData(dataset, "validation", prepare))
    info = {"in_memory": isinstance(train, InMemoryData), "num_train": int(targets.shape[0])}
    return TrainingData(train, validation, targets, info)


def run_training(posterior: Any, model: Any, data: TrainingData) -> tuple[Any, Any]:
    """Fit ``model`` with the posterior's config groups; return it and TrainingArtifacts."""
    from sbi_core.posterior_base import TrainingArtifacts

    repeats = int(posterior.validation_loss_repeats)
    eval_key = jax.random.PRNGKey(posterior.seed + 1)
    trainer = SBITrainer(posterior.optimization_config, posterior.early_stopping_config,
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
                  "training_time_s": elapsed, **data.info},
    )
    return result.model, artifacts
