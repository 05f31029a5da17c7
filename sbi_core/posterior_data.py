"""Training data shared by the posterior families (conditional flow, flow matching).

One preparation for every estimator: raw ``(physical parameters, observations)`` rows become
flow-space float32 targets and preprocessed float32 observations. When a split fits in memory
it is read and prepared once and handed to :class:`sbi_core.training.SBITrainer` as
``InMemoryData`` (a whole epoch inside one compiled ``lax.scan``); larger splits stream
(``StreamingData``) with the same ``prepare`` applied per batch. The per-dimension
standardisation of the flow-space targets is fitted on the train split here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from sbi_core.spaces import transform_and_log_det_compiled
from sbi_core.training import InMemoryData, StreamingData

__all__ = ["make_prepare", "standardization_from", "build_data"]

_STD_FLOOR = 1e-6


def _float32_leaves(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda a: np.asarray(a, np.float32) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a),
        tree)


def make_prepare(transform: Any, flow_space: str, preprocessor: Any | None) -> Callable:
    """Raw ``(physical parameters, observations)`` -> ``(flow-space float32, observations)``.

    Args:
        transform: The store's ``ParameterTransform`` (None when the store has no priors).
        flow_space: ``'physical'`` or ``'unconstrained'``: the space the model learns in.
        preprocessor: Fitted ``ObservationPreprocessor``; ``None`` keeps raw observations
            (the ELBO objective preprocesses in-graph so its likelihood sees raw data).

    Raises:
        ValueError: (when called) ``flow_space`` is not physical but there is no transform.
    """

    def prepare(parameters: np.ndarray, observations: Any) -> tuple[np.ndarray, Any]:
        x = np.asarray(parameters, np.float64)
        if flow_space != "physical":
            if transform is None:
                raise ValueError(
                    "the store has no parameter priors, so parameters cannot be mapped to "
                    f"{flow_space!r} space; use parameter_space='physical'"
                )
            x = np.asarray(transform_and_log_det_compiled(transform, x, "physical", flow_space)[0], np.float64)
        obs = observations if preprocessor is None else preprocessor.apply(observations)
        return x.astype(np.float32), _float32_leaves(obs)

    return prepare


def standardization_from(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-dimension mean and std (floored) of flow-space training targets, as float tuples.

    Raises:
        ValueError: Any target row is non-finite (counting them).
    """
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{bad} training parameter row(s) are non-finite in flow space (outside the prior support?)")
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), _STD_FLOOR)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _streamed_flow_targets(dataset: Any, prepare: Callable) -> np.ndarray:
    parts = []
    for _, params, obs in dataset.iter_chunks("train"):
        parts.append(prepare(params, obs)[0])
    return np.concatenate(parts)


def build_data(dataset: Any, prepare: Callable) -> tuple[Any, Any, np.ndarray, dict[str, Any]]:
    """Train/validation data sources plus the flow-space training targets.

    Returns:
        ``(train_data, validation_data, train_targets, info)`` where ``info`` records the path
        taken (``in_memory``) and the split sizes (``num_train``, ``num_validation``).
    """
    fits = getattr(dataset, "fits_in_memory", lambda split: True)
    info: dict[str, Any] = {}
    if fits("train"):
        train = InMemoryData.from_store(dataset, "train", prepare)
        targets = np.asarray(train.parameters)
        info["in_memory"] = True
    else:
        train = StreamingData(dataset, "train", prepare)
        targets = _streamed_flow_targets(dataset, prepare)
        info["in_memory"] = False
    validation = (InMemoryData.from_store(dataset, "validation", prepare) if fits("validation")
                  else StreamingData(dataset, "validation", prepare))
    info["num_train"] = int(targets.shape[0])
    info["num_validation"] = (validation.num_samples if isinstance(validation, InMemoryData)
                              else len(dataset.split_indices("validation")))
    return train, validation, targets, info
