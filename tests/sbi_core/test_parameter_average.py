"""The weight average (``OptimizationConfig.parameter_average_decay``): its transformation, the
trainer validating and returning the averaged weights, resume, and the fit keyword."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbi_core.configs import EarlyStoppingConfig, OptimizationConfig, with_parameter_average
from sbi_core.estimator_registry import EstimatorOptionsError, split_fit_options
from sbi_core.training import InMemoryData, SBITrainer, build_optimizer
from sbi_core.training.parameter_average import averaged_parameters, parameter_average


def test_average_follows_the_warmed_up_recursion_and_leaves_updates_alone():
    transform = parameter_average(0.9)
    params = {"w": jnp.asarray([1.0, 2.0])}
    state = transform.init(params)
    expected = np.array([1.0, 2.0])
    for t in range(1, 6):
        updates = {"w": jnp.asarray([0.5, -1.0])}
        out, state = transform.update(updates, state, params)
        np.testing.assert_array_equal(out["w"], updates["w"])  # identity on the updates
        params = optax.apply_updates(params, updates)
        rate = min(0.9, (1 + t) / (10 + t))
        expected = rate * expected + (1 - rate) * np.asarray(params["w"])
        np.testing.assert_allclose(state.average["w"], expected, rtol=1e-6)
    assert int(state.count) == 5
    with pytest.raises(ValueError, match="needs the parameters"):
        transform.update(updates, state)
    for bad in (0.0, 1.0, 1, "0.9"):
        with pytest.raises(ValueError, match="decay must be a float in"):
            parameter_average(bad)


def test_optimizer_chain_holds_the_average_only_when_asked():
    params = {"w": jnp.ones(3)}
    plain, _ = build_optimizer(OptimizationConfig(), 4)
    averaged, _ = build_optimizer(OptimizationConfig(parameter_average_decay=0.99), 4)
    assert averaged_parameters(plain.init(params), "raw") == "raw"
    np.testing.assert_array_equal(averaged_parameters(averaged.init(params), None)["w"], params["w"])
    with pytest.raises(ValueError, match="parameter_average_decay"):
        OptimizationConfig(parameter_average_decay=1.5)


class Scalar(eqx.Module):
    w: jax.Array


def _noisy_pull(model, parameters, observations, key):
    """Gradient noise around a minimum at w = 0.5: the raw weights jitter, their average does not."""
    return (model.w - 0.5 - 0.3 * jax.random.normal(key)) ** 2 + 0.0 * jnp.sum(parameters)


def _distance(model, parameters, observations):
    return (model.w - 0.5) ** 2 + 0.0 * jnp.sum(parameters)


def _fit(decay, num_epochs=30):
    data = InMemoryData(np.zeros((8, 1), np.float32), {"x": np.zeros((8, 1), np.float32)})
    config = OptimizationConfig(learning_rate=0.2, batch_size=1, num_epochs=num_epochs, gradient_clip_norm=None,
                                parameter_average_decay=decay)
    trainer = SBITrainer(config, EarlyStoppingConfig(patience=1000), progress=False, seed=3)
    return trainer.fit(Scalar(jnp.asarray(2.0)), train_loss=_noisy_pull, eval_loss=_distance,
                       train_data=data, validation_data=data)


def test_trainer_validates_and_returns_the_averaged_weights():
    raw, averaged = _fit(None), _fit(0.95)
    # Same steps, same noise: only the validated/returned weights differ.
    np.testing.assert_allclose(raw.history["train_loss"], averaged.history["train_loss"], rtol=1e-6)
    late_raw = np.asarray(raw.history["validation_loss"][10:])
    late_avg = np.asarray(averaged.history["validation_loss"][10:])
    assert np.mean(late_avg) < 0.5 * np.mean(late_raw)  # averaging removes most of the jitter
    returned = float(_distance(averaged.model, jnp.zeros(1), None))
    assert returned == pytest.approx(averaged.best_validation_loss, rel=1e-6)


def test_fit_keyword_and_config_option_are_validated():
    base = OptimizationConfig()
    assert with_parameter_average(base, None) is base
    assert with_parameter_average(base, 0.999).parameter_average_decay == 0.999
    assert dataclasses.replace(base, parameter_average_decay=None) == base
    for bad in (True, "0.9"):
        with pytest.raises(ValueError, match="parameter_average_decay"):
            with_parameter_average(base, bad)
    constructor, fit = split_fit_options({"learning_rate": 1e-3, "parameter_average_decay": 0.99})
    assert fit == {"parameter_average_decay": 0.99} and "parameter_average_decay" not in constructor
    with pytest.raises(EstimatorOptionsError, match="parameter_average_decay must be a number"):
        split_fit_options({"parameter_average_decay": 2})


def test_resume_continues_the_average(tmp_path):
    """The average lives in the optimiser state, so a resumed run matches an uninterrupted one."""
    from tests.sbi_core.test_training import (
        REGRESSION, SimulatedCrash, crash_after, resume_fit, resume_trainer)

    averaged = dataclasses.replace(REGRESSION, parameter_average_decay=0.9)
    reference = resume_fit(resume_trainer(tmp_path / "ref", "equinox", resume=False, optimization=averaged))
    with pytest.raises(SimulatedCrash):
        resume_fit(resume_trainer(tmp_path / "run", "equinox", resume=False, optimization=averaged), crash_after(3))
    resumed = resume_fit(resume_trainer(tmp_path / "run", "equinox", resume=True, optimization=averaged))
    assert resumed.resumed_from_epoch == 3
    np.testing.assert_allclose(resumed.history["validation_loss"], reference.history["validation_loss"], rtol=1e-6)
    # A checkpoint written without the average is not resumed with it (the signature differs).
    from sbi_core.checkpoints import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError):
        resume_fit(resume_trainer(tmp_path / "run", "equinox", resume=True))
