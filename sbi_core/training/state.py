"""The trainer's run state, its checkpoint (de)serialisation, and the result type."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import PRNGKeyArray

from sbi_core.training.early_stopping import EarlyStoppingState

PyTree = Any
_OPTIONAL_GROUPS = ("best_params", "fallback_params")


class TrainingDivergedError(RuntimeError):
    """Training produced non-finite losses, gradients or weights too often to continue."""


@dataclass
class TrainingResult:
    """What ``SBITrainer.fit`` returns.

    Attributes:
        model: The model with the selected (best) weights restored.
        history: Per-epoch lists: ``epoch``, ``train_loss``, ``validation_loss``,
            ``learning_rate`` (at the epoch's first step), ``epoch_time_s``,
            ``skipped_nonfinite_steps``, ``gate_passed`` (1.0/0.0) and every diagnostic key.
        best_epoch: The epoch (1-based) whose weights were restored.
        best_validation_loss: Its validation loss.
        stopped_early: Whether patience ended the run before ``num_epochs``.
        epochs_run: Epochs completed in this run, counting those before a resume.
        resumed_from_epoch: The checkpointed epoch the run resumed from, or None.
        skipped_nonfinite_steps: Optimiser steps skipped for non-finite loss/gradients/weights.
        gate_passed: False when no epoch passed ``checkpoint_gate`` and the best ungated epoch
            was returned instead.
        steps_per_epoch: Optimiser steps per epoch.
        checkpoint_backend: ``'orbax'``/``'equinox'``, or None without checkpointing.
    """

    model: Any
    history: dict[str, list[float]]
    best_epoch: int
    best_validation_loss: float
    stopped_early: bool
    epochs_run: int
    resumed_from_epoch: int | None
    skipped_nonfinite_steps: int
    gate_passed: bool = True
    steps_per_epoch: int = 0
    checkpoint_backend: str | None = None


@dataclass
class RunState:
    """Everything needed to continue a run exactly where it stopped.

    Attributes:
        params: Trainable weights in the layout of ``layout.split_model`` (one flat vector, or
            the ``eqx.partition`` pytree).
        opt_state: Optimiser state.
        key: PRNG key the next epoch splits from.
        epoch: Completed epochs.
        stopping: Early-stopping bookkeeping.
        best_params: Copy of the selected epoch's weights (None before any).
        fallback_params: Copy of the best ungated weights (kept only when a gate is used).
        consecutive_nonfinite: Length of the current run of skipped steps.
        skipped_total: Skipped steps so far.
        history: Per-epoch metric lists.
        stopped_early: Whether patience ended the run.
        finished: Whether the run is complete (a resume then only rebuilds the result).
    """

    params: PyTree
    opt_state: optax.OptState
    key: PRNGKeyArray
    epoch: int = 0
    stopping: EarlyStoppingState = field(default_factory=EarlyStoppingState)
    best_params: PyTree | None = None
    fallback_params: PyTree | None = None
    consecutive_nonfinite: int = 0
    skipped_total: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    stopped_early: bool = False
    finished: bool = False

    def checkpoint_groups(self) -> dict[str, PyTree]:
        """Array groups to save (optional weight copies only when present)."""
        groups = {
            "params": self.params,
            "opt_state": self.opt_state,
            "key": jax.random.key_data(self.key),
        }
        for name in _OPTIONAL_GROUPS:
            if getattr(self, name) is not None:
                groups[name] = getattr(self, name)
        return groups

    def checkpoint_metadata(self, signature: dict[str, Any]) -> dict[str, Any]:
        """JSON run state saved next to the arrays."""
        return {
            "epoch": self.epoch,
            "stopping": self.stopping.to_payload(),
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "skipped_total": self.skipped_total,
            "history": self.history,
            "stopped_early": self.stopped_early,
            "finished": self.finished,
            "signature": signature,
        }

    def templates(self) -> dict[str, PyTree]:
        """Restore targets: the structure of every group this state can save."""
        templates = {
            "params": self.params,
            "opt_state": self.opt_state,
            "key": jax.random.key_data(self.key),
        }
        return templates | {name: self.params for name in _OPTIONAL_GROUPS}

    @classmethod
    def from_checkpoint(cls, groups: dict[str, PyTree], metadata: dict[str, Any]) -> RunState:
        """Rebuild the run state from restored groups (host arrays go back to the device)."""
        on_device = {name: jax.device_put(tree) for name, tree in groups.items()}
        return cls(
            params=on_device["params"],
            opt_state=on_device["opt_state"],
            key=jax.random.wrap_key_data(jnp.asarray(groups["key"], dtype=jnp.uint32)),
            epoch=int(metadata["epoch"]),
            stopping=EarlyStoppingState.from_payload(metadata["stopping"]),
            best_params=on_device.get("best_params"),
            fallback_params=on_device.get("fallback_params"),
            consecutive_nonfinite=int(metadata["consecutive_nonfinite"]),
            skipped_total=int(metadata["skipped_total"]),
            history={k: [float(v) for v in vals] for k, vals in metadata["history"].items()},
            stopped_early=bool(metadata["stopped_early"]),
            finished=bool(metadata["finished"]),
        )

    def append_history(self, metrics: dict[str, float]) -> None:
        """Append one epoch's metrics; a key missing on either side is padded with NaN."""
        length = len(self.history.get("epoch", []))
        for name in set(self.history) | set(metrics):
            column = self.history.setdefault(name, [math.nan] * length)
            column.append(float(metrics.get(name, math.nan)))


def all_finite(tree: PyTree) -> bool:
    """Whether every inexact array leaf of ``tree`` is finite (host check)."""
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in leaves)
