"""Every flow family x parameter space: save/load round trip, densities, shapes, compatibility.

Models are untrained (initialised) but carry a real store's schema, priors and preprocessing, so
these tests exercise inference and persistence without paying for training.
"""

from __future__ import annotations

import dataclasses
import json

import equinox as eqx
import jax
import numpy as np
import pytest

from sbi_core.compatibility import TaskCompatibilityError
from sbi_core.metadata_checksum import seal_directory
from sbi_core.persistence import PosteriorLoadError
from sbi_core.observation import ObservationBlock
from sbi_core.posterior import (
    ConditionalFlowPosterior,
    PersistentPosteriorEstimator,
    PosteriorSamples,
)
from sbi_core.preprocessing import ObservationPreprocessor
from tests.sbi_core.posterior_helpers import blocks_of, toy_store

FAMILIES = ["spline", "affine", "autoregressive", "neural_autoregressive"]
SPACES = ["physical", "cube", "unconstrained"]
TINY = dict(embedding_dim=8, hidden_dim=8, num_coupling_layers=2, conditioner_depth=1,
            photometry_embedding_dim=8, spectrum_embedding_dim=8)
NAF_FAST = dict(autoregressive_transform_units=4, neural_autoregressive_inverse_bisection_steps=40)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return toy_store(tmp_path_factory.mktemp("table") / "toy.zarr", n=120)


def _posterior(store, family: str, space: str) -> ConditionalFlowPosterior:
    extra = NAF_FAST if family == "neural_autoregressive" else {}
    post = ConditionalFlowPosterior(parameter_dim=2, parameter_space=space, flow_family=family, **TINY, **extra)
    # What fit() caches, without training: schema, priors, preprocessing.
    post._cache_dataset_metadata(store)
    post.preprocessing_metadata_payload = ObservationPreprocessor.fit(store, "train").to_payload()
    return post


def _cases():
    """Every family x space; the spline row and the unconstrained column run by default, the
    rest (same code paths, other compiled kernels) are marked slow."""
    for family in FAMILIES:
        for space in SPACES:
            fast = family == "spline" or space == "unconstrained"
            yield pytest.param(family, space, marks=() if fast else pytest.mark.slow, id=f"{family}-{space}")


@pytest.mark.parametrize(("family", "space"), list(_cases()))
def test_family_space_round_trip(store, tmp_path, family, space):
    post = _posterior(store, family, space)
    enc = post.encode_observation(blocks_of(store))
    assert enc.metadata["modality_family"] == "auxiliary"
    draws = post.sample_posterior(enc, 16, seed=3)
    assert isinstance(draws, PosteriorSamples)
    assert draws.samples.shape == (16, 2)
    assert draws.metadata["parameter_space"] == space and draws.metadata["num_nonfinite"] == 0
    if space == "cube":
        assert np.all((draws.samples > 0) & (draws.samples < 1))
    # log_prob agrees with the density returned alongside the draws (same space, exact Jacobians).
    lp = post.log_prob(enc, draws.samples)
    np.testing.assert_allclose(lp, draws.log_probabilities, rtol=1e-3, atol=2e-3)
    # to_physical carries the log-density with the exact Jacobian.
    physical = post.to_physical(draws)
    assert physical.metadata["parameter_space"] == "physical"
    if space != "physical":
        back = post.parameter_transform.transform(physical.samples, "physical", space)
        np.testing.assert_allclose(np.asarray(back), draws.samples, rtol=1e-3, atol=1e-3)
    # save -> load: identical samples and log-probs.
    post.save(str(tmp_path / "model"))
    loaded = PersistentPosteriorEstimator.load(str(tmp_path / "model"))
    assert type(loaded) is ConditionalFlowPosterior and loaded.effective_flow_family == family
    enc2 = loaded.encode_observation(blocks_of(store))
    np.testing.assert_array_equal(enc2.embedding, enc.embedding)
    again = loaded.sample_posterior(enc2, 16, seed=3)
    np.testing.assert_array_equal(again.samples, draws.samples)
    np.testing.assert_array_equal(loaded.log_prob(enc2, draws.samples), lp)


def test_batch_sampling_and_encoding(store):
    post = _posterior(store, "affine", "unconstrained")
    rows = [blocks_of(store, row=i) for i in range(3)]
    encoded = post.batch_encode_observation(rows)
    single = [post.encode_observation(r) for r in rows]
    np.testing.assert_allclose(np.stack([e.embedding for e in encoded]), np.stack([e.embedding for e in single]),
                               rtol=1e-5, atol=1e-6)
    out = post.batch_sample_posterior(np.stack([e.embedding for e in encoded]), 5, base_seed=1)
    assert out.shape == (3, 5, 2) and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, post.batch_sample_posterior(np.stack([e.embedding for e in encoded]), 5, base_seed=1))


def test_wrong_shapes_raise(store):
    post = _posterior(store, "affine", "cube")
    enc = post.encode_observation(blocks_of(store))
    with pytest.raises(ValueError, match=r"expected \(2,\) or \(N, 2\)"):
        post.log_prob(enc, np.zeros(3))
    with pytest.raises(ValueError, match="n_samples"):
        post.sample_posterior(enc, 0)
    with pytest.raises(ValueError, match="embeddings has shape"):
        post.batch_sample_posterior(np.zeros((2, 3)), 4)
    with pytest.raises(ValueError, match="embedding has shape"):
        post.sample_posterior(np.zeros(5), 4)
    assert post.log_prob(enc, np.array([1.5, 0.5])) == -np.inf  # one vector -> a float; outside the cube


def test_incompatible_observation_raises(store):
    post = _posterior(store, "affine", "physical")
    with pytest.raises(TaskCompatibilityError, match="length 3, expected 2"):
        post.encode_observation([ObservationBlock(name="x", modality="auxiliary", values=np.zeros(3))])
    with pytest.raises(TaskCompatibilityError, match="missing block"):
        post.encode_observation([ObservationBlock(name="y", modality="auxiliary", values=np.zeros(2))])
    with pytest.raises(TaskCompatibilityError, match="modality"):
        post.encode_observation([ObservationBlock(name="x", modality="photometry", values=np.zeros(2))])


def _perturbed_flow(post: ConditionalFlowPosterior) -> None:
    """Move the flow off its zero-initialised identity, so every transformer output matters."""
    flow = post.model.flow
    leaves, treedef = jax.tree_util.tree_flatten(flow)
    keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
    leaves = [leaf + 0.3 * jax.random.normal(k, leaf.shape) if eqx.is_inexact_array(leaf) else leaf
              for leaf, k in zip(leaves, keys)]
    post.model = eqx.tree_at(lambda m: m.flow, post.model, jax.tree_util.tree_unflatten(treedef, leaves))


def _rewrite_metadata(out, edit) -> None:
    meta = json.loads((out / "metadata.json").read_text())
    edit(meta)
    (out / "metadata.json").write_text(json.dumps(meta))
    seal_directory(out)


def test_neural_autoregressive_saved_before_the_transformer_offset_still_loads(store, tmp_path):
    """Models of the earlier layout (no offset ``d``, metadata without the marker) load unchanged."""
    post = _posterior(store, "neural_autoregressive", "unconstrained")
    old_layout = dataclasses.replace(post.configs.flow, neural_autoregressive_shift=False)
    post.configs = dataclasses.replace(post.configs, flow=old_layout)
    _perturbed_flow(post)
    enc = post.encode_observation(blocks_of(store))
    draws = post.sample_posterior(enc, 16, seed=3)
    lp = post.log_prob(enc, draws.samples)
    out = tmp_path / "model"
    post.save(str(out))
    _rewrite_metadata(out, lambda meta: meta["flow_posterior"].pop("neural_autoregressive_shift"))

    loaded = PersistentPosteriorEstimator.load(str(out))

    assert loaded.configs.flow.neural_autoregressive_shift is False
    enc2 = loaded.encode_observation(blocks_of(store))
    np.testing.assert_array_equal(loaded.sample_posterior(enc2, 16, seed=3).samples, draws.samples)
    np.testing.assert_array_equal(loaded.log_prob(enc2, draws.samples), lp)


def test_new_models_record_the_offset_and_a_bad_marker_is_refused(store, tmp_path):
    post = _posterior(store, "neural_autoregressive", "unconstrained")
    _perturbed_flow(post)
    out = tmp_path / "model"
    post.save(str(out))
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["flow_posterior"]["neural_autoregressive_shift"] is True
    assert PersistentPosteriorEstimator.load(str(out)).configs.flow.neural_autoregressive_shift is True

    _rewrite_metadata(out, lambda meta: meta["flow_posterior"].update(neural_autoregressive_shift="yes"))
    with pytest.raises(PosteriorLoadError, match="neural_autoregressive_shift must be a bool"):
        PersistentPosteriorEstimator.load(str(out))
