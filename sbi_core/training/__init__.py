"""Generic, compiled training for SBI models (see ``docs/contracts.md``, section "Training").

Public API::

    from sbi_core.training import (
        SBITrainer, TrainingResult, TrainingDivergedError,
        InMemoryData, StreamingData, build_optimizer, enable_compilation_cache,
    )
"""

from sbi_core.training.compilation import enable_compilation_cache
from sbi_core.training.data import InMemoryData, StreamingData
from sbi_core.training.early_stopping import EarlyStoppingState
from sbi_core.training.optimizer import build_optimizer, build_schedule, schedule_lengths
from sbi_core.training.state import TrainingDivergedError, TrainingResult
from sbi_core.training.steps import EvalFn, LossFn, StepCounters, train_epoch, train_step
from sbi_core.training.trainer import SBITrainer

__all__ = [
    "EarlyStoppingState",
    "EvalFn",
    "InMemoryData",
    "LossFn",
    "SBITrainer",
    "StepCounters",
    "StreamingData",
    "TrainingDivergedError",
    "TrainingResult",
    "build_optimizer",
    "enable_compilation_cache",
    "build_schedule",
    "schedule_lengths",
    "train_epoch",
    "train_step",
]
