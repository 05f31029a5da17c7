"""Frozen, validated configuration groups for training.

The wide posterior constructors of the seed API are façades: they route their keyword arguments
into these small dataclasses, grouped by concern (optimisation, early stopping, checkpointing).
Every field is checked in ``__post_init__`` so a bad value fails at construction with a
``ValueError`` that names the field, the value and what is allowed, long before any compilation.

Other config groups (flows, encoders, regularisation) live next to the code they configure and can
reuse the ``check_*`` helpers below.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

CheckpointBackendName = Literal["auto", "orbax", "equinox"]
CHECKPOINT_BACKENDS: tuple[str, ...] = ("auto", "orbax", "equinox")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_real(value: Any) -> bool:
    # bool is an int subclass; True as a learning rate is almost certainly a mistake.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(group: str, name: str, value: Any, *, minimum: int = 1) -> None:
    """Raise unless ``value`` is an integer ``>= minimum``.

    Args:
        group: Config class name, used in the message.
        name: Field name, used in the message.
        value: The value to check.
        minimum: Smallest allowed value.

    Raises:
        ValueError: Naming the field, the value and the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{group}.{name} must be an integer >= {minimum}, got {_describe(value)}"
        )


def check_real(
    group: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise unless ``value`` is a finite real number inside the given interval.

    Args:
        group: Config class name, used in the message.
        name: Field name, used in the message.
        value: The value to check.
        low: Lower bound (None = unbounded).
        high: Upper bound (None = unbounded).
        low_inclusive: Whether ``low`` itself is allowed.
        high_inclusive: Whether ``high`` itself is allowed.

    Raises:
        ValueError: Naming the field, the value and the allowed interval.
    """
    left = "-inf" if low is None else f"{low:g}"
    right = "inf" if high is None else f"{high:g}"
    interval = f"{'[' if low_inclusive else '('}{left}, {right}{']' if high_inclusive else ')'}"
    ok = _is_real(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        raise ValueError(
            f"{group}.{name} must be a finite number in {interval}, got {_describe(value)}"
        )


@dataclass(frozen=True)
class OptimizationConfig:
    """Optimiser, schedule and epoch budget (optax AdamW, optional clipping and cosine schedule).

    Attributes:
        learning_rate: Peak learning rate (> 0).
        batch_size: Simulations per optimisation step (>= 1).
        num_epochs: Maximum number of passes over the training split (>= 1).
        weight_decay: Decoupled AdamW weight decay (>= 0).
        gradient_clip_norm: Global-norm clipping threshold (> 0), or None for no clipping.
        use_cosine_schedule: Cosine decay with linear warmup instead of a constant rate.
        warmup_fraction: Warmup length as a fraction of the scheduled steps, in [0, 1).
        warmup_epochs: Warmup length in epochs (>= 0); overrides ``warmup_fraction`` when set.
        min_learning_rate: Floor of the cosine schedule and start of the warmup, in
            [0, learning_rate].
        lr_schedule_total_epochs: Epochs the cosine decay spans (> 0); None = ``num_epochs``.
        parameter_average_decay: Decay in (0, 1) of an exponential moving average of the weights
            that is validated, selected and returned instead of the raw weights
            (``training/parameter_average.py``); None (default) trains and returns the raw weights.
    """

    learning_rate: float = 1e-3
    batch_size: int = 32
    num_epochs: int = 5
    weight_decay: float = 0.0
    gradient_clip_norm: float | None = 1.0
    use_cosine_schedule: bool = False
    warmup_fraction: float = 0.02
    warmup_epochs: float | None = None
    min_learning_rate: float = 1e-6
    lr_schedule_total_epochs: float | None = None
    parameter_average_decay: float | None = None

    def __post_init__(self) -> None:
        group = type(self).__name__
        check_real(group, "learning_rate", self.learning_rate, low=0.0, low_inclusive=False)
        check_positive_int(group, "batch_size", self.batch_size)
        check_positive_int(group, "num_epochs", self.num_epochs)
        check_real(group, "weight_decay", self.weight_decay, low=0.0)
        if self.gradient_clip_norm is not None:
            check_real(
                group, "gradient_clip_norm", self.gradient_clip_norm, low=0.0, low_inclusive=False
            )
        if not isinstance(self.use_cosine_schedule, bool):
            raise ValueError(
                f"{group}.use_cosine_schedule must be a bool, got {_describe(self.use_cosine_schedule)}"
            )
        check_real(group, "warmup_fraction", self.warmup_fraction, low=0.0, high=1.0,
                   high_inclusive=False)
        if self.warmup_epochs is not None:
            check_real(group, "warmup_epochs", self.warmup_epochs, low=0.0)
        check_real(group, "min_learning_rate", self.min_learning_rate, low=0.0,
                   high=float(self.learning_rate))
        if self.lr_schedule_total_epochs is not None:
            check_real(group, "lr_schedule_total_epochs", self.lr_schedule_total_epochs,
                       low=0.0, low_inclusive=False)
        if self.parameter_average_decay is not None:
            check_real(group, "parameter_average_decay", self.parameter_average_decay, low=0.0,
                       high=1.0, low_inclusive=False, high_inclusive=False)

    @property
    def schedule_total_epochs(self) -> float:
        """Epochs the learning-rate schedule spans (``lr_schedule_total_epochs`` or ``num_epochs``)."""
        if self.lr_schedule_total_epochs is None:
            return float(self.num_epochs)
        return float(self.lr_schedule_total_epochs)


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Early stopping on the validation loss.

    Attributes:
        patience: Epochs without an improvement larger than ``min_delta`` tolerated before
            stopping (>= 1), or None to always run ``num_epochs``. The best weights are restored
            either way.
        min_delta: Minimum decrease of the validation loss that counts as an improvement (>= 0).
    """

    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        group = type(self).__name__
        if self.patience is not None:
            check_positive_int(group, "patience", self.patience)
        check_real(group, "min_delta", self.min_delta, low=0.0)


@dataclass(frozen=True)
class CheckpointConfig:
    """Resumable trainer checkpoints.

    Attributes:
        directory: Where checkpoints are written, or None to disable checkpointing.
        backend: ``'auto'`` (Orbax when importable, else Equinox serialisation), ``'orbax'`` or
            ``'equinox'``.
        resume: Continue from the latest good checkpoint in ``directory`` when one exists.
        max_to_keep: Committed checkpoints kept on disk (>= 2, so the previous good one survives
            while the next is written).
        save_interval_epochs: Save every this many epochs (>= 1); the final epoch is always
            saved. Larger values trade resume granularity for less I/O on very fast epochs.
    """

    directory: str | None = None
    backend: CheckpointBackendName = "auto"
    resume: bool = False
    max_to_keep: int = 2
    save_interval_epochs: int = 1

    def __post_init__(self) -> None:
        group = type(self).__name__
        if isinstance(self.directory, os.PathLike):
            # Accept pathlib.Path for convenience but store a plain string (JSON-friendly).
            object.__setattr__(self, "directory", os.fspath(self.directory))
        if self.directory is not None and (
            not isinstance(self.directory, str) or not self.directory.strip()
        ):
            raise ValueError(
                f"{group}.directory must be a non-empty path string or None, "
                f"got {_describe(self.directory)}"
            )
        if self.backend not in CHECKPOINT_BACKENDS:
            raise ValueError(
                f"{group}.backend must be one of {CHECKPOINT_BACKENDS}, got {_describe(self.backend)}"
            )
        if not isinstance(self.resume, bool):
            raise ValueError(f"{group}.resume must be a bool, got {_describe(self.resume)}")
        check_positive_int(group, "max_to_keep", self.max_to_keep, minimum=2)
        check_positive_int(group, "save_interval_epochs", self.save_interval_epochs)
        if self.resume and self.directory is None:
            raise ValueError(
                f"{group}.resume=True needs a checkpoint directory, got directory=None"
            )

    @property
    def enabled(self) -> bool:
        """Whether checkpoints are written at all."""
        return self.directory is not None


def with_parameter_average(config: OptimizationConfig, decay: float | None) -> OptimizationConfig:
    """``config`` with ``parameter_average_decay=decay`` (validated; ``None`` leaves it as it is).

    ``fit(..., parameter_average_decay=...)`` of the posteriors goes through here: the option is a
    fit keyword because the constructors' signatures are the reference's.
    """
    if decay is None:
        return config
    if isinstance(decay, bool) or not isinstance(decay, (int, float)):
        raise ValueError(f"parameter_average_decay must be a float in (0, 1) or None, got {decay!r}")
    return dataclasses.replace(config, parameter_average_decay=float(decay))
