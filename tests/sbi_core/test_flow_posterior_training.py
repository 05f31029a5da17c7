"""Training the conditional-flow posterior: loss goes down, regularisers, ELBO, streaming."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.dataset import open_store
from sbi_core.flow_posterior import ConditionalFlowPosterior
from sbi_core.posterior_base import PersistentPosteriorEstimator
from tests.sbi_core.posterior_helpers import blocks_of, gaussian_linear_store, toy_store

TINY = dict(embedding_dim=8, hidden_dim=16, num_coupling_layers=2, conditioner_depth=1, photometry_embedding_dim=8,
            spectrum_embedding_dim=8)


@pytest.fixture(scope="module")
def gl_store(tmp_path_factory):
    return gaussian_linear_store(tmp_path_factory.mktemp("gl") / "gl.zarr", n=500)


def test_training_reduces_validation_loss(gl_store):
    post = ConditionalFlowPosterior(parameter_dim=2, flow_family="affine", num_epochs=40, batch_size=32,
                                    learning_rate=3e-3, **TINY)
    artifacts = post.fit(gl_store)
    history = artifacts.history["validation_loss"]
    assert len(history) == 40 and min(history) < history[0] - 0.3
    assert artifacts.metadata["in_memory"] is True and artifacts.metadata["epochs_run"] == 40
    assert artifacts.validation_metrics["validation_loss"] == pytest.approx(min(history))
    assert artifacts.validation_metrics["gate_passed"] is True
    assert post.task_name == "gaussian_linear" and post.task_fingerprint and post.dataset_fingerprint
    assert post.parameter_names == ("theta_0", "theta_1") and post.preprocessing_metadata_payload
    # The posterior mean tracks the exact posterior mean (x / 2 for equal prior and noise variance).
    x = np.array([0.3, -0.2])
    from sbi_core.observation import ObservationBlock

    enc = post.encode_observation([ObservationBlock(name="x", modality="auxiliary", values=x)])
    draws = post.to_physical(post.sample_posterior(enc, 2000, seed=1)).samples
    assert np.all(np.abs(draws.mean(axis=0) - x / 2) < 0.1)
    assert np.all(np.abs(draws.std(axis=0) - math.sqrt(0.05)) < 0.08)
    # Arguments swapped (parameters first) is named, not a numpy conversion error.
    with pytest.raises(TypeError, match="encoded observation comes first"):
        post.log_prob(np.zeros(2), enc)


@pytest.mark.slow
def test_regularisers_noise_jitter_aux_and_plots(tmp_path):
    store = toy_store(tmp_path / "toy.zarr", n=200, with_spectrum=True)
    post = ConditionalFlowPosterior(
        parameter_dim=2, parameter_space="cube", flow_family="spline", num_epochs=3, batch_size=32, **TINY,
        embedding_noise_std=1.0, embedding_noise_min_scale=0.5, parameter_noise_floor=0.05,
        aux_scale_loss_weight=0.1, aux_parameter_loss_weight=0.1, spline_small_bin_regularization_weight=0.1,
        spline_entropy_regularization_weight=0.1, spline_derivative_regularization_weight=0.1,
        verbose_diagnostics=True, diagnostics_output_directory=str(tmp_path / "plots"), diagnostics_plot_interval=2,
    )
    artifacts = post.fit(store)
    assert all(math.isfinite(v) for v in artifacts.history["train_loss"])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["epoch_0002.png"]
    assert "cube_edge_hit_rate" in artifacts.history
    assert post.model.aux_head is not None
    post.save(str(tmp_path / "m"))
    loaded = PersistentPosteriorEstimator.load(str(tmp_path / "m"))
    enc = loaded.encode_observation(blocks_of(store))
    assert enc.metadata["modality_family"] == "multimodal"
    np.testing.assert_array_equal(loaded.sample_posterior(enc, 8).samples,
                                  post.sample_posterior(post.encode_observation(blocks_of(store)), 8).samples)


@pytest.mark.slow
def test_elbo_objective_trains_with_injected_likelihood(gl_store):
    from sbi_core.posterior_metadata import parameter_transform_from_payloads

    post = ConditionalFlowPosterior(parameter_dim=2, parameter_space="cube", training_objective="elbo",
                                    flow_family="affine", num_epochs=12, batch_size=32, learning_rate=3e-3, **TINY)
    transform = parameter_transform_from_payloads([{"kind": "normal", "loc": 0.0, "scale": math.sqrt(0.1)}] * 2)

    def log_likelihood(theta_cube, observations):
        theta = transform.transform(theta_cube, "cube", "physical")
        return jnp.sum(-0.5 * (observations.values["x"] - theta) ** 2 / 0.1, axis=-1)

    with pytest.raises(ValueError, match="elbo_log_likelihood_fn"):
        post.fit(gl_store)
    artifacts = post.fit(gl_store, elbo_log_likelihood_fn=log_likelihood, elbo_num_samples=2)
    history = artifacts.history["validation_loss"]
    assert all(math.isfinite(v) for v in history) and min(history) < history[0] - 0.3


@pytest.mark.slow
def test_streaming_path_when_the_split_does_not_fit(gl_store):
    store = open_store(gl_store.path, memory_budget_bytes=1)
    post = ConditionalFlowPosterior(parameter_dim=2, flow_family="affine", num_epochs=2, batch_size=64, **TINY)
    artifacts = post.fit(store)
    assert artifacts.metadata["in_memory"] is False
    assert all(math.isfinite(v) for v in artifacts.history["validation_loss"])


@pytest.mark.slow
def test_checkpoint_resume_through_the_posterior(gl_store, tmp_path):
    options = dict(parameter_dim=2, flow_family="affine", num_epochs=4, batch_size=64,
                   checkpoint_directory=str(tmp_path / "ckpt"), checkpoint_backend="equinox", **TINY)
    full = ConditionalFlowPosterior(**options).fit(gl_store)
    resumed = ConditionalFlowPosterior(**options, resume_from_checkpoint=True).fit(gl_store)
    assert resumed.metadata["resumed_from_epoch"] == 4
    assert resumed.validation_metrics["validation_loss"] == pytest.approx(full.validation_metrics["validation_loss"])
