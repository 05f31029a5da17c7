"""Item 6: numerical faults.

- A batch whose loss is non-finite (NaN or inf injected into one training sample) is skipped
  and counted; the weights stay finite and training goes on.
- When every batch is non-finite, training stops with ``TrainingDivergedError`` naming the
  limits, and the last good checkpoint is untouched and still resumes.
- A posterior with a single non-finite weight is never saved: ``save`` raises and the model
  already at the target stays as it was, with no temporary left behind.
- Extreme but valid observations (exo_transmission spectra at prior corners, noiseless and at
  both ends of the noise-factor range) give finite samples inside the prior support without
  clamping (``metadata['num_nonfinite'] == 0``; ``sample_posterior`` would otherwise clamp).
"""

from __future__ import annotations

import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.observation import ObservationBlock
from sbi_core.persistence import PosteriorSaveError, read_posterior_metadata
from sbi_core.posterior_base import POSTERIOR_METADATA_SCHEMA_VERSION
from sbi_core.training import InMemoryData, SBITrainer, TrainingDivergedError
from sbi_core.configs import CheckpointConfig, EarlyStoppingConfig
from tests.reliability import training_toy
from tests.reliability.models import untrained_posterior

EPOCHS = 4
# Counted in docs/reliability.md: poisoned samples, broken runs, non-finite weights, observations.
POISONS = {"nan_input": ("x", np.nan), "inf_input": ("x", np.inf), "inf_target": (None, np.inf)}


def poisoned(kind: str, index: int = 5) -> tuple[InMemoryData, InMemoryData]:
    train, validation = training_toy.data()
    field, value = POISONS[kind]
    params = np.array(train.parameters)
    x = np.array(train.observations["x"])
    if field == "x":
        x[index, 0] = value
    else:
        params[index, 0] = value
    return InMemoryData(params, {"x": x}), validation


def fit(train, validation, directory=None, resume=False, epochs=EPOCHS, callback=None, **limits):
    checkpoint = CheckpointConfig(str(directory), backend="equinox", resume=resume) if directory else None
    trainer = SBITrainer(training_toy.optimization(epochs), EarlyStoppingConfig(patience=None), checkpoint,
                         seed=7, progress=False, **limits)
    return trainer.fit(training_toy.model(), train_loss=training_toy.train_loss, eval_loss=training_toy.eval_loss,
                       train_data=train, validation_data=validation, epoch_callback=callback)


class Crash(Exception):
    pass


def crash_after(epoch_to_crash: int):
    def callback(epoch, metrics):
        if epoch == epoch_to_crash:
            raise Crash(epoch)
    return callback


def finite_weights(model) -> bool:
    return all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))


@pytest.mark.parametrize("kind", sorted(POISONS))
def test_nonfinite_batch_is_skipped_and_counted(kind):
    """One poisoned sample spoils exactly one batch per epoch (4 batches of 30, none dropped)."""
    result = fit(*poisoned(kind))
    assert result.skipped_nonfinite_steps == EPOCHS
    assert result.history["skipped_nonfinite_steps"] == [1.0] * EPOCHS
    assert np.isfinite(result.history["train_loss"]).all() and np.isfinite(result.history["validation_loss"]).all()
    assert finite_weights(result.model)
    clean = fit(*training_toy.data())
    assert clean.skipped_nonfinite_steps == 0


def test_persistent_nonfinite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    train, validation = training_toy.data()
    reference = fit(train, validation)
    with pytest.raises(Crash):
        fit(train, validation, directory=tmp_path, callback=crash_after(2))
    steps_before = sorted(p.name for p in tmp_path.iterdir())
    broken = InMemoryData(np.array(train.parameters), {"x": np.full_like(train.observations["x"], np.nan)})
    with pytest.raises(TrainingDivergedError) as info:
        fit(broken, validation, directory=tmp_path, resume=True)
    message = str(info.value)
    assert "training diverged in epoch 3: 4 of 4 steps had a non-finite loss" in message
    assert "max_consecutive_nonfinite_steps=25" in message and "last good checkpoint" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == steps_before  # nothing written for the bad epoch
    again = fit(train, validation, directory=tmp_path, resume=True)
    assert again.resumed_from_epoch == 2
    assert again.best_validation_loss == pytest.approx(reference.best_validation_loss, rel=1e-6)


def test_divergence_limit_on_consecutive_steps():
    """Every batch poisoned, the fraction limit switched off (1.0): the consecutive-step limit
    alone stops the run, and the error names it."""
    train, validation = training_toy.data()
    x = np.array(train.observations["x"])
    x[:, 0] = np.where(np.arange(len(x)) % 2 == 0, np.nan, x[:, 0])  # every batch poisoned
    with pytest.raises(TrainingDivergedError, match=r"max_consecutive_nonfinite_steps=1"):
        fit(InMemoryData(np.array(train.parameters), {"x": x}), validation, max_consecutive_nonfinite_steps=1,
            max_nonfinite_fraction=1.0)


# -- non-finite weights are never saved --------------------------------------------------------


@pytest.fixture(scope="module")
def posterior_and_old(saved_models):
    return saved_models["A_posterior"], saved_models["A"]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_model_with_a_nonfinite_weight_is_never_saved(tmp_path, posterior_and_old, value):
    posterior, old = posterior_and_old
    target = tmp_path / "model"
    shutil.copytree(old, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    params, static = eqx.partition(posterior.model, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    leaves[-1] = jnp.asarray(leaves[-1]).at[(0,) * jnp.ndim(leaves[-1])].set(value)  # one element
    bad_model = eqx.combine(jax.tree.unflatten(treedef, leaves), static)
    good_model = posterior.model
    try:
        posterior.model = bad_model
        with pytest.raises(PosteriorSaveError, match=r"refusing to save non-finite weights: 1 non-finite value"):
            posterior.save(str(target))
        with pytest.raises(PosteriorSaveError, match="non-finite"):
            posterior.save(str(tmp_path / "fresh"))
    finally:
        posterior.model = good_model
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    read_posterior_metadata(target, (POSTERIOR_METADATA_SCHEMA_VERSION,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary, no "fresh"


# -- extreme but valid observations ------------------------------------------------------------


def corner_observations(task, n_corners: int, seed: int = 0):
    """Blocks at prior corners (all-low, all-high, random corners) x noise (none, factor 0.5, 2.0)."""
    from sbi_core.simulators.exo_transmission import prism_noise_curve_ppm

    rng = np.random.default_rng(seed)
    lows = np.array([p.prior.support[0] for p in task.parameters])
    highs = np.array([p.prior.support[1] for p in task.parameters])
    picks = np.vstack([np.zeros(len(lows)), np.ones(len(lows)), rng.integers(0, 2, (n_corners - 2, len(lows)))])
    theta = np.where(picks > 0, highs, lows)
    depth = np.asarray(task.noiseless_spectrum(theta))
    phot = depth @ task.band_weights.T
    sigma = prism_noise_curve_ppm(task.wavelengths_um)
    phot_sigma = np.array([60.0, 30.0, 30.0, 60.0])
    out = []
    for i in range(len(theta)):
        for factor, noisy in ((1.0, False), (0.5, True), (2.0, True)):
            s_unc, p_unc = factor * sigma, factor * phot_sigma
            spec = depth[i] + (s_unc * rng.standard_normal(depth.shape[1]) if noisy else 0.0)
            ph = phot[i] + (p_unc * rng.standard_normal(4) if noisy else 0.0)
            out.append([ObservationBlock(name="spectrum", modality="spectrum", values=spec, uncertainties=s_unc),
                        ObservationBlock(name="photometry", modality="photometry", values=ph, uncertainties=p_unc)])
    return theta, out, lows, highs


def extreme_observation_check(posterior, task, n_corners: int) -> int:
    theta, observations, lows, highs = corner_observations(task, n_corners)
    assert np.isfinite(theta).all()
    for blocks in observations:
        encoded = posterior.encode_observation(blocks)
        assert np.isfinite(encoded.embedding).all()
        draws = posterior.sample_posterior(encoded, n_samples=64, seed=1)
        assert draws.metadata["num_nonfinite"] == 0
        assert np.isfinite(draws.log_probabilities).all()
        physical = posterior.to_physical(draws).samples
        assert np.isfinite(physical).all()
        assert (physical >= lows).all() and (physical <= highs).all()
    return len(observations)


@pytest.fixture(scope="module")
def exo_store(tmp_path_factory):
    from sbi_core.dataset import simulate_to_store
    from sbi_core.simulators import get_task

    task = get_task("exo_transmission")
    store = simulate_to_store(task, 96, tmp_path_factory.mktemp("exo") / "exo.zarr", seed=0, chunk_size=96, progress=False)
    return task, store


def test_extreme_observations_give_finite_samples(exo_store):
    task, store = exo_store
    posterior = untrained_posterior(store, embedding_dim=8, encoder_hidden_dim=16)
    assert extreme_observation_check(posterior, task, n_corners=6) == 18


@pytest.mark.slow
def test_extreme_observations_after_training(exo_store, tmp_path):
    from sbi_core.posterior import ConditionalFlowPosterior

    task, store = exo_store
    posterior = ConditionalFlowPosterior(parameter_dim=store.parameter_dim, flow_family="affine", embedding_dim=8,
                                         hidden_dim=16, num_coupling_layers=2, num_epochs=2, batch_size=32,
                                         early_stopping_patience=None)
    posterior.fit(store)
    posterior.save(str(tmp_path / "model"))
    loaded = ConditionalFlowPosterior.load(str(tmp_path / "model"))
    assert extreme_observation_check(loaded, task, n_corners=34) == 102
