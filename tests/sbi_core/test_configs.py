"""Config groups: contract defaults, validation messages naming field/value/expected."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from sbi_core.configs import CheckpointConfig, EarlyStoppingConfig, OptimizationConfig


def test_defaults_follow_the_contract():
    opt = OptimizationConfig()
    assert (opt.learning_rate, opt.batch_size, opt.num_epochs) == (1e-3, 32, 5)
    assert (opt.weight_decay, opt.gradient_clip_norm, opt.use_cosine_schedule) == (0.0, 1.0, False)
    assert (opt.warmup_fraction, opt.warmup_epochs, opt.min_learning_rate) == (0.02, None, 1e-6)
    assert opt.lr_schedule_total_epochs is None and opt.schedule_total_epochs == 5.0
    assert EarlyStoppingConfig() == EarlyStoppingConfig(patience=None, min_delta=0.0)
    ckpt = CheckpointConfig()
    assert (ckpt.directory, ckpt.backend, ckpt.resume, ckpt.enabled) == (None, "auto", False, False)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        OptimizationConfig().learning_rate = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field", "expected"),
    [
        ({"learning_rate": 0.0}, "learning_rate", "(0, inf]"),
        ({"learning_rate": math.nan}, "learning_rate", "finite"),
        ({"learning_rate": True}, "learning_rate", "bool"),
        ({"batch_size": 0}, "batch_size", ">= 1"),
        ({"batch_size": 2.0}, "batch_size", "integer"),
        ({"num_epochs": -1}, "num_epochs", ">= 1"),
        ({"weight_decay": -0.1}, "weight_decay", "[0, inf]"),
        ({"gradient_clip_norm": 0.0}, "gradient_clip_norm", "(0, inf]"),
        ({"use_cosine_schedule": "yes"}, "use_cosine_schedule", "bool"),
        ({"warmup_fraction": 1.0}, "warmup_fraction", "[0, 1)"),
        ({"warmup_epochs": -1.0}, "warmup_epochs", "[0, inf]"),
        ({"min_learning_rate": 1.0}, "min_learning_rate", "[0, 0.001]"),
        ({"lr_schedule_total_epochs": 0}, "lr_schedule_total_epochs", "(0, inf]"),
    ],
)
def test_optimization_config_rejects_bad_values(kwargs, field, expected):
    with pytest.raises(ValueError) as err:
        OptimizationConfig(**kwargs)
    message = str(err.value)
    assert f"OptimizationConfig.{field}" in message
    assert expected in message
    assert repr(next(iter(kwargs.values()))) in message


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"patience": 0}, "patience"), ({"min_delta": -1e-3}, "min_delta")]
)
def test_early_stopping_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=f"EarlyStoppingConfig.{field}"):
        EarlyStoppingConfig(**kwargs)


def test_checkpoint_config_validation(tmp_path):
    with pytest.raises(ValueError, match=r"CheckpointConfig.backend must be one of .*'pickle'"):
        CheckpointConfig(directory=str(tmp_path), backend="pickle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resume=True needs a checkpoint directory"):
        CheckpointConfig(resume=True)
    with pytest.raises(ValueError, match="CheckpointConfig.directory"):
        CheckpointConfig(directory="  ")
    with pytest.raises(ValueError, match="CheckpointConfig.max_to_keep must be an integer >= 2"):
        CheckpointConfig(directory=str(tmp_path), max_to_keep=1)
    with pytest.raises(ValueError, match="CheckpointConfig.save_interval_epochs must be an integer >= 1"):
        CheckpointConfig(directory=str(tmp_path), save_interval_epochs=0)
    config = CheckpointConfig(directory=Path(tmp_path), backend="equinox", resume=True)
    assert config.directory == str(tmp_path) and config.enabled
