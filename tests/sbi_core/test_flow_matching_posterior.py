"""FlowMatchingPosterior: reference API, persistence, density/sampling consistency, errors."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal

from sbi_core.dataset import open_store
from sbi_core.dataset.simulate import simulate_to_store
from sbi_core.flow_matching_posterior import FlowMatchingPosterior
from sbi_core.observation import ObservationBlock
from sbi_core.persistence import PosteriorSaveError
from sbi_core.posterior_base import PersistentPosteriorEstimator
from sbi_core.simulators.gaussian_linear import gaussian_linear

REFERENCE_SIGNATURE = [
    ("parameter_dim", inspect.Parameter.empty), ("embedding_dim", 128), ("hidden_dim", 128),
    ("num_velocity_layers", 3), ("learning_rate", 0.001), ("batch_size", 32), ("num_epochs", 5),
    ("parameter_space", "unconstrained"), ("integration_steps", 32),
    ("early_stopping_patience", None), ("early_stopping_min_delta", 0.0),
    ("checkpoint_directory", None), ("checkpoint_backend", "auto"),
    ("resume_from_checkpoint", False), ("seed", 0), ("task_metadata", None),
]
TINY = dict(embedding_dim=8, hidden_dim=16, num_velocity_layers=2, num_epochs=1, batch_size=64,
            progress=False, spectrum_embedding_dim=8, photometry_embedding_dim=8)
OBS = [ObservationBlock("x", "auxiliary", np.array([0.3, -0.2]))]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("fm") / "gl.zarr"
    simulate_to_store(gaussian_linear(dim=2), 300, path, progress=False)
    return open_store(path)


@pytest.fixture(scope="module")
def trained(store):
    posterior = FlowMatchingPosterior(2, **TINY)
    posterior.fit(store)
    return posterior


def test_signature_and_defaults_match_the_reference():
    params = list(inspect.signature(FlowMatchingPosterior.__init__).parameters.values())[1:]
    positional = [(p.name, p.default) for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == REFERENCE_SIGNATURE
    assert all(p.kind is p.KEYWORD_ONLY for p in params[len(REFERENCE_SIGNATURE):])
    assert FlowMatchingPosterior.estimator_family == "flow_matching"
    assert issubclass(FlowMatchingPosterior, PersistentPosteriorEstimator)
    posterior = FlowMatchingPosterior(3)
    assert posterior.integration_steps == 32 and posterior.num_velocity_layers == 3
    assert posterior.flow_matching_config.solver == "midpoint"
    assert posterior.model is None


def test_fit_records_history_and_metadata(trained):
    artifacts = trained.training_artifacts
    assert len(artifacts.history["train_loss"]) == 1
    assert np.isfinite(artifacts.validation_metrics["validation_loss"])
    assert trained.task_name == "gaussian_linear" and trained.parameter_names == ("theta_0", "theta_1")


def test_encode_and_sample_shapes(trained):
    enc = trained.encode_observation(OBS)
    assert enc.embedding.shape == (8,)
    draws = trained.sample_posterior(enc, 16, seed=3)
    assert draws.samples.shape == (16, 2) and draws.metadata["parameter_space"] == "unconstrained"
    assert draws.metadata["num_nonfinite"] == 0
    again = trained.sample_posterior(enc, 16, seed=3)
    np.testing.assert_array_equal(draws.samples, again.samples)
    physical = trained.to_physical(draws)
    assert physical.metadata["parameter_space"] == "physical"
    batch = trained.batch_encode_observation([OBS, [ObservationBlock("x", "auxiliary", np.zeros(2))]])
    np.testing.assert_allclose(batch[0].embedding, enc.embedding, rtol=1e-5, atol=1e-6)
    stacked = np.stack([b.embedding for b in batch])
    assert trained.batch_sample_posterior(stacked, 5, base_seed=1).shape == (2, 5, 2)


def test_log_prob_is_consistent_with_sampling(trained):
    enc = trained.encode_observation(OBS)
    draws = trained.sample_and_log_prob(enc, 8, seed=1)
    log_q = trained.log_prob(enc, draws.samples)
    # Same field, opposite integration directions: equal up to the midpoint rule's O(h^2).
    np.testing.assert_allclose(log_q, draws.log_probabilities, atol=2e-3)
    assert isinstance(trained.log_prob(enc, draws.samples[0]), float)
    # The physical-space density differs by the exact log-Jacobian.
    physical = trained.to_physical(draws)
    assert np.all(np.isfinite(physical.log_probabilities))


def test_save_load_round_trip(trained, tmp_path):
    enc = trained.encode_observation(OBS)
    trained.save(str(tmp_path / "model"))
    loaded = PersistentPosteriorEstimator.load(str(tmp_path / "model"))
    assert isinstance(loaded, FlowMatchingPosterior)
    enc2 = loaded.encode_observation(OBS)
    np.testing.assert_allclose(enc2.embedding, enc.embedding, rtol=1e-6)
    np.testing.assert_allclose(loaded.sample_posterior(enc2, 8, seed=2).samples,
                               trained.sample_posterior(enc, 8, seed=2).samples, rtol=1e-6)
    assert loaded._standardization == trained._standardization


def test_untrained_posterior_errors():
    posterior = FlowMatchingPosterior(2)
    with pytest.raises(RuntimeError, match="not trained"):
        posterior.encode_observation(OBS)
    with pytest.raises(PosteriorSaveError, match="not trained"):
        posterior.save_backend_state("/nonexistent")


def test_bad_inputs(trained):
    enc = trained.encode_observation(OBS)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        trained.sample_posterior(enc, 0)
    with pytest.raises(ValueError, match="parameters must have shape"):
        trained.log_prob(enc, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="embedding must have shape"):
        trained.sample_posterior(np.zeros(3), 4)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"solver": "euler"}, "unknown solver 'euler'; known solvers: adaptive, midpoint, rk4"),
     ({"integration_steps": -4}, "integration_steps must be a positive integer"),
     ({"integration_steps": 0}, "integration_steps must be a positive integer"),
     ({"divergence": "trace"}, "unknown divergence 'trace'"),
     ({"sigma_min": 1.5}, "sigma_min"), ({"time_prior_exponent": -1.0}, "time_prior_exponent"),
     ({"rtol": 0.0}, "rtol"), ({"parameter_space": "box"}, "parameter_space"),
     ({"learning_rate": -1.0}, "learning_rate"), ({"checkpoint_backend": "pickle"}, "backend"),
     ({"validation_loss_repeats": 0}, "validation_loss_repeats")],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlowMatchingPosterior(2, **kwargs)


def test_unknown_keyword_raises():
    with pytest.raises(TypeError):
        FlowMatchingPosterior(2, num_coupling_layers=3)


@pytest.mark.slow
def test_gaussian_linear_log_prob_and_solvers_match_exact_posterior(tmp_path):
    """Accuracy: log_prob within 0.15 nats (mean abs) of the exact posterior; solvers agree."""
    task = gaussian_linear(dim=2)
    store = simulate_to_store(task, 4000, tmp_path / "gl.zarr", progress=False)
    posterior = FlowMatchingPosterior(
        2, embedding_dim=16, hidden_dim=64, num_epochs=30, batch_size=128, learning_rate=3e-3,
        parameter_space="physical", use_cosine_schedule=True, progress=False)
    posterior.fit(store)
    x = np.array([0.3, -0.2])
    enc = posterior.encode_observation([ObservationBlock("x", "auxiliary", x)])
    mean, cov = task.exact_posterior(jnp.asarray(x))
    reference = np.asarray(mean + jnp.sqrt(cov[0, 0]) * jax.random.normal(jax.random.key(1), (200, 2)))
    error = posterior.log_prob(enc, reference) - np.asarray(multivariate_normal.logpdf(reference, mean, cov))
    assert np.mean(np.abs(error)) < 0.15
    draws = {}
    for solver in ("midpoint", "rk4", "adaptive"):
        posterior.flow_matching_config = type(posterior.flow_matching_config)(
            **{**posterior.flow_matching_config.__dict__, "solver": solver})
        draws[solver] = posterior.sample_posterior(enc, 2000, seed=0).samples
    for solver, samples in draws.items():
        assert np.abs(samples.mean(0) - np.asarray(mean)).max() < 0.03, solver
        assert np.abs(samples.std(0) - float(jnp.sqrt(cov[0, 0]))).max() < 0.03, solver
        assert np.abs(samples - draws["adaptive"]).max() < 0.05, solver


@pytest.mark.slow
def test_checkpoint_resume_through_the_shared_trainer(store, tmp_path):
    # The trainer resumes only a run with identical settings (an interrupted one); resuming a
    # finished run restores its state and weights without training further.
    options = {**TINY, "num_epochs": 2, "checkpoint_directory": str(tmp_path / "ckpt"),
               "checkpoint_backend": "equinox"}
    first = FlowMatchingPosterior(2, **options)
    first.fit(store)
    resumed = FlowMatchingPosterior(2, **{**options, "resume_from_checkpoint": True})
    artifacts = resumed.fit(store)
    assert artifacts.metadata["resumed_from_epoch"] == 2
    assert len(artifacts.history["train_loss"]) == 2
    enc = first.encode_observation(OBS)
    np.testing.assert_allclose(resumed.sample_posterior(enc, 4).samples, first.sample_posterior(enc, 4).samples,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("space", ["cube", "physical"])
def test_other_parameter_spaces_and_hutchinson(store, space):
    posterior = FlowMatchingPosterior(2, parameter_space=space, divergence="hutchinson",
                                      num_hutchinson_probes=64, solver="rk4", integration_steps=8, **TINY)
    posterior.fit(store)
    enc = posterior.encode_observation(OBS)
    draws = posterior.sample_and_log_prob(enc, 6, seed=0)
    assert draws.metadata["parameter_space"] == space
    if space == "cube":
        assert np.all((draws.samples > 0) & (draws.samples < 1))
        assert posterior.log_prob(enc, np.array([1.5, 0.5])) == -np.inf
    exact = FlowMatchingPosterior(2, parameter_space=space, solver="rk4", integration_steps=8, **TINY)
    exact.model, exact._standardization = posterior.model, posterior._standardization
    exact.preprocessing_metadata_payload = posterior.preprocessing_metadata_payload
    exact.observation_schema = posterior.observation_schema
    # 64 Rademacher probes: close to the exact-divergence density of the same model.
    np.testing.assert_allclose(posterior.log_prob(enc, draws.samples), exact.log_prob(enc, draws.samples), atol=0.1)


def test_fit_with_a_weight_average_records_it_and_samples(store):
    posterior = FlowMatchingPosterior(2, **TINY)
    artifacts = posterior.fit(store, parameter_average_decay=0.9)
    assert artifacts.metadata["parameter_average_decay"] == 0.9
    samples = posterior.sample_posterior(posterior.encode_observation(OBS), 50, seed=0)
    assert np.all(np.isfinite(np.asarray(samples.samples)))
    with pytest.raises(ValueError, match="parameter_average_decay"):
        FlowMatchingPosterior(2, **TINY).fit(store, parameter_average_decay=1.5)
