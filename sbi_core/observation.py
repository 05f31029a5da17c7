"""Observation blocks: what a retrieval is conditioned on.

An observation is a list of named blocks (a spectrum, a few photometric points, a light curve,
auxiliary context). Each block carries values and, optionally, per-element uncertainties,
coordinates (wavelength in micron, time) and a validity mask. Blocks of many observations are
stacked into :class:`PreStackedObservations`, the batch pytree every estimator consumes.

This module never imports :mod:`sbi_core.task` at import time (``task`` imports the modality
enum from here); schema arguments are used by attribute only.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Bool, Float

from sbi_core.compatibility import TaskCompatibilityError

__all__ = [
    "ObservationModality",
    "ObservationBlock",
    "EncodedObservation",
    "PreStackedObservations",
    "ObservationEncoder",
    "build_observation_block",
    "build_observation_blocks_from_sample",
    "build_observation_block_batch",
]


class ObservationModality(str, Enum):
    """Kind of an observation block; it picks the encoder of the block."""

    SPECTRUM = "spectrum"
    PHOTOMETRY = "photometry"
    TIME_SERIES = "time_series"
    AUXILIARY = "auxiliary"

    @classmethod
    def parse(cls, value: ObservationModality | str, where: str = "modality") -> ObservationModality:
        """Return the enum member for ``value`` (enum or its string value).

        Raises:
            ValueError: naming ``where``, the bad value and the allowed values.
        """
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value))
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"{where}: unknown modality {value!r}; expected one of {allowed}") from None


def _as_vector(x: Any, what: str, dtype: Any = np.float64) -> np.ndarray:
    """Convert to a 1-D numpy array of ``dtype`` or raise naming ``what``."""
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: cannot convert to a {np.dtype(dtype).name} array ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array, got shape {arr.shape}")
    return arr


def _first_bad(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


@dataclass(frozen=True, eq=False)  # array fields: identity equality, hashable
class ObservationBlock:
    """One named block of one observation.

    Attributes:
        name: Stable identifier of the block within a task (e.g. ``"spectrum"``).
        modality: :class:`ObservationModality` or its string value (converted to the enum).
        values: ``(L,)`` values, after task-level preprocessing (e.g. transit depth).
        uncertainties: Optional ``(L,)`` strictly positive 1-sigma errors (on valid elements).
        coordinates: Optional ``(L,)`` strictly increasing coordinates (wavelength in micron).
        mask: Optional ``(L,)`` bool, True = valid element. Invalid elements may hold NaN.
        metadata: Free-form instrument / preprocessing details.
    """

    name: str
    modality: ObservationModality | str
    values: Float[np.ndarray, " L"]
    uncertainties: Float[np.ndarray, " L"] | None = None
    coordinates: Float[np.ndarray, " L"] | None = None
    mask: Bool[np.ndarray, " L"] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ObservationBlock.name: expected a non-empty string, got {self.name!r}")
        where = f"block {self.name!r}"
        object.__setattr__(self, "modality", ObservationModality.parse(self.modality, f"{where}.modality"))
        values = _as_vector(self.values, f"{where}.values")
        object.__setattr__(self, "values", values)
        mask = None if self.mask is None else self._checked_mask(where, len(values))
        object.__setattr__(self, "mask", mask)
        valid = np.ones(len(values), bool) if mask is None else mask
        if not np.all(np.isfinite(values[valid])):
            i = _first_bad(valid & ~np.isfinite(values))
            raise ValueError(f"{where}.values: element {i} is {values[i]} (expected finite, or masked out)")
        object.__setattr__(self, "uncertainties", self._checked_uncertainties(where, len(values), valid))
        object.__setattr__(self, "coordinates", self._checked_coordinates(where, len(values)))
        object.__setattr__(self, "metadata", dict(self.metadata or {}))

    def _checked_mask(self, where: str, length: int) -> np.ndarray:
        mask = np.asarray(self.mask)
        if mask.dtype != bool:
            raise ValueError(f"{where}.mask: expected a bool array (True = valid), got dtype {mask.dtype}")
        _check_length(mask, length, f"{where}.mask")
        return mask

    def _checked_uncertainties(self, where: str, length: int, valid: np.ndarray) -> np.ndarray | None:
        if self.uncertainties is None:
            return None
        unc = _as_vector(self.uncertainties, f"{where}.uncertainties")
        _check_length(unc, length, f"{where}.uncertainties")
        bad = valid & ~(np.isfinite(unc) & (unc > 0))
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(f"{where}.uncertainties: element {i} is {unc[i]} (expected finite and > 0)")
        return unc

    def _checked_coordinates(self, where: str, length: int) -> np.ndarray | None:
        if self.coordinates is None:
            return None
        coords = _as_vector(self.coordinates, f"{where}.coordinates")
        _check_length(coords, length, f"{where}.coordinates")
        steps = np.diff(coords)
        if not np.all(np.isfinite(coords)) or np.any(steps <= 0):
            raise ValueError(f"{where}.coordinates: expected finite, strictly increasing values")
        return coords

    @property
    def length(self) -> int:
        """Number of elements ``L``."""
        return int(self.values.shape[0])


def _check_length(arr: np.ndarray, length: int, what: str) -> None:
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(f"{what}: expected shape ({length},) like values, got {arr.shape}")


@dataclass(frozen=True, eq=False)  # array fields: identity equality, hashable
class EncodedObservation:
    """An observation after the posterior's embedding network.

    Attributes:
        embedding: ``(E,)`` context vector the conditional density is evaluated at.
        metadata: Block names, schema and preprocessing details of how it was made.
    """

    embedding: Float[np.ndarray, " E"]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        emb = np.asarray(self.embedding)
        if emb.ndim != 1:
            raise ValueError(f"EncodedObservation.embedding: expected shape (E,), got {emb.shape}")
        object.__setattr__(self, "embedding", emb)
        object.__setattr__(self, "metadata", dict(self.metadata or {}))


class PreStackedObservations(eqx.Module):
    """Blocks of many observations stacked into batch arrays (batch axis first); a JAX pytree.

    Attributes:
        values: ``{block: (N, L)}`` for every block.
        uncertainties: ``{block: (N, L)}`` only for blocks that carry uncertainties.
        masks: ``{block: (N, L)}`` bool, True = valid, only for blocks that carry masks.
    """

    values: dict[str, Float[Array, "N L"]]
    uncertainties: dict[str, Float[Array, "N L"]] = eqx.field(default_factory=dict)
    masks: dict[str, Bool[Array, "N L"]] = eqx.field(default_factory=dict)

    def __check_init__(self) -> None:
        if not self.values:
            raise ValueError("PreStackedObservations: expected at least one block in `values`")
        extra = (set(self.uncertainties) | set(self.masks)) - set(self.values)
        if extra:
            raise ValueError(f"PreStackedObservations: uncertainties/masks for unknown blocks {sorted(extra)}")

    @property
    def batch_size(self) -> int:
        """Number of observations ``N`` (leading axis)."""
        return int(next(iter(self.values.values())).shape[0])

    @property
    def block_names(self) -> tuple[str, ...]:
        """Block names in sorted order (the pytree order)."""
        return tuple(sorted(self.values))

    def __getitem__(self, index: Any) -> PreStackedObservations:
        """Index every array along the batch axis (int, slice or index array)."""
        return jax.tree_util.tree_map(lambda a: a[index], self)

    def __len__(self) -> int:
        return self.batch_size


class ObservationEncoder(eqx.Module):
    """Abstract encoder of one block of one observation into a fixed-size embedding.

    Concrete encoders (registered by name in :mod:`sbi_core.encoders`) are final and small; the
    embedding network vmaps them over the batch.
    """

    @abc.abstractmethod
    def __call__(
        self,
        values: Float[Array, " L"],
        uncertainties: Float[Array, " L"] | None,
        mask: Bool[Array, " L"] | None,
    ) -> Float[Array, " E"]:
        """Encode one block of one observation.

        Args:
            values: Preprocessed values of the block.
            uncertainties: Preprocessed uncertainties, or None when the block has none.
            mask: Validity mask (True = valid), or None when every element is valid.

        Returns:
            The block embedding.
        """
        raise NotImplementedError


def build_observation_block(
    spec: Any,
    values: Float[np.ndarray, " L"],
    uncertainties: Float[np.ndarray, " L"] | None = None,
    coordinates: Float[np.ndarray, " L"] | None = None,
    mask: Bool[np.ndarray, " L"] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ObservationBlock:
    """Build a block that follows ``spec`` (an ``ObservationBlockSpec``).

    Coordinates default to the spec's. Raises:
        TaskCompatibilityError: when the length or the presence of uncertainties disagrees with
            the spec.
    """
    block = ObservationBlock(
        name=spec.name,
        modality=spec.modality,
        values=values,
        uncertainties=uncertainties,
        coordinates=getattr(spec, "coordinates", None) if coordinates is None else coordinates,
        mask=mask,
        metadata=metadata or {},
    )
    problems = _block_problems(block, spec)
    if problems:
        raise TaskCompatibilityError(f"block {spec.name!r} against its specification", problems)
    return block


def build_observation_blocks_from_sample(schema: Any, sample: Mapping[str, Mapping[str, Any]]) -> list[ObservationBlock]:
    """Turn one row of ``SBITask.simulate`` output into blocks, in schema order.

    Args:
        schema: An ``ObservationSchema``.
        sample: ``{block: {"values": (L,), "uncertainties": (L,) optional, "mask": (L,) optional}}``.

    Raises:
        TaskCompatibilityError: naming missing/extra blocks or mismatched lengths.
    """
    names = [spec.name for spec in schema.blocks]
    problems = _name_problems(names, list(sample))
    if problems:
        raise TaskCompatibilityError("simulated sample against the task's observation schema", problems)
    blocks = []
    for spec in schema.blocks:
        row = sample[spec.name]
        blocks.append(
            build_observation_block(
                spec,
                np.asarray(row["values"]),
                uncertainties=None if row.get("uncertainties") is None else np.asarray(row["uncertainties"]),
                mask=None if row.get("mask") is None else np.asarray(row["mask"]),
            )
        )
    return blocks


def build_observation_block_batch(
    blocks_list: Sequence[Sequence[ObservationBlock] | Mapping[str, ObservationBlock]] | Sequence[ObservationBlock],
    schema: Any,
    dtype: Any = np.float32,
) -> PreStackedObservations:
    """Stack observations (each a list or ``{name: block}`` of blocks) into a batch.

    A flat list of blocks is taken as a single observation. Blocks are checked against ``schema``
    (an ``ObservationSchema``): names, modality, length and uncertainties. A block that has a mask
    in any observation gets a mask for all of them (all-True where absent).

    Returns:
        A numpy-backed :class:`PreStackedObservations` with ``dtype`` values.

    Raises:
        TaskCompatibilityError: listing every problem, per observation and block.
    """
    observations = _as_observation_list(blocks_list)
    specs = {spec.name: spec for spec in schema.blocks}
    for i, obs in enumerate(observations):
        problems = _name_problems(list(specs), list(obs))
        problems += [p for name, blk in obs.items() if name in specs for p in _block_problems(blk, specs[name])]
        if problems:
            raise TaskCompatibilityError(f"observation {i} against the observation schema", problems)
    values = {n: np.stack([o[n].values for o in observations]).astype(dtype) for n in specs}
    unc = {
        n: np.stack([o[n].uncertainties for o in observations]).astype(dtype)
        for n, s in specs.items()
        if s.has_uncertainties
    }
    masks = {
        n: np.stack([o[n].mask if o[n].mask is not None else np.ones(o[n].length, bool) for o in observations])
        for n in specs
        if any(o[n].mask is not None for o in observations)
    }
    # Masked elements may hold NaN; zero them so no NaN reaches a network or a gradient.
    for n, m in masks.items():
        values[n] = np.where(m, values[n], 0).astype(dtype)
        if n in unc:
            unc[n] = np.where(m, unc[n], 1).astype(dtype)
    return PreStackedObservations(values=values, uncertainties=unc, masks=masks)


def _as_observation_list(blocks_list: Any) -> list[dict[str, ObservationBlock]]:
    items = list(blocks_list)
    if not items:
        raise ValueError("build_observation_block_batch: expected at least one observation, got none")
    if all(isinstance(b, ObservationBlock) for b in items):
        items = [items]
    out = []
    for i, obs in enumerate(items):
        blocks = list(obs.values()) if isinstance(obs, Mapping) else list(obs)
        if not all(isinstance(b, ObservationBlock) for b in blocks):
            raise TypeError(f"observation {i}: expected ObservationBlock objects, got {[type(b).__name__ for b in blocks]}")
        names = [b.name for b in blocks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise TaskCompatibilityError(f"observation {i}", [f"block(s) {dupes} given more than once"])
        out.append({b.name: b for b in blocks})
    return out


def _name_problems(expected: list[str], found: list[str]) -> list[str]:
    problems = []
    missing = [n for n in expected if n not in found]
    extra = [n for n in found if n not in expected]
    if missing:
        problems.append(f"missing block(s) {missing} (the schema has {expected})")
    if extra:
        problems.append(f"unexpected block(s) {extra} (the schema has {expected})")
    return problems


def _block_problems(block: ObservationBlock, spec: Any) -> list[str]:
    """Every way ``block`` disagrees with ``spec`` (an ObservationBlockSpec)."""
    name, problems = spec.name, []
    spec_modality = ObservationModality.parse(spec.modality)
    if block.modality != spec_modality:
        problems.append(f"block {name!r}: modality {block.modality.value!r}, expected {spec_modality.value!r}")
    if block.length != int(spec.length):
        problems.append(f"block {name!r}: length {block.length}, expected {int(spec.length)}")
    if spec.has_uncertainties and block.uncertainties is None:
        problems.append(f"block {name!r}: missing uncertainties (the schema requires them)")
    if not spec.has_uncertainties and block.uncertainties is not None:
        problems.append(f"block {name!r}: has uncertainties but the schema has none for this block")
    return problems
