"""Small real posteriors for the save/load tests, built without training (cheap on a busy CPU).

``untrained_posterior`` runs the first half of ``ConditionalFlowPosterior.fit`` (store metadata,
observation preprocessing, flow-space standardisation, model construction) and stops before the
optimiser: the result has randomly initialised weights but every piece ``save``/``load`` and
``sample_posterior`` touch is real.
"""

from __future__ import annotations

from typing import Any

from sbi_core.flow_training import build_data, make_prepare, standardization_from
from sbi_core.posterior import ConditionalFlowPosterior
from sbi_core.posterior_base import TrainingArtifacts
from sbi_core.preprocessing import ObservationPreprocessor

TINY = {"flow_family": "affine", "embedding_dim": 4, "hidden_dim": 8, "num_coupling_layers": 2,
        "photometry_embedding_dim": 4, "num_epochs": 1, "batch_size": 32}


def untrained_posterior(store: Any, seed: int = 0, **options: Any) -> ConditionalFlowPosterior:
    posterior = ConditionalFlowPosterior(parameter_dim=store.parameter_dim, seed=seed, **{**TINY, **options})
    posterior._cache_dataset_metadata(store)
    preprocessor = ObservationPreprocessor.fit(store, "train")
    posterior.preprocessing_metadata_payload = preprocessor.to_payload()
    posterior._preprocessor = preprocessor
    prepare = make_prepare(posterior.parameter_transform, posterior.flow_space, preprocessor)
    _, _, targets, _ = build_data(store, prepare)
    posterior._standardization = standardization_from(targets)
    posterior.model = posterior._build_model(posterior._encoding_schema())
    posterior.training_artifacts = TrainingArtifacts(
        history={"validation_loss": [1.0]}, validation_metrics={"validation_loss": 1.0}, metadata={"best_epoch": 1})
    return posterior
