"""Best-epoch selection and the early-stopping counter (host side, JSON round-trippable)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from sbi_core.configs import EarlyStoppingConfig


@dataclass
class EarlyStoppingState:
    """What early stopping remembers between epochs.

    Two notions of "best" are kept on purpose. The *selected* epoch is the lowest validation loss
    among epochs that pass the checkpoint gate (posterior-stability thresholds): its weights are
    the ones returned. The *patience* counter follows the validation loss of every epoch, gated or
    not, so a run whose loss has plateaued stops even while the gate still fails; the best
    ungated epoch is kept as a fallback for a run in which no epoch ever passes the gate.

    Attributes:
        best_loss: Validation loss of the selected epoch (inf before any).
        best_epoch: The selected epoch (1-based), or None.
        fallback_loss: Lowest finite validation loss of any epoch.
        fallback_epoch: Its epoch, or None.
        monitor_loss: Reference loss for the patience counter (moves by at least ``min_delta``).
        epochs_without_improvement: Epochs since ``monitor_loss`` last improved.
    """

    best_loss: float = math.inf
    best_epoch: int | None = None
    fallback_loss: float = math.inf
    fallback_epoch: int | None = None
    monitor_loss: float = math.inf
    epochs_without_improvement: int = 0

    def update(
        self, epoch: int, validation_loss: float, eligible: bool, config: EarlyStoppingConfig
    ) -> tuple[bool, bool]:
        """Account for one finished epoch.

        Args:
            epoch: The epoch number (1-based).
            validation_loss: Its validation loss (a non-finite loss never counts as best).
            eligible: Whether the checkpoint gate accepted the epoch.
            config: Patience and ``min_delta``.

        Returns:
            ``(is_new_best, is_new_fallback)``: whether the epoch's weights must be kept as the
            selected best and/or as the ungated fallback.
        """
        finite = math.isfinite(validation_loss)
        if finite and validation_loss < self.monitor_loss - config.min_delta:
            self.monitor_loss = validation_loss
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        new_fallback = finite and validation_loss < self.fallback_loss
        if new_fallback:
            self.fallback_loss, self.fallback_epoch = validation_loss, epoch
        new_best = finite and eligible and validation_loss < self.best_loss
        if new_best:
            self.best_loss, self.best_epoch = validation_loss, epoch
        return new_best, new_fallback

    def should_stop(self, config: EarlyStoppingConfig) -> bool:
        """Whether patience is exhausted (never, when ``patience`` is None)."""
        return config.patience is not None and self.epochs_without_improvement >= config.patience

    def to_payload(self) -> dict[str, Any]:
        """JSON-friendly dict (infinities are written as JSON ``Infinity``)."""
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> EarlyStoppingState:
        """Inverse of ``to_payload``."""
        return cls(**payload)
