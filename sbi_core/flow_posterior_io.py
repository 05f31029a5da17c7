"""Inference and persistence methods of :class:`~sbi_core.flow_posterior.ConditionalFlowPosterior`.

Split out of ``flow_posterior.py`` to keep modules small. Every jitted kernel is a module-level
``eqx.filter_jit`` function: it compiles once per model structure and shape and is shared by all
instances, so a loaded model samples without recompiling and repeated calls never recompile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.flow_losses import PosteriorModel, from_flow_draws, to_flow_space
from sbi_core.observation import EncodedObservation, ObservationBlock, ObservationModality
from sbi_core.persistence import PosteriorLoadError, check_finite_tree
from sbi_core.posterior_base import PosteriorSamples
from sbi_core.posterior_metadata import BlockSpecView, SchemaView

__all__ = ["FlowPosteriorIOMixin", "CLAMP_VALUE", "WEIGHTS_FILE"]

#: Non-finite draws are replaced by +-CLAMP_VALUE (NaN -> +CLAMP_VALUE) and counted.
CLAMP_VALUE = 1e30
WEIGHTS_FILE = "weights.eqx"


@eqx.filter_jit
def _embed_kernel(model: PosteriorModel, observations: Any) -> jax.Array:
    return model.embed(observations)


@eqx.filter_jit
def _sample_kernel(model: PosteriorModel, keys: jax.Array, embeddings: jax.Array, n: int, space: str):
    def one(key, embedding):
        xs, log_q = model.flow.sample_and_log_prob(key, embedding, n)
        return from_flow_draws(model, xs, log_q, space)

    return jax.vmap(one)(keys, embeddings)


@eqx.filter_jit
def _log_prob_kernel(model: PosteriorModel, embedding: jax.Array, x: jax.Array, space: str) -> jax.Array:
    u, log_jac = to_flow_space(x, space, model.flow_space)
    lp = model.flow.batch_log_prob(model.standardize(u), embedding)
    lp = lp - model.log_scale_sum + log_jac
    if space == "cube":
        lp = jnp.where(jnp.all((x > 0) & (x < 1), axis=-1), lp, -jnp.inf)
    return lp


def _clamp(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Clamp non-finite entries; return the array and the number of draws (rows) affected."""
    bad_rows = int((~np.isfinite(values)).any(axis=-1).sum())
    if bad_rows:
        values = np.nan_to_num(values, nan=CLAMP_VALUE, posinf=CLAMP_VALUE, neginf=-CLAMP_VALUE)
    return values, bad_rows


def _modality_family(modalities: Sequence[str]) -> str:
    unique = sorted(set(modalities))
    return unique[0] if len(unique) == 1 else "multimodal"


class FlowPosteriorIOMixin:
    """Encoding, sampling, log-densities and persistence hooks of the flow posterior."""

    # ------------------------------------------------------------------ encoding
    def _default_schema(self) -> SchemaView:
        return SchemaView((BlockSpecView("spectrum", "spectrum", self.configs.encoder.n_wavelengths, True),))

    def _encoding_schema(self) -> Any:
        """The schema user observations are checked and stacked against (the real blocks)."""
        return self._schema_object() or self._default_schema()

    def _network_schema(self, schema: Any = None) -> Any:
        """The schema the embedding net is built from: ``schema`` (default: the encoding schema)
        plus the preprocessor's derived blocks (the level of each centred spectrum block)."""
        schema = self._encoding_schema() if schema is None else schema
        preprocessor = self._observation_preprocessor()
        return schema if preprocessor is None else preprocessor.output_schema(schema)

    def _encode_stacked(self, blocks_list: Sequence[Sequence[ObservationBlock]]) -> tuple[np.ndarray, dict]:
        schema = self._encoding_schema()
        observations = self._stack_observations(blocks_list, schema)
        preprocessor = self._observation_preprocessor()
        if preprocessor is not None:
            observations = preprocessor.apply(observations)
        embeddings = np.asarray(_embed_kernel(self.model, observations))
        modalities = {spec.name: ObservationModality.parse(spec.modality).value for spec in schema.blocks}
        metadata = {
            "modality_family": _modality_family(list(modalities.values())),
            "modalities": modalities,
            "block_names": list(modalities),
            "estimator_class": type(self).__name__,
            "embedding_dim": int(embeddings.shape[-1]),
            "preprocessed": preprocessor is not None,
            "task_fingerprint": self.task_fingerprint,
        }
        return embeddings, metadata

    def encode_observation(self, blocks: list[ObservationBlock]) -> EncodedObservation:
        """Encode one structured observation into the posterior context space.

        Args:
            blocks: Observation blocks of one observation (names/modalities/lengths of the
                training schema; values in the store's raw units -- the saved preprocessing is
                applied here).

        Returns:
            The ``(embedding_dim,)`` embedding and metadata (``modality_family``, blocks).

        Raises:
            TaskCompatibilityError: When the observation does not fit the saved schema.
        """
        embeddings, metadata = self._encode_stacked([list(blocks)])
        return EncodedObservation(embeddings[0], metadata)

    def batch_encode_observation(self, blocks_list: list[list[ObservationBlock]]) -> list[EncodedObservation]:
        """Encode a batch of observations using a single vmapped forward pass."""
        embeddings, metadata = self._encode_stacked([list(b) for b in blocks_list])
        return [EncodedObservation(e, dict(metadata)) for e in embeddings]

    # ------------------------------------------------------------------ sampling / density
    def _embedding_of(self, observation: EncodedObservation | Any) -> jax.Array:
        embedding = np.asarray(getattr(observation, "embedding", observation), np.float32)
        expected = self.configs.encoder.embedding_dim
        if embedding.shape != (expected,):
            raise ValueError(f"observation embedding has shape {embedding.shape}; expected ({expected},) "
                             "(an EncodedObservation from encode_observation)")
        return jnp.asarray(embedding)

    @staticmethod
    def _check_count(n_samples: Any) -> int:
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        return int(n_samples)

    def sample_posterior(self, observation: EncodedObservation, n_samples: int, seed: int | None = None
                         ) -> PosteriorSamples:
        """Draw posterior samples conditioned on one encoded observation.

        Args:
            observation: Encoded observation produced by :meth:`encode_observation`.
            n_samples: Number of posterior draws to generate.
            seed: Optional random seed overriding the model-level default seed.

        Returns:
            Samples ``(n, P)`` in the configured parameter space with their log-densities.
            Non-finite outputs are clamped to ``+-CLAMP_VALUE`` (NaN to ``+CLAMP_VALUE``) and
            counted in ``metadata['num_nonfinite']``. Use :meth:`to_physical` for physical units.
        """
        n = self._check_count(n_samples)
        seed = self.seed if seed is None else int(seed)
        emb = self._embedding_of(observation)[None]
        keys = jax.random.PRNGKey(seed)[None]
        samples, log_q = _sample_kernel(self.model, keys, emb, n, self.parameter_space)
        samples, bad = _clamp(np.asarray(samples[0]))
        log_q = np.asarray(log_q[0])
        return PosteriorSamples(
            samples=samples, log_probabilities=log_q,
            metadata={"parameter_space": self.parameter_space, "parameter_names": list(self.parameter_names),
                      "num_nonfinite": bad, "seed": seed, "estimator_class": type(self).__name__},
        )

    def batch_sample_posterior(self, embeddings: Any, n_samples: int, base_seed: int = 0) -> np.ndarray:
        """Draw posterior samples for a batch of encoded observations in one jitted vmapped call.

        Args:
            embeddings: ``(batch_size, embedding_dim)`` stacked :attr:`EncodedObservation.embedding`.
            n_samples: Draws per observation.
            base_seed: Each observation gets a sub-key split from this seed.

        Returns:
            ``(batch_size, n_samples, parameter_dim)`` in the configured space, non-finite values
            clamped as in :meth:`sample_posterior`.
        """
        n = self._check_count(n_samples)
        emb = np.asarray(embeddings, np.float32)
        expected = self.configs.encoder.embedding_dim
        if emb.ndim != 2 or emb.shape[1] != expected:
            raise ValueError(f"embeddings has shape {emb.shape}; expected (batch_size, {expected})")
        keys = jax.random.split(jax.random.PRNGKey(int(base_seed)), emb.shape[0])
        samples, _ = _sample_kernel(self.model, keys, jnp.asarray(emb), n, self.parameter_space)
        return _clamp(np.asarray(samples))[0]

    def log_prob(self, observation: EncodedObservation, parameters: Any) -> Any:
        """Evaluate posterior log-density for one or many parameter vectors.

        Args:
            observation: Encoded observation that defines the posterior context.
            parameters: ``(P,)`` or ``(N, P)`` in the configured parameter space.

        Returns:
            A float for one vector, an ``(N,)`` array for a batch (``-inf`` outside the support
            of a ``cube`` posterior).
        """
        if isinstance(parameters, EncodedObservation):
            raise TypeError("log_prob(observation, parameters): parameters is an EncodedObservation; "
                            "the encoded observation comes first, then the (N, P) parameters")
        x = np.asarray(parameters, np.float32)
        if x.ndim not in (1, 2) or x.shape[-1] != self.parameter_dim:
            raise ValueError(f"parameters has shape {x.shape}; expected ({self.parameter_dim},) or "
                             f"(N, {self.parameter_dim}) in {self.parameter_space!r} space")
        emb = self._embedding_of(observation)
        lp = np.asarray(_log_prob_kernel(self.model, emb, jnp.atleast_2d(x), self.parameter_space))
        return float(lp[0]) if x.ndim == 1 else lp

    # ------------------------------------------------------------------ persistence hooks
    def _build_estimator_config(self) -> dict[str, Any]:
        """Return backend-specific configuration for metadata persistence."""
        return {**self._options, "parameter_dim": self.parameter_dim, "parameter_space": self.parameter_space,
                "seed": self.seed}

    def _build_serialized_metadata(self, artifact_metadata) -> dict[str, Any]:
        payload = super()._build_serialized_metadata(artifact_metadata)
        shift, scale = self._standardization
        payload["flow_posterior"] = {
            "effective_flow_family": self.effective_flow_family,
            "flow_space": self.flow_space,
            "standardization": {"space": self.flow_space, "shift": list(shift), "scale": list(scale)},
            "weights_file": WEIGHTS_FILE,
            # Layout marker: absent in models saved before the transformer offset existed.
            "neural_autoregressive_shift": self.configs.flow.neural_autoregressive_shift,
        }
        return payload

    @staticmethod
    def _resolve_estimator_config(metadata: Mapping[str, Any]) -> dict[str, Any]:
        from sbi_core.flow_posterior import constructor_keywords

        config = metadata.get("estimator_config")
        if not isinstance(config, Mapping):
            raise PosteriorLoadError("metadata.json: field 'estimator_config' is missing or not an object")
        unknown = sorted(set(config) - set(constructor_keywords()))
        if unknown:
            raise PosteriorLoadError(f"metadata.json: estimator_config has unknown keys {unknown}")
        return dict(config)

    def hydrate_loaded_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Restore cached metadata, including the flow-space standardisation and the flow layout."""
        super().hydrate_loaded_metadata(metadata)
        section = metadata.get("flow_posterior") or {}
        offset = section.get("neural_autoregressive_shift", False)  # absent: saved before the offset
        if not isinstance(offset, bool):
            raise PosteriorLoadError("metadata.json: flow_posterior.neural_autoregressive_shift must be a "
                                     f"bool, got {offset!r}")
        flow = dataclasses.replace(self.configs.flow, neural_autoregressive_shift=offset)
        self.configs = dataclasses.replace(self.configs, flow=flow)
        std = section.get("standardization") or {}
        if std:
            shift, scale = tuple(float(v) for v in std["shift"]), tuple(float(v) for v in std["scale"])
            if len(shift) != self.parameter_dim or len(scale) != self.parameter_dim:
                raise PosteriorLoadError("metadata.json: flow_posterior.standardization has the wrong length")
            self._standardization = (shift, scale)
        self._model = None
        self._preprocessor = None

    @classmethod
    def from_serialized_metadata(cls, metadata: Mapping[str, Any]):
        """Rebuild an estimator instance (untrained skeleton) from persisted metadata only."""
        config = cls._resolve_estimator_config(metadata)
        instance = cls(**config, task_metadata=metadata.get("task_metadata") or None)
        instance.hydrate_loaded_metadata(metadata)
        return instance

    def save_backend_state(self, output_path: Path) -> None:
        """Write the model weights (equinox leaves, no pickle); refuses non-finite weights."""
        check_finite_tree(self.model, type(self).__name__)
        eqx.tree_serialise_leaves(Path(output_path) / WEIGHTS_FILE, self.model)

    def load_backend_state(self, input_path: Path) -> None:
        """Load weights into a skeleton rebuilt from the saved schema and config."""
        path = Path(input_path) / WEIGHTS_FILE
        skeleton = self._build_model(self._encoding_schema(), abstract=True)
        try:
            self._model = eqx.tree_deserialise_leaves(path, skeleton)
        except Exception as exc:  # noqa: BLE001 - report any structure/shape mismatch clearly
            raise PosteriorLoadError(f"{path}: weights do not match the model rebuilt from metadata.json ({exc})") from None
