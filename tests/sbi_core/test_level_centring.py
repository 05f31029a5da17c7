"""Level centring of spectrum blocks through the posteriors: the derived ``spectrum.level`` block
reaches the network only; save -> load is exact; version-1 preprocessing payloads still load and
behave as before (no centring); masks and observation-noise injection stay finite."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from sbi_core.compatibility import TaskCompatibilityError
from sbi_core.flow_losses import inject_observation_noise
from sbi_core.flow_matching_posterior import FlowMatchingPosterior
from sbi_core.flow_posterior import ConditionalFlowPosterior
from sbi_core.metadata_checksum import write_sidecar
from sbi_core.observation import ObservationBlock
from sbi_core.posterior_base import PersistentPosteriorEstimator
from tests.sbi_core.posterior_helpers import blocks_of, toy_store

CFP_TINY = dict(embedding_dim=8, hidden_dim=16, num_coupling_layers=2, conditioner_depth=1,
                photometry_embedding_dim=8, spectrum_embedding_dim=8, spectrum_encoder_type="mlp",
                num_epochs=2, batch_size=64)
FM_TINY = dict(embedding_dim=8, hidden_dim=16, num_velocity_layers=2, num_epochs=1, batch_size=64,
               progress=False, spectrum_embedding_dim=8, photometry_embedding_dim=8, spectrum_encoder_type="mlp")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return toy_store(tmp_path_factory.mktemp("centre") / "s.zarr", n=240, with_spectrum=True)


@pytest.fixture(scope="module")
def cfp(store):
    post = ConditionalFlowPosterior(parameter_dim=2, **CFP_TINY)
    post.fit(store)
    return post


def _samples(post, blocks, seed=3):
    enc = post.encode_observation(blocks)
    return enc.embedding, post.sample_posterior(enc, 16, seed=seed).samples


def test_fit_centres_spectra_and_the_net_sees_the_level_block(cfp):
    payload = cfp.preprocessing_metadata_payload
    assert payload["version"] == 2 and payload["center_blocks"] == ["spectrum"]
    assert cfp.model.embedding_net.block_names == ("x", "spectrum", "spectrum.level")
    # users still see the real blocks only
    assert [b.name for b in cfp._encoding_schema().blocks] == ["x", "spectrum"]
    assert [b["name"] for b in cfp.observation_schema["blocks"]] == ["x", "spectrum"]


def test_derived_block_is_invisible_to_users(cfp, store):
    blocks = blocks_of(store)
    enc = cfp.encode_observation(blocks)
    assert enc.metadata["block_names"] == ["x", "spectrum"]
    extra = ObservationBlock("spectrum.level", "auxiliary", np.array([1.0]))
    with pytest.raises(TaskCompatibilityError, match="unexpected block"):
        cfp.encode_observation(blocks + [extra])
    with pytest.raises(TaskCompatibilityError, match="missing block"):
        cfp.encode_observation([b for b in blocks if b.name != "spectrum"])


def test_masked_and_fully_masked_spectra_encode_finite(cfp, store):
    x, spec = blocks_of(store)
    part = np.ones(12, bool)
    part[[0, 5, 11]] = False
    values = np.where(part, spec.values, np.nan)
    partial = ObservationBlock("spectrum", "spectrum", values, uncertainties=spec.uncertainties, mask=part)
    none = ObservationBlock("spectrum", "spectrum", np.full(12, np.nan), uncertainties=spec.uncertainties,
                            mask=np.zeros(12, bool))
    encs = cfp.batch_encode_observation([[x, spec], [x, partial], [x, none]])
    for enc in encs:
        assert np.all(np.isfinite(enc.embedding))
        assert np.all(np.isfinite(cfp.sample_posterior(enc, 8, seed=0).samples))
    # a masked element's value does not matter (same batch shape: same compiled program)
    moved = ObservationBlock("spectrum", "spectrum", np.where(part, spec.values, 1e6),
                             uncertainties=spec.uncertainties, mask=part)
    np.testing.assert_array_equal(cfp.encode_observation([x, moved]).embedding,
                                  cfp.encode_observation([x, partial]).embedding)


def test_cfp_save_load_identical_samples(cfp, store, tmp_path):
    blocks = blocks_of(store)
    emb, draws = _samples(cfp, blocks)
    cfp.save(str(tmp_path / "m"))
    loaded = PersistentPosteriorEstimator.load(str(tmp_path / "m"))
    assert loaded._observation_preprocessor().center_blocks == ("spectrum",)
    emb2, draws2 = _samples(loaded, blocks)
    np.testing.assert_array_equal(emb2, emb)
    np.testing.assert_array_equal(draws2, draws)


def _rewrite_as_version1(directory):
    path = directory / "metadata.json"
    meta = json.loads(path.read_text())
    pre = meta["preprocessing"]
    assert pre["center_blocks"] == []
    meta["preprocessing"] = {k: v for k, v in pre.items() if k not in ("center_blocks", "levels")} | {"version": 1}
    data = json.dumps(meta, indent=2, sort_keys=True).encode()
    path.write_bytes(data)
    write_sidecar(directory, data)


def test_version1_payload_model_loads_uncentred_with_identical_samples(store, tmp_path):
    post = ConditionalFlowPosterior(parameter_dim=2, **CFP_TINY)
    post.fit(store, center_spectrum_levels=False)
    assert post.model.embedding_net.block_names == ("x", "spectrum")
    blocks = blocks_of(store)
    emb, draws = _samples(post, blocks)
    post.save(str(tmp_path / "old"))
    _rewrite_as_version1(tmp_path / "old")
    loaded = PersistentPosteriorEstimator.load(str(tmp_path / "old"))
    assert loaded.preprocessing_metadata_payload["version"] == 1
    assert loaded._observation_preprocessor().center_blocks == ()
    assert loaded.model.embedding_net.block_names == ("x", "spectrum")
    emb2, draws2 = _samples(loaded, blocks)
    np.testing.assert_array_equal(emb2, emb)
    np.testing.assert_array_equal(draws2, draws)


def test_flow_matching_centres_and_round_trips(store, tmp_path):
    post = FlowMatchingPosterior(2, **FM_TINY)
    post.fit(store)
    assert post.preprocessing_metadata_payload["center_blocks"] == ["spectrum"]
    assert post.model.embedding_net.block_names == ("x", "spectrum", "spectrum.level")
    blocks = blocks_of(store)
    emb, draws = _samples(post, blocks)
    post.save(str(tmp_path / "fm"))
    loaded = PersistentPosteriorEstimator.load(str(tmp_path / "fm"))
    emb2, draws2 = _samples(loaded, blocks)
    np.testing.assert_array_equal(emb2, emb)
    np.testing.assert_array_equal(draws2, draws)
    with pytest.raises(TaskCompatibilityError):
        loaded.encode_observation(blocks + [ObservationBlock("spectrum.level", "auxiliary", np.array([1.0]))])


def test_noise_injection_scales_the_level_by_its_standard_error(cfp, store):
    _, obs = store.read("train")
    pre = cfp._observation_preprocessor()
    out = jax.tree_util.tree_map(np.asarray, pre.apply(obs))
    typical = {n: float(np.median(u)) for n, u in out.uncertainties.items()}
    noisy = inject_observation_noise(out, jax.random.PRNGKey(0), 1.0, typical, 0.0)
    delta = np.asarray(noisy.values["spectrum.level"]) - out.values["spectrum.level"]
    sigma = out.uncertainties["spectrum.level"]
    # 0.05 per element over 12 elements: standard error 0.05 / sqrt(12), in level-std units
    np.testing.assert_allclose(sigma, 0.05 / np.sqrt(12) / pre.level_std["spectrum"], rtol=1e-5)
    assert 0.8 < np.std(delta / sigma) < 1.2
    assert all(np.all(np.isfinite(np.asarray(v))) for v in noisy.values.values())


def test_training_with_noise_injection_runs_finite(store):
    post = ConditionalFlowPosterior(parameter_dim=2, embedding_noise_std=1.0, **CFP_TINY)
    art = post.fit(store)
    assert np.all(np.isfinite(art.history["validation_loss"]))


def test_pyfunc_takes_only_the_real_blocks(cfp, store):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("mlflow")
    from flows.pyfunc_io import block_columns
    from flows.pyfunc_model import SbiPosteriorModel
    from sbi_core.posterior_metadata import observation_schema_from_payload

    columns = block_columns(observation_schema_from_payload(cfp.observation_schema))
    assert [c.name for c in columns] == ["x", "spectrum"]
    model = SbiPosteriorModel()
    model.posterior, model.columns = cfp, columns
    x, spec = blocks_of(store)
    frame = pd.DataFrame({"x": [list(x.values)], "spectrum": [list(spec.values)],
                          "spectrum_uncertainties": [list(spec.uncertainties)]})
    out = model.predict(None, frame, params={"num_samples": 8, "seed": 1})
    assert len(out) == 8 and np.all(np.isfinite(out[list(cfp.parameter_names)].to_numpy()))
