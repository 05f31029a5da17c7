"""Backend-agnostic posterior interfaces and the shared persistence layer.

:class:`PosteriorEstimator` is the abstract interface of every amortized posterior.
:class:`PersistentPosteriorEstimator` adds what every on-disk backend shares: the cached task,
observation-schema and preprocessing metadata, the parameter priors and spaces, the saved
posterior directory (``metadata.json`` + weights, schema :data:`POSTERIOR_METADATA_SCHEMA_VERSION`)
and :meth:`~PersistentPosteriorEstimator.load`, which dispatches on the estimator class recorded
in the metadata (``PersistentPosteriorEstimator.load(d)`` returns a ``FlowMatchingPosterior`` when
that is what was saved).

Converting samples to physical units: :meth:`PersistentPosteriorEstimator.to_physical` (the one
documented call; ``sample_posterior`` returns draws in the configured ``parameter_space``).
"""

from __future__ import annotations

import abc
import importlib
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sbi_core.artifacts import ArtifactMetadata, ArtifactRegistry
from sbi_core.batch import PosteriorBatch
from sbi_core.compatibility import TaskCompatibilityError
from sbi_core.observation import EncodedObservation, ObservationBlock, build_observation_block_batch
from sbi_core.persistence import PosteriorLoadError, read_posterior_metadata, to_jsonable, write_posterior_directory
from sbi_core.posterior_metadata import (
    coordinate_problems,
    dataset_metadata,
    observation_schema_from_payload,
    parameter_transform_from_payloads,
)
from sbi_core.spaces import transform_and_log_det_compiled

__all__ = [
    "POSTERIOR_METADATA_SCHEMA_VERSION",
    "PosteriorBatch",
    "PosteriorSamples",
    "TrainingArtifacts",
    "PosteriorEstimator",
    "PersistentPosteriorEstimator",
    "ESTIMATOR_CLASSES",
]

POSTERIOR_METADATA_SCHEMA_VERSION = "0.2.0"
PARAMETER_SPACES = ("physical", "cube", "unconstrained")

#: Every concrete persistent estimator class by name (filled by ``__init_subclass__``).
ESTIMATOR_CLASSES: dict[str, type[PersistentPosteriorEstimator]] = {}


@dataclass(frozen=True)
class PosteriorSamples:
    """Posterior samples and optional per-sample diagnostics.

    Attributes:
        samples: ``(n, P)`` draws in the space named by ``metadata["parameter_space"]``.
        log_probabilities: ``(n,)`` posterior log-density of each draw in that space, or None.
        weights: ``(n,)`` importance weights, or None (unweighted draws).
        metadata: ``parameter_space``, ``parameter_names``, ``num_nonfinite`` (draws that held a
            non-finite value before clamping), ``seed`` and backend details.
    """

    samples: Any
    log_probabilities: Any = None
    weights: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingArtifacts:
    """Structured outputs of a posterior training run.

    Attributes:
        history: Per-epoch lists (``train_loss``, ``validation_loss``, ``learning_rate``, ...).
        validation_metrics: Final metrics on the validation split.
        metadata: Trainer details (best epoch, epochs run, stopped early, wall time, ...).
    """

    history: Mapping[str, Any]
    validation_metrics: Mapping[str, Any]
    metadata: Mapping[str, Any]

    def to_payload(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return to_jsonable(
            {"history": dict(self.history), "validation_metrics": dict(self.validation_metrics),
             "metadata": dict(self.metadata)}
        )


class PosteriorEstimator(abc.ABC):
    """Backend-agnostic interface for amortized posterior models."""

    @abc.abstractmethod
    def fit(self, dataset: Any) -> TrainingArtifacts:
        """Train the posterior estimator on a simulation dataset."""

    @abc.abstractmethod
    def encode_observation(self, blocks: list[ObservationBlock]) -> EncodedObservation:
        """Encode a structured observation into the estimator input space."""

    @abc.abstractmethod
    def sample_posterior(
        self, observation: EncodedObservation, n_samples: int, seed: int | None = None
    ) -> PosteriorSamples:
        """Sample the amortized posterior for one encoded observation."""

    @abc.abstractmethod
    def log_prob(self, observation: EncodedObservation, parameters: Any) -> Any:
        """Evaluate posterior log-density when supported by the backend."""

    @abc.abstractmethod
    def save(self, output_directory: str) -> None:
        """Persist trained model weights and metadata."""

    @classmethod
    @abc.abstractmethod
    def load(cls, input_directory: str) -> PosteriorEstimator:
        """Restore a saved estimator from disk."""


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("sbi_core", "numpy", "jax", "jaxlib", "equinox", "optax"):
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except (ImportError, AttributeError):  # pragma: no cover - optional libraries
            continue
    return versions


class PersistentPosteriorEstimator(PosteriorEstimator):
    """Shared persistence helper for estimator backends with on-disk artifacts.

    Args:
        parameter_dim: Number of inferred parameters ``P`` (>= 1).
        parameter_space: ``'physical'``, ``'cube'`` or ``'unconstrained'``.
        seed: Base random seed (initialisation and default sampling seed).
        task_metadata: Optional user metadata persisted with the model (JSON-able).

    Subclasses implement :meth:`_build_estimator_config`, :meth:`from_serialized_metadata`,
    :meth:`save_backend_state` and :meth:`load_backend_state`; they are registered by class name
    so that :meth:`load` can rebuild whichever class was saved.
    """

    estimator_family: ClassVar[str] = "persistent_estimator"
    metadata_schema_version: ClassVar[str] = POSTERIOR_METADATA_SCHEMA_VERSION

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ESTIMATOR_CLASSES[cls.__name__] = cls

    def __init__(
        self,
        parameter_dim: int,
        parameter_space: str = "unconstrained",
        seed: int = 0,
        task_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(parameter_dim, bool) or not isinstance(parameter_dim, (int, np.integer)) or parameter_dim < 1:
            raise ValueError(f"parameter_dim must be an integer >= 1, got {parameter_dim!r}")
        if parameter_space not in PARAMETER_SPACES:
            raise ValueError(f"parameter_space must be one of {list(PARAMETER_SPACES)}, got {parameter_space!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if task_metadata is not None and not isinstance(task_metadata, Mapping):
            raise ValueError(f"task_metadata must be a mapping or None, got {type(task_metadata).__name__}")
        self.parameter_dim = int(parameter_dim)
        self.parameter_space = parameter_space
        self.seed = int(seed)
        self.task_metadata: dict[str, Any] = dict(task_metadata or {})
        self.training_artifacts: TrainingArtifacts | None = None
        self.task_name: str | None = None
        self.task_version: str | None = None
        self.task_fingerprint: str | None = None
        self.dataset_fingerprint: str | None = None
        self.observation_schema: Mapping[str, Any] = {}
        self.preprocessing_metadata_payload: Mapping[str, Any] = {}
        self.artifact_metadata: ArtifactMetadata | None = None
        self.parameter_names: tuple[str, ...] = tuple(f"theta_{i}" for i in range(self.parameter_dim))
        self.parameter_units: tuple[str, ...] = ("",) * self.parameter_dim
        self.parameter_priors: tuple[Mapping[str, Any], ...] = ()
        self._transform_cache: Any = None

    # ------------------------------------------------------------------ parameter spaces
    @property
    def parameter_transform(self) -> Any:
        """:class:`sbi_core.spaces.ParameterTransform` of the training priors (None if unknown)."""
        if self._transform_cache is None and self.parameter_priors:
            self._transform_cache = parameter_transform_from_payloads(self.parameter_priors)
        return self._transform_cache

    def _require_transform(self, what: str) -> Any:
        transform = self.parameter_transform
        if transform is None:
            raise ValueError(
                f"{what}: the posterior has no parameter priors (it was not trained on a store), so "
                f"{self.parameter_space!r} coordinates cannot be converted to physical units"
            )
        return transform

    def to_physical(self, samples: PosteriorSamples) -> PosteriorSamples:
        """Convert posterior samples to physical (prior) units.

        This is the one documented conversion: ``sample_posterior`` returns draws in the
        configured ``parameter_space``; ``to_physical`` maps them (and their log-densities, with
        the exact log-Jacobian) to physical units.

        Args:
            samples: Output of ``sample_posterior`` (any space named in its metadata).

        Returns:
            A new :class:`PosteriorSamples` with ``metadata["parameter_space"] == "physical"``.
        """
        space = str(samples.metadata.get("parameter_space", self.parameter_space))
        if space == "physical":
            return samples
        transform = self._require_transform("to_physical")
        x = np.asarray(samples.samples, dtype=np.float64)
        # One compiled call (eager dispatch per op was ~15% of one-observation sampling).
        y, log_det = transform_and_log_det_compiled(transform, x, space, "physical")
        log_q = None
        if samples.log_probabilities is not None:
            log_q = np.asarray(samples.log_probabilities) - np.asarray(log_det)
        return replace(
            samples,
            samples=np.asarray(y),
            log_probabilities=log_q,
            metadata={**samples.metadata, "parameter_space": "physical"},
        )

    # ------------------------------------------------------------------ dataset metadata
    def _cache_dataset_metadata(self, dataset: Any) -> None:
        """Cache task name/version/fingerprint, schema, parameter specs from a store reader."""
        info = dataset_metadata(dataset)
        for key in ("task_name", "task_version", "task_fingerprint", "dataset_fingerprint"):
            if info.get(key) is not None:
                setattr(self, key, info[key])
        if info.get("observation_schema"):
            self.observation_schema = info["observation_schema"]
        if info.get("parameter_names"):
            names = tuple(info["parameter_names"])
            if len(names) != self.parameter_dim:
                raise ValueError(
                    f"dataset has {len(names)} parameters {list(names)}, but the posterior was built "
                    f"with parameter_dim={self.parameter_dim}"
                )
            self.parameter_names = names
            self.parameter_units = tuple(info.get("parameter_units") or ("",) * len(names))
        if info.get("parameter_priors"):
            self.parameter_priors = tuple(info["parameter_priors"])
            self._transform_cache = None

    def _schema_object(self) -> Any:
        """The cached observation schema as an ``ObservationSchema``-like object (None if unset)."""
        return observation_schema_from_payload(self.observation_schema) if self.observation_schema else None

    def _stack_observations(self, blocks_list: Sequence[Sequence[ObservationBlock]], schema: Any = None) -> Any:
        """Stack observations into a numpy ``PreStackedObservations`` checked against the schema.

        Raises:
            TaskCompatibilityError: naming every block whose name, modality, length,
                uncertainties or coordinates differ from the saved observation schema.
        """
        schema = schema if schema is not None else self._schema_object()
        if schema is None:
            raise ValueError(f"{type(self).__name__}: no observation schema (train the posterior first)")
        for i, blocks in enumerate(blocks_list):
            problems = coordinate_problems(blocks, schema)
            if problems:
                raise TaskCompatibilityError(f"observation {i} against the model's observation schema", problems)
        return build_observation_block_batch(list(blocks_list), schema)

    def _observation_preprocessor(self) -> Any:
        """The fitted ``ObservationPreprocessor`` rebuilt from the cached payload (None if unset)."""
        if not self.preprocessing_metadata_payload:
            return None
        cached = getattr(self, "_preprocessor", None)
        if cached is None:
            from sbi_core.preprocessing import ObservationPreprocessor

            cached = ObservationPreprocessor.from_payload(self.preprocessing_metadata_payload)
            self._preprocessor = cached
        return cached

    # ------------------------------------------------------------------ abstract backend hooks
    @abc.abstractmethod
    def _build_estimator_config(self) -> dict[str, Any]:
        """Return backend-specific configuration for metadata persistence."""

    @classmethod
    @abc.abstractmethod
    def from_serialized_metadata(cls, metadata: Mapping[str, Any]) -> PersistentPosteriorEstimator:
        """Rebuild an estimator instance from persisted metadata only."""

    @abc.abstractmethod
    def save_backend_state(self, output_path: Path) -> None:
        """Persist backend-specific model state into the output directory."""

    @abc.abstractmethod
    def load_backend_state(self, input_path: Path) -> None:
        """Restore backend-specific model state from the input directory."""

    # ------------------------------------------------------------------ metadata
    @staticmethod
    def _load_training_artifacts(metadata: Mapping[str, Any]) -> TrainingArtifacts | None:
        payload = metadata.get("training_artifacts")
        if not isinstance(payload, Mapping):
            return None
        return TrainingArtifacts(
            history=dict(payload.get("history") or {}),
            validation_metrics=dict(payload.get("validation_metrics") or {}),
            metadata=dict(payload.get("metadata") or {}),
        )

    def hydrate_loaded_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Restore task, schema, preprocessing, parameters and training records from metadata."""
        task = metadata.get("task") or {}
        self.task_name = task.get("name")
        self.task_version = task.get("version")
        self.task_fingerprint = task.get("fingerprint")
        self.dataset_fingerprint = task.get("dataset_fingerprint")
        self.observation_schema = dict(metadata.get("observation_schema") or {})
        self.preprocessing_metadata_payload = dict(metadata.get("preprocessing") or {})
        self.task_metadata = dict(metadata.get("task_metadata") or {})
        params = metadata.get("parameters") or {}
        if params.get("names"):
            self.parameter_names = tuple(params["names"])
        if params.get("units"):
            self.parameter_units = tuple(params["units"])
        self.parameter_priors = tuple(params.get("priors") or ())
        self._transform_cache = None
        self.training_artifacts = self._load_training_artifacts(metadata)
        artifact = metadata.get("artifact")
        self.artifact_metadata = ArtifactMetadata.from_payload(artifact) if isinstance(artifact, Mapping) else None

    def _build_artifact_metadata_payload(self) -> dict[str, Any]:
        metrics = {}
        if self.training_artifacts is not None:
            metrics = {
                k: float(v) for k, v in self.training_artifacts.validation_metrics.items()
                if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)
            }
        return {
            "name": self.task_name or type(self).__name__,
            "estimator_family": self.estimator_family,
            "estimator_class": type(self).__name__,
            "parameter_names": self.parameter_names,
            "parameter_space": self.parameter_space,
            "task_name": self.task_name,
            "task_version": self.task_version,
            "task_fingerprint": self.task_fingerprint,
            "metrics": metrics,
        }

    def build_artifact_metadata(self, version: str) -> ArtifactMetadata:
        """Assemble registry metadata for the currently trained estimator."""
        return ArtifactMetadata(version=version, **self._build_artifact_metadata_payload())

    def _build_serialized_metadata(self, artifact_metadata: ArtifactMetadata) -> dict[str, Any]:
        artifacts = self.training_artifacts
        return {
            "schema_version": self.metadata_schema_version,
            "estimator_family": self.estimator_family,
            "estimator_class": type(self).__name__,
            "estimator_module": type(self).__module__,
            "estimator_config": self._build_estimator_config(),
            "parameters": {
                "dim": self.parameter_dim,
                "space": self.parameter_space,
                "names": list(self.parameter_names),
                "units": list(self.parameter_units),
                "priors": [dict(p) for p in self.parameter_priors],
            },
            "task": {
                "name": self.task_name,
                "version": self.task_version,
                "fingerprint": self.task_fingerprint,
                "dataset_fingerprint": self.dataset_fingerprint,
            },
            "task_metadata": dict(self.task_metadata),
            "observation_schema": dict(self.observation_schema),
            "preprocessing": dict(self.preprocessing_metadata_payload),
            "training_artifacts": None if artifacts is None else artifacts.to_payload(),
            "training_summary": _history_summary(artifacts),
            "validation_metrics": {} if artifacts is None else dict(artifacts.validation_metrics),
            "library_versions": _library_versions(),
            "artifact": artifact_metadata.to_payload(),
        }

    # ------------------------------------------------------------------ save / load
    def save(
        self,
        output_directory: str,
        artifact_registry: ArtifactRegistry | None = None,
        artifact_version: str = "0.1.0",
    ) -> None:
        """Persist model weights, metadata, and optional artifact registration.

        The directory is written atomically (see :mod:`sbi_core.persistence`): the target holds
        either the previous model or the new one, never a mixture.

        Args:
            output_directory: Target directory (created; replaced if it holds a saved posterior).
            artifact_registry: Optional registry in which to record the saved artifact.
            artifact_version: Version recorded in the artifact metadata.
        """
        artifact = self.build_artifact_metadata(artifact_version)
        metadata = self._build_serialized_metadata(artifact)
        write_posterior_directory(output_directory, metadata, self.save_backend_state)
        self.artifact_metadata = artifact
        if artifact_registry is not None:
            artifact_registry.register(artifact, output_directory)

    @classmethod
    def _resolve_saved_class(cls, metadata: Mapping[str, Any], where: Path) -> type[PersistentPosteriorEstimator]:
        name = metadata.get("estimator_class")
        module = metadata.get("estimator_module")
        if name not in ESTIMATOR_CLASSES and isinstance(module, str) and module.startswith("sbi_core."):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise PosteriorLoadError(f"{where}: cannot import estimator module {module!r} ({exc})") from None
        target = ESTIMATOR_CLASSES.get(name)
        if target is None:
            raise PosteriorLoadError(
                f"{where}: unknown estimator_class {name!r} (known: {sorted(ESTIMATOR_CLASSES)})"
            )
        if not issubclass(target, cls):
            raise PosteriorLoadError(f"{where}: holds a {name}, which is not a {cls.__name__}")
        return target

    @classmethod
    def load(cls, input_directory: str) -> PersistentPosteriorEstimator:
        """Restore a saved persistent estimator from disk.

        Verifies the schema version and every weight checksum, then rebuilds the class recorded
        in ``metadata.json`` (any registered subclass of ``cls``).

        Raises:
            PosteriorLoadError: naming the file and what is wrong with it.
        """
        path = Path(input_directory)
        metadata = read_posterior_metadata(path, (POSTERIOR_METADATA_SCHEMA_VERSION,))
        target = cls._resolve_saved_class(metadata, path / "metadata.json")
        instance = target.from_serialized_metadata(metadata)
        instance.hydrate_loaded_metadata(metadata)
        instance.load_backend_state(path)
        return instance


def _history_summary(artifacts: TrainingArtifacts | None) -> dict[str, Any]:
    if artifacts is None:
        return {}
    summary: dict[str, Any] = {k: v for k, v in artifacts.metadata.items() if np.ndim(v) == 0}
    for key, values in artifacts.history.items():
        if isinstance(values, (list, tuple)) and values:
            summary[f"final_{key}"] = values[-1]
    return summary
