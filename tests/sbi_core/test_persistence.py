"""Saved posterior directories: atomic writes, checksums, no pickle, schema version, dispatch."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.artifacts import ArtifactMetadata, ArtifactRegistry, ArtifactRegistryError
from sbi_core.metadata_checksum import seal_directory
from sbi_core.persistence import PosteriorLoadError, PosteriorSaveError
from sbi_core.posterior_base import (
    ESTIMATOR_CLASSES,
    POSTERIOR_METADATA_SCHEMA_VERSION,
    PersistentPosteriorEstimator,
    PosteriorSamples,
    TrainingArtifacts,
)


class TinyEstimator(PersistentPosteriorEstimator):
    """A minimal backend: one linear layer, saved as equinox leaves."""

    estimator_family = "tiny"

    def __init__(self, parameter_dim: int, width: int = 3, seed: int = 0, task_metadata=None):
        super().__init__(parameter_dim, "physical", seed, task_metadata)
        self.width = width
        self.model = eqx.nn.Linear(width, parameter_dim, key=jax.random.PRNGKey(seed))

    def _build_estimator_config(self):
        return {"parameter_dim": self.parameter_dim, "width": self.width, "seed": self.seed}

    @classmethod
    def from_serialized_metadata(cls, metadata):
        return cls(**metadata["estimator_config"])

    def save_backend_state(self, output_path: Path) -> None:
        eqx.tree_serialise_leaves(output_path / "weights.eqx", self.model)

    def load_backend_state(self, input_path: Path) -> None:
        self.model = eqx.tree_deserialise_leaves(input_path / "weights.eqx", self.model)

    def fit(self, dataset):  # pragma: no cover - not used
        raise NotImplementedError

    def encode_observation(self, blocks):  # pragma: no cover
        raise NotImplementedError

    def sample_posterior(self, observation, n_samples, seed=None):  # pragma: no cover
        raise NotImplementedError

    def log_prob(self, observation, parameters):  # pragma: no cover
        raise NotImplementedError


def _saved(tmp_path, **kwargs) -> tuple[TinyEstimator, Path]:
    est = TinyEstimator(2, **kwargs)
    est.training_artifacts = TrainingArtifacts({"validation_loss": [1.0, 0.5]}, {"validation_loss": 0.5}, {"best_epoch": 2})
    out = tmp_path / "model"
    est.save(str(out))
    return est, out


def test_round_trip_dispatches_on_saved_class(tmp_path):
    est, out = _saved(tmp_path, width=4, task_metadata={"note": "hi"})
    assert "TinyEstimator" in ESTIMATOR_CLASSES
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["schema_version"] == POSTERIOR_METADATA_SCHEMA_VERSION == "0.2.0"
    assert meta["estimator_class"] == "TinyEstimator" and meta["estimator_family"] == "tiny"
    assert set(meta["weights"]["files"]) == {"weights.eqx"}
    assert meta["library_versions"]["jax"] == jax.__version__
    assert meta["training_summary"]["final_validation_loss"] == 0.5
    loaded = PersistentPosteriorEstimator.load(str(out))
    assert isinstance(loaded, TinyEstimator) and loaded.width == 4
    assert loaded.task_metadata == {"note": "hi"}
    assert loaded.training_artifacts.validation_metrics == {"validation_loss": 0.5}
    np.testing.assert_array_equal(loaded.model.weight, est.model.weight)


def test_save_replaces_atomically_and_leaves_no_temporaries(tmp_path):
    _, out = _saved(tmp_path)
    est2 = TinyEstimator(2, seed=1)
    est2.save(str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    np.testing.assert_array_equal(PersistentPosteriorEstimator.load(str(out)).model.weight, est2.model.weight)


def test_failed_save_keeps_the_old_model(tmp_path):
    est, out = _saved(tmp_path)
    bad = TinyEstimator(2, seed=1)
    bad.save_backend_state = lambda path: (_ for _ in ()).throw(RuntimeError("disk full"))
    with pytest.raises(RuntimeError, match="disk full"):
        bad.save(str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    np.testing.assert_array_equal(PersistentPosteriorEstimator.load(str(out)).model.weight, est.model.weight)


def test_refuses_to_overwrite_foreign_directory(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(PosteriorSaveError, match="not a saved posterior"):
        TinyEstimator(2).save(str(tmp_path / "precious"))
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "x"


def test_refuses_non_finite_weights(tmp_path):
    est = TinyEstimator(2)
    est.model = eqx.tree_at(lambda m: m.weight, est.model, est.model.weight.at[0, 0].set(jnp.nan))
    from sbi_core.persistence import check_finite_tree

    est.save_backend_state = lambda path: (check_finite_tree(est.model, "TinyEstimator"),)
    with pytest.raises(PosteriorSaveError, match="non-finite"):
        est.save(str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def _write_meta(out: Path, meta: dict) -> None:
    """A deliberate edit: metadata.json rewritten *and* its sidecar resealed, so that the checks
    behind the sidecar (schema, paths, classes) are what the test exercises."""
    (out / "metadata.json").write_text(json.dumps(meta))
    seal_directory(out)


def test_unsealed_metadata_edit_is_refused(tmp_path):
    _, out = _saved(tmp_path)
    meta = json.loads((out / "metadata.json").read_text())
    meta["seed"] = 12345
    (out / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(PosteriorLoadError, match=r"metadata\.json: SHA-256 checksum mismatch \(metadata\.json\.sha256"):
        PersistentPosteriorEstimator.load(str(out))
    (out / "metadata.json.sha256").unlink()
    with pytest.raises(PosteriorLoadError, match=r"metadata\.json\.sha256: missing"):
        PersistentPosteriorEstimator.load(str(out))


def test_checksum_mismatch_names_file(tmp_path):
    _, out = _saved(tmp_path)
    data = bytearray((out / "weights.eqx").read_bytes())
    data[-1] ^= 0xFF
    (out / "weights.eqx").write_bytes(bytes(data))
    with pytest.raises(PosteriorLoadError, match=r"weights\.eqx: SHA-256 checksum mismatch"):
        PersistentPosteriorEstimator.load(str(out))


def test_schema_version_mismatch(tmp_path):
    _, out = _saved(tmp_path)
    meta = json.loads((out / "metadata.json").read_text())
    meta["schema_version"] = "9.0.0"
    _write_meta(out, meta)
    with pytest.raises(PosteriorLoadError, match="schema_version '9.0.0' is not supported"):
        PersistentPosteriorEstimator.load(str(out))


def test_refuses_paths_outside_and_pickles(tmp_path):
    _, out = _saved(tmp_path)
    meta = json.loads((out / "metadata.json").read_text())
    original = json.loads(json.dumps(meta))
    meta["weights"]["files"]["../evil.eqx"] = {"sha256": "0"}
    _write_meta(out, meta)
    with pytest.raises(PosteriorLoadError, match="outside the posterior directory"):
        PersistentPosteriorEstimator.load(str(out))
    _write_meta(out, original)
    (out / "extra.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(PosteriorLoadError, match="pickle"):
        PersistentPosteriorEstimator.load(str(out))


def test_missing_or_corrupt_metadata(tmp_path):
    with pytest.raises(PosteriorLoadError, match="no such posterior directory"):
        PersistentPosteriorEstimator.load(str(tmp_path / "nothing"))
    (tmp_path / "d").mkdir()
    with pytest.raises(PosteriorLoadError, match="metadata.json: missing"):
        PersistentPosteriorEstimator.load(str(tmp_path / "d"))
    (tmp_path / "d" / "metadata.json").write_text("{nope")
    with pytest.raises(PosteriorLoadError, match="not valid JSON"):
        PersistentPosteriorEstimator.load(str(tmp_path / "d"))


def test_unknown_class_and_wrong_subclass(tmp_path):
    _, out = _saved(tmp_path)
    meta = json.loads((out / "metadata.json").read_text())
    meta["estimator_class"], meta["estimator_module"] = "Nope", "os"
    _write_meta(out, meta)
    with pytest.raises(PosteriorLoadError, match="unknown estimator_class 'Nope'"):
        PersistentPosteriorEstimator.load(str(out))
    _, out2 = _saved(tmp_path / "b")
    from sbi_core.flow_posterior import ConditionalFlowPosterior

    with pytest.raises(PosteriorLoadError, match="not a ConditionalFlowPosterior"):
        ConditionalFlowPosterior.load(str(out2))


def test_registry_records_saved_artifacts(tmp_path):
    registry = ArtifactRegistry(tmp_path / "registry")
    est = TinyEstimator(2)
    est.save(str(tmp_path / "m1"), artifact_registry=registry, artifact_version="1.0.0")
    est.save(str(tmp_path / "m2"), artifact_registry=registry, artifact_version="1.1.0")
    latest = registry.latest("TinyEstimator")
    assert latest["version"] == "1.1.0" and latest["path"] == str((tmp_path / "m2").resolve())
    assert registry.get("TinyEstimator", "1.0.0")["estimator_family"] == "tiny"
    with pytest.raises(ArtifactRegistryError, match="known"):
        registry.get("TinyEstimator", "3.0.0")
    meta = est.build_artifact_metadata("2.0.0")
    assert ArtifactMetadata.from_payload(meta.to_payload()) == meta


def test_to_physical_identity_and_errors():
    est = TinyEstimator(2)
    draws = PosteriorSamples(np.zeros((3, 2)), metadata={"parameter_space": "physical"})
    assert est.to_physical(draws) is draws
    with pytest.raises(ValueError, match="no parameter priors"):
        est.to_physical(PosteriorSamples(np.zeros((3, 2)), metadata={"parameter_space": "cube"}))


def test_constructor_validation():
    with pytest.raises(ValueError, match="parameter_dim"):
        TinyEstimator(0)
    with pytest.raises(ValueError, match="parameter_space"):
        PersistentPosteriorEstimator.__init__(TinyEstimator(1), 1, "banana")
