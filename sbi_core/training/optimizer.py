"""The one function that builds the training optimiser as an optax chain."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbi_core.configs import OptimizationConfig
from sbi_core.training.parameter_average import parameter_average



def schedule_lengths(config: OptimizationConfig, steps_per_epoch: int) -> tuple[int, int]:
    """Return ``(warmup_steps, total_steps)`` of the cosine schedule.

    Args:
        config: The optimisation config.
        steps_per_epoch: Optimiser steps in one epoch (>= 1).

    Returns:
        Warmup steps (``warmup_epochs`` when set, else ``warmup_fraction`` of the total) and the
        total scheduled steps (``lr_schedule_total_epochs`` or ``num_epochs`` epochs). The warmup
        is capped one step short of the total so the decay phase is never empty.
    """
    total = max(1, round(config.schedule_total_epochs * steps_per_epoch))
    if config.warmup_epochs is not None:
        warmup = round(config.warmup_epochs * steps_per_epoch)
    else:
        warmup = round(config.warmup_fraction * total)
    return min(warmup, total - 1), total


def build_schedule(config: OptimizationConfig, steps_per_epoch: int) -> optax.Schedule:
    """Return the learning-rate schedule as a function of the optimiser step count.

    Constant ``learning_rate`` unless ``use_cosine_schedule``; then a linear warmup from
    ``min_learning_rate`` to ``learning_rate`` followed by a cosine decay down to
    ``min_learning_rate`` at the end of the scheduled steps, constant afterwards.

    Args:
        config: The optimisation config.
        steps_per_epoch: Optimiser steps in one epoch (>= 1).

    Returns:
        An optax schedule (step -> learning rate).
    """
    if not config.use_cosine_schedule:
        return optax.constant_schedule(config.learning_rate)
    warmup, total = schedule_lengths(config, steps_per_epoch)
    # Warm up from the floor rather than from 0 so the very first step is not wasted.
    return optax.warmup_cosine_decay_schedule(
        init_value=config.min_learning_rate,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=total,
        end_value=config.min_learning_rate,
    )


def build_optimizer(
    config: OptimizationConfig, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Build the training optimiser: optional global-norm clipping, then AdamW, then (optionally)
    the weight average of ``parameter_average_decay``.

    Args:
        config: The optimisation config (learning rate, schedule, weight decay, clipping).
        steps_per_epoch: Optimiser steps in one epoch, used to express the schedule in steps.

    Returns:
        ``(optimizer, schedule)``: the optax chain and the learning-rate schedule it uses, so the
        trainer can record the rate of every epoch.

    Raises:
        ValueError: If ``steps_per_epoch`` is not a positive integer.

    References:
        Loshchilov & Hutter (2019), "Decoupled Weight Decay Regularization" (AdamW);
        Loshchilov & Hutter (2017), "SGDR" (cosine schedule).
    """
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(
            f"build_optimizer: steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}"
        )
    schedule = build_schedule(config, steps_per_epoch)
    transforms = []
    if config.gradient_clip_norm is not None:
        transforms.append(optax.clip_by_global_norm(config.gradient_clip_norm))
    transforms.append(optax.adamw(learning_rate=schedule, weight_decay=config.weight_decay))
    if config.parameter_average_decay is not None:
        # Last in the chain: it averages the weights after the final update.
        transforms.append(parameter_average(float(config.parameter_average_decay)))
    return optax.chain(*transforms), schedule


def learning_rates_at(schedule: optax.Schedule, steps: list[int]) -> list[float]:
    """Evaluate ``schedule`` at many steps in one compiled call (for the per-epoch history)."""
    values = jax.jit(jax.vmap(schedule))(jnp.asarray(steps, dtype=jnp.int32))
    # One host copy: iterating the device array would compile and run an ``unstack`` first.
    return [float(v) for v in np.asarray(values)]
