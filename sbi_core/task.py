"""The task model: parameters with priors, an observation schema, a noise model, a simulator.

An :class:`SBITask` is everything a simulation store, a trained posterior and a diagnostic need
to agree on: parameter names/units/priors (column order), the observation blocks (name,
modality, length, uncertainties, coordinates), the noise model, and the simulator itself
(a pure JAX function, jit- and vmap-able). Tasks with a tractable likelihood expose it as a
differentiable JAX function; benchmark tasks can also expose reference posterior samplers.

Payloads follow the simulation-store format of ``DESIGN.md``: ``to_payload()["parameters"]``
and ``["blocks"]`` are the store manifest entries, blocks additionally carry ``coordinates``
(a list, written as an array by the store writer) and ``constraint`` where set. The
fingerprint is the SHA-256 of the canonical JSON (sorted keys, no whitespace) of
``to_payload()``, which also holds the simulator ``config``; it changes whenever anything that
defines the task changes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from sbi_core.observation import ObservationModality
from sbi_core.priors import AbstractPrior, prior_from_payload
from sbi_core.spaces import ParameterTransform

__all__ = [
    "ParameterSpec",
    "ObservationValueConstraint",
    "ObservationBlockSpec",
    "ObservationSchema",
    "NoiseModelConfig",
    "SimulationConfig",
    "SBITask",
    "canonical_json",
]

SimulateFn = Callable[[PRNGKeyArray, Array], dict[str, dict[str, Array]]]
LikelihoodFn = Callable[[Array, Mapping[str, Mapping[str, Array]]], Array]
ReferenceSamplerFn = Callable[[PRNGKeyArray, Mapping[str, Mapping[str, Array]], int], Array]


def canonical_json(payload: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, no NaN/inf (stable across processes)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _require_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class ParameterSpec:
    """One retrieval parameter: its name, physical unit and prior."""

    name: str
    unit: str
    prior: AbstractPrior

    def __post_init__(self):
        _require_name(self.name, "ParameterSpec.name")
        if not isinstance(self.unit, str):
            raise ValueError(f"ParameterSpec {self.name!r}: unit must be a string, got {self.unit!r}")
        if not isinstance(self.prior, AbstractPrior):
            raise ValueError(
                f"ParameterSpec {self.name!r}: prior must be an AbstractPrior, got {type(self.prior).__name__}"
            )

    def to_payload(self) -> dict[str, Any]:
        """``{"name", "unit", "prior"}`` as in the store manifest."""
        return {"name": self.name, "unit": self.unit, "prior": self.prior.to_payload()}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ParameterSpec:
        """Inverse of :meth:`to_payload` (ValueError naming the missing field)."""
        for key in ("name", "unit", "prior"):
            if key not in payload:
                raise ValueError(f"parameter payload {dict(payload)!r} is missing field {key!r}")
        return cls(payload["name"], payload["unit"], prior_from_payload(payload["prior"]))


@dataclass(frozen=True)
class ObservationValueConstraint:
    """Admissible range of a block's values (e.g. transit depths are non-negative)."""

    min_value: float | None = None
    max_value: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True

    def __post_init__(self):
        lo, hi = self.min_value, self.max_value
        if lo is not None and hi is not None and not lo <= hi:
            raise ValueError(f"ObservationValueConstraint: min_value {lo!r} > max_value {hi!r}")

    def to_payload(self) -> dict[str, Any]:
        return {
            "min_value": None if self.min_value is None else float(self.min_value),
            "max_value": None if self.max_value is None else float(self.max_value),
            "min_inclusive": bool(self.min_inclusive),
            "max_inclusive": bool(self.max_inclusive),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ObservationValueConstraint:
        return cls(**dict(payload))

    def satisfied(self, values: np.ndarray) -> np.ndarray:
        """Elementwise boolean: does each value lie in the admissible range."""
        v = np.asarray(values)
        ok = np.ones(v.shape, bool)
        if self.min_value is not None:
            ok &= v >= self.min_value if self.min_inclusive else v > self.min_value
        if self.max_value is not None:
            ok &= v <= self.max_value if self.max_inclusive else v < self.max_value
        return ok


def _coordinates_array(name: str, coords: Any, length: int) -> np.ndarray | None:
    if coords is None:
        return None
    arr = np.array(coords, dtype=np.float64)
    if arr.shape != (length,):
        raise ValueError(f"block {name!r}: coordinates have shape {arr.shape}, expected ({length},)")
    if not np.all(np.isfinite(arr)) or np.any(np.diff(arr) <= 0):
        raise ValueError(f"block {name!r}: coordinates must be finite and strictly increasing")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class ObservationBlockSpec:
    """Schema of one observation block. Equality and hash go through :meth:`to_payload`."""

    name: str
    modality: ObservationModality
    length: int
    has_uncertainties: bool
    coordinates: np.ndarray | None = None
    constraint: ObservationValueConstraint | None = None

    def __post_init__(self):
        _require_name(self.name, "ObservationBlockSpec.name")
        try:
            modality = ObservationModality(self.modality)
        except ValueError:
            allowed = [m.value for m in ObservationModality]
            raise ValueError(
                f"block {self.name!r}: unknown modality {self.modality!r}; expected one of {allowed}"
            ) from None
        object.__setattr__(self, "modality", modality)
        if isinstance(self.length, bool) or not isinstance(self.length, (int, np.integer)) or self.length < 1:
            raise ValueError(f"block {self.name!r}: length must be a positive integer, got {self.length!r}")
        object.__setattr__(self, "length", int(self.length))
        if not isinstance(self.has_uncertainties, (bool, np.bool_)):
            raise ValueError(f"block {self.name!r}: has_uncertainties must be a bool, got {self.has_uncertainties!r}")
        object.__setattr__(self, "has_uncertainties", bool(self.has_uncertainties))
        object.__setattr__(self, "coordinates", _coordinates_array(self.name, self.coordinates, self.length))

    def to_payload(self) -> dict[str, Any]:
        """Store manifest entry, plus ``coordinates`` / ``constraint`` when set."""
        out: dict[str, Any] = {
            "name": self.name,
            "modality": self.modality.value,
            "length": self.length,
            "has_uncertainties": self.has_uncertainties,
        }
        if self.coordinates is not None:
            out["coordinates"] = [float(c) for c in self.coordinates]
        if self.constraint is not None:
            out["constraint"] = self.constraint.to_payload()
        return out

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ObservationBlockSpec:
        for key in ("name", "modality", "length", "has_uncertainties"):
            if key not in payload:
                raise ValueError(f"block payload {dict(payload)!r} is missing field {key!r}")
        constraint = payload.get("constraint")
        return cls(
            name=payload["name"],
            modality=payload["modality"],
            length=payload["length"],
            has_uncertainties=payload["has_uncertainties"],
            coordinates=payload.get("coordinates"),
            constraint=None if constraint is None else ObservationValueConstraint.from_payload(constraint),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObservationBlockSpec):
            return NotImplemented
        return self.to_payload() == other.to_payload()

    def __hash__(self) -> int:
        return hash(canonical_json(self.to_payload()))


@dataclass(frozen=True)
class ObservationSchema:
    """Ordered observation blocks of a task (names unique)."""

    blocks: tuple[ObservationBlockSpec, ...]

    def __post_init__(self):
        blocks = tuple(self.blocks)
        if not blocks:
            raise ValueError("ObservationSchema needs at least one block, got none")
        for i, b in enumerate(blocks):
            if not isinstance(b, ObservationBlockSpec):
                raise ValueError(f"ObservationSchema.blocks[{i}] must be an ObservationBlockSpec, got {type(b).__name__}")
        names = [b.name for b in blocks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"ObservationSchema: duplicate block names {dupes}")
        object.__setattr__(self, "blocks", blocks)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)

    def block(self, name: str) -> ObservationBlockSpec:
        """The block called ``name`` (KeyError listing the known names)."""
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no block {name!r} in the observation schema; blocks are {list(self.names)}")

    def to_payload(self) -> dict[str, Any]:
        return {"blocks": [b.to_payload() for b in self.blocks]}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ObservationSchema:
        if "blocks" not in payload:
            raise ValueError(f"observation schema payload has no 'blocks' field: {dict(payload)!r}")
        return cls(tuple(ObservationBlockSpec.from_payload(b) for b in payload["blocks"]))


@dataclass(frozen=True)
class NoiseModelConfig:
    """How observational noise enters the simulations (recorded in stores and models)."""

    mode: str = "observational"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None

    def __post_init__(self):
        _require_name(self.mode, "NoiseModelConfig.mode")
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"NoiseModelConfig.seed must be an int or None, got {self.seed!r}")

    def __hash__(self) -> int:
        return hash(canonical_json(self.to_payload()))

    def to_payload(self) -> dict[str, Any]:
        return {"mode": self.mode, "parameters": _plain(dict(self.parameters)), "seed": self.seed}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> NoiseModelConfig:
        return cls(
            mode=payload.get("mode", "observational"),
            parameters=payload.get("parameters") or {},
            seed=payload.get("seed"),
        )


@dataclass(frozen=True)
class SimulationConfig:
    """How many simulations to run, with which seed and chunk size."""

    num_simulations: int
    seed: int = 0
    chunk_size: int = 1024

    def __post_init__(self):
        for name in ("num_simulations", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SimulationConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SimulationConfig.seed must be a non-negative integer, got {self.seed!r}")


def _plain(obj: Any) -> Any:
    """Convert tuples/numpy values in a config mapping to plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"task payloads must hold finite numbers, got {obj!r}")
    return obj


def _as_block_dict(name: str, entry: Any) -> dict[str, Any]:
    """One block of an observation as ``{"values": ..., "uncertainties": ...}``."""
    if isinstance(entry, Mapping):
        if "values" not in entry:
            raise ValueError(f"observation block {name!r} has no 'values' (keys: {sorted(entry)})")
        out = {"values": entry["values"]}
        if entry.get("uncertainties") is not None:
            out["uncertainties"] = entry["uncertainties"]
        return out
    return {"values": entry}


def _observation_dict(observation: Any) -> dict[str, Any]:
    """Accept the documented observation forms and return ``{block: entry}``."""
    if isinstance(observation, Mapping):
        return dict(observation)
    if hasattr(observation, "values") and isinstance(getattr(observation, "values"), Mapping):
        # PreStackedObservations-like: dicts of arrays per block.
        unc = getattr(observation, "uncertainties", None) or {}
        return {k: {"values": v, "uncertainties": unc.get(k)} for k, v in observation.values.items()}
    if isinstance(observation, (list, tuple)) and all(hasattr(b, "name") for b in observation):
        return {b.name: {"values": b.values, "uncertainties": b.uncertainties} for b in observation}
    raise ValueError(
        "observation must be a mapping {block: {'values', 'uncertainties'}}, a mapping "
        f"{{block: values}}, a PreStackedObservations or a list of ObservationBlock; got {type(observation).__name__}"
    )


@dataclass(frozen=True, eq=False)
class SBITask:
    """A simulation-based inference task (see the module docstring).

    Attributes:
        name: registry name of the task.
        version: bumped whenever the simulator's behaviour changes.
        parameters: parameter specs in column order.
        observation_schema: the observation blocks.
        noise_model: how noise enters the simulations (None: noiseless).
        simulator: per-sample pure JAX function ``(key, theta (P,)) -> {block: {"values": (L,),
            "uncertainties": (L,)}}`` (uncertainties only for blocks that have them).
        likelihood: optional per-sample differentiable ``(theta (P,), observation) -> scalar``,
            the observation normalised to ``{block: {"values", ["uncertainties"]}}``.
        reference_sampler: optional ``(key, observation, n) -> (n, P)`` exact posterior draws.
        config: JSON-able simulator settings (part of the payload and fingerprint).
        description: one line for humans.
    """

    name: str
    version: str
    parameters: tuple[ParameterSpec, ...]
    observation_schema: ObservationSchema
    noise_model: NoiseModelConfig | None
    simulator: SimulateFn
    likelihood: LikelihoodFn | None = None
    reference_sampler: ReferenceSamplerFn | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        _require_name(self.name, "SBITask.name")
        _require_name(self.version, "SBITask.version")
        params = tuple(self.parameters)
        if not params or not all(isinstance(p, ParameterSpec) for p in params):
            raise ValueError(f"task {self.name!r}: parameters must be a non-empty sequence of ParameterSpec")
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name!r}: duplicate parameter names in {names}")
        object.__setattr__(self, "parameters", params)
        if not isinstance(self.observation_schema, ObservationSchema):
            raise ValueError(f"task {self.name!r}: observation_schema must be an ObservationSchema")
        if not callable(self.simulator):
            raise ValueError(f"task {self.name!r}: simulator must be callable")
        object.__setattr__(self, "config", MappingProxyType(_plain(dict(self.config))))

    # ---------------------------------------------------------------- description
    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def parameter_units(self) -> tuple[str, ...]:
        return tuple(p.unit for p in self.parameters)

    @property
    def parameter_dim(self) -> int:
        return len(self.parameters)

    @cached_property
    def transform(self) -> ParameterTransform:
        return ParameterTransform(tuple(p.prior for p in self.parameters))

    @property
    def has_likelihood(self) -> bool:
        return self.likelihood is not None

    def to_payload(self) -> dict[str, Any]:
        """``{"name", "version", "parameters", "blocks", "noise_model", "config"}`` (JSON)."""
        return {
            "name": self.name,
            "version": self.version,
            "parameters": [p.to_payload() for p in self.parameters],
            "blocks": self.observation_schema.to_payload()["blocks"],
            "noise_model": None if self.noise_model is None else self.noise_model.to_payload(),
            "config": dict(self.config),
        }

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_payload`."""
        return hashlib.sha256(canonical_json(self.to_payload()).encode("utf-8")).hexdigest()

    # ---------------------------------------------------------------- simulation
    def sample_prior(self, key: PRNGKeyArray, n: int) -> Float[Array, "n P"]:
        """``n`` prior draws in physical units."""
        return self.transform.sample_prior(key, n, "physical")

    def log_prior(self, theta: Float[Array, "*b P"], space: str = "physical") -> Float[Array, "*b"]:
        """Prior log-density of ``theta`` expressed in ``space`` (see :class:`ParameterTransform`)."""
        return self.transform.log_prior(theta, space)

    @cached_property
    def _simulate_batch(self):
        def batch(key, theta):
            keys = jax.random.split(key, theta.shape[0])
            return jax.vmap(self.simulator)(keys, theta)

        return jax.jit(batch)

    def _check_theta(self, theta: Any, batched: bool) -> Array:
        theta = jnp.asarray(theta)
        want = f"(n, {self.parameter_dim})" if batched else f"({self.parameter_dim},)"
        if theta.ndim != (2 if batched else 1) or theta.shape[-1] != self.parameter_dim:
            raise ValueError(
                f"task {self.name!r}: theta has shape {theta.shape}, expected {want} "
                f"(columns {list(self.parameter_names)})"
            )
        if not jnp.issubdtype(theta.dtype, jnp.floating):
            theta = theta.astype(jnp.result_type(float))
        return theta

    def simulate(self, key: PRNGKeyArray, theta: Float[Array, "n P"]) -> dict[str, dict[str, Array]]:
        """Simulate one observation per row of ``theta`` (physical units), jitted and vmapped.

        Returns:
            ``{block: {"values": (n, L), "uncertainties": (n, L)}}``; uncertainties only for
            blocks whose spec has them.
        """
        theta = self._check_theta(theta, batched=True)
        return self._simulate_batch(key, theta)

    # ---------------------------------------------------------------- likelihood
    def normalize_observation(self, observation: Any, batch_shape: tuple[int, ...] = ()) -> dict[str, dict[str, Array]]:
        """Observation as ``{block: {"values", ["uncertainties"]}}`` checked against the schema."""
        raw = _observation_dict(observation)
        out = {}
        for spec in self.observation_schema.blocks:
            if spec.name not in raw:
                raise ValueError(f"task {self.name!r}: observation has no block {spec.name!r} (has {sorted(raw)})")
            entry = _as_block_dict(spec.name, raw[spec.name])
            if spec.has_uncertainties and "uncertainties" not in entry:
                raise ValueError(f"task {self.name!r}: block {spec.name!r} needs 'uncertainties'")
            if not spec.has_uncertainties:
                entry.pop("uncertainties", None)
            for key, arr in list(entry.items()):
                arr = jnp.asarray(arr)
                if arr.shape != (*batch_shape, spec.length):
                    raise ValueError(
                        f"task {self.name!r}: block {spec.name!r} {key} has shape {arr.shape}, "
                        f"expected {(*batch_shape, spec.length)}"
                    )
                entry[key] = arr
            out[spec.name] = entry
        return out

    def log_likelihood(self, theta: Float[Array, " P"], observation: Any) -> Float[Array, ""] | None:
        """log p(observation | theta) for one parameter vector (physical units); None if absent.

        Pure JAX and differentiable in ``theta``; wrap in ``jax.jit`` / ``jax.grad`` freely.
        """
        if self.likelihood is None:
            return None
        theta = self._check_theta(theta, batched=False)
        return self.likelihood(theta, self.normalize_observation(observation))

    @cached_property
    def _log_likelihood_batch(self):
        return jax.jit(jax.vmap(self.likelihood))

    def log_likelihood_batch(self, theta: Float[Array, "B P"], observations: Any) -> Float[Array, " B"]:
        """Row-wise log-likelihood: ``theta[i]`` against observation ``i`` (batch axis first).

        Raises:
            NotImplementedError: the task has no tractable likelihood.
        """
        if self.likelihood is None:
            raise NotImplementedError(f"task {self.name!r} exposes no likelihood")
        theta = self._check_theta(theta, batched=True)
        obs = self.normalize_observation(observations, batch_shape=(theta.shape[0],))
        return self._log_likelihood_batch(theta, obs)

    def reference_posterior_sample(self, key: PRNGKeyArray, observation: Any, n: int) -> Float[Array, "n P"]:
        """Exact posterior draws (physical units) for one observation.

        Raises:
            NotImplementedError: the task has no reference posterior.
        """
        if self.reference_sampler is None:
            raise NotImplementedError(f"task {self.name!r} has no reference posterior sampler")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        return self.reference_sampler(key, self.normalize_observation(observation), int(n))
