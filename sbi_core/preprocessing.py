"""Per-element standardisation of observation blocks, fitted on the train split only.

``x' = (x - mean) / std`` per block element; uncertainties become ``sigma / std`` (the same
transformed units, so ``x' +- sigma'`` is the standardised ``x +- sigma``). Masked elements are
set to value 0 and uncertainty 1 (a neutral, positive value, so an encoder's ``log(sigma)`` stays
finite). Statistics are streamed chunk by chunk with Chan et al.'s parallel merge of Welford
accumulators, so fitting never loads the store into memory.

Level centring (payload version 2, on by default for spectrum-modality blocks): for a *centred*
block each sample's level -- the mean of its valid (masked-in) elements -- is subtracted before
the per-element standardisation (whose statistics are those of the centred train spectra), and
the level itself becomes a derived 1-element ``auxiliary`` block ``"<block>.level"``,
standardised with its own train mean and std. Why: in ``exo_transmission`` the planet-radius
level dominates every wavelength (per-element std ~6,500 ppm against ~220 ppm of spectral shape),
so plain per-element standardisation leaves the shape as a ~3% residual (docs/decisions.md). The
shift leaves uncertainties unchanged (``sigma / std`` as above); the level's uncertainty, when
the block has uncertainties, is the standard error of the valid-element mean
``sqrt(sum sigma_i**2) / n_valid`` divided by the level std, so observation-noise injection sees
the right scale. A fully masked row gets level 0, uncertainty 1 and (when the block carries a
mask) a False level mask: never NaN. The derived block exists only between the preprocessor and
the network: users give, and schemas check, the real blocks only (:meth:`output_schema`).
Version-1 payloads (saved before centring existed) load without centring.

The fitted state is a JSON payload saved with every model and applied identically at training
and inference; :meth:`ObservationPreprocessor.apply` works on numpy arrays and inside ``jax.jit``.

References:
    Chan, Golub & LeVeque (1979), "Updating formulae and a pairwise algorithm for computing
    sample variances".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.observation import ObservationModality, PreStackedObservations
from sbi_core.posterior_metadata import BlockSpecView, SchemaView

__all__ = [
    "ObservationPreprocessor",
    "fit_preprocessing",
    "default_center_blocks",
    "level_block_name",
    "network_schema",
    "PREPROCESSING_KIND",
    "PREPROCESSING_VERSION",
    "LEVEL_SUFFIX",
]

PREPROCESSING_KIND = "per_element_standardization"
#: 1: per-element standardisation only; 2: adds ``center_blocks`` and ``levels`` (level centring).
PREPROCESSING_VERSION = 2
SUPPORTED_PREPROCESSING_VERSIONS = (1, 2)
#: Name suffix of the derived level block of a centred block.
LEVEL_SUFFIX = ".level"
DEFAULT_RELATIVE_STD_FLOOR = 1e-6
DEFAULT_ABSOLUTE_STD_FLOOR = 1e-12


@dataclass
class _Moments:
    """Per-element count, mean and sum of squared deviations (float64)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of_chunk(cls, values: np.ndarray, mask: np.ndarray | None) -> _Moments:
        x = np.asarray(values, np.float64)
        valid = np.ones(x.shape, bool) if mask is None else np.asarray(mask, bool)
        x = np.where(valid, x, 0.0)
        count = valid.sum(axis=0).astype(np.float64)
        mean = np.divide(x.sum(axis=0), count, out=np.zeros(x.shape[1]), where=count > 0)
        m2 = (np.where(valid, x - mean, 0.0) ** 2).sum(axis=0)
        return cls(count, mean, m2)

    def merge(self, other: _Moments) -> _Moments:
        """Chan et al. pairwise merge; elements with no valid samples stay at count 0."""
        n = self.count + other.count
        safe = np.where(n > 0, n, 1.0)
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / safe
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / safe
        return _Moments(n, mean, m2)


def _floored_std(moments: _Moments, relative: float, absolute: float) -> np.ndarray:
    """Population std; degenerate elements (constant, or never valid) get std 1.

    Replacing a (near-)zero std by 1 rather than by a tiny floor keeps an inference-time value
    that differs from the constant training value from exploding.
    """
    std = np.sqrt(np.divide(moments.m2, moments.count, out=np.zeros_like(moments.m2), where=moments.count > 0))
    degenerate = (moments.count == 0) | (std <= np.maximum(absolute, relative * np.abs(moments.mean)))
    return np.where(degenerate, 1.0, std)


def level_block_name(block: str) -> str:
    """Name of the derived level block of a centred block (``"<block>.level"``)."""
    return f"{block}{LEVEL_SUFFIX}"


def default_center_blocks(schema: Any) -> tuple[str, ...]:
    """The blocks centred by default: every ``spectrum``-modality block of ``schema`` (none when
    ``schema`` is None)."""
    if schema is None:
        return ()
    return tuple(sorted(spec.name for spec in schema.blocks
                        if ObservationModality.parse(spec.modality) is ObservationModality.SPECTRUM))


def network_schema(schema: Any, center_blocks: Sequence[str]) -> Any:
    """The schema the embedding network is built from: ``schema`` plus, per centred block, its
    derived 1-element ``auxiliary`` level block (appended in ``center_blocks`` order, with
    uncertainties when the source block has them).

    ``schema`` itself when nothing is centred (models without centring are built exactly as
    before). Idempotent: a schema that already holds the derived blocks is returned unchanged.
    """
    if not center_blocks:
        return schema
    specs = {spec.name: spec for spec in schema.blocks}
    if all(level_block_name(b) in specs for b in center_blocks):
        return schema
    blocks = [BlockSpecView(spec.name, ObservationModality.parse(spec.modality).value, int(spec.length),
                            bool(spec.has_uncertainties)) for spec in schema.blocks]
    for name in center_blocks:
        if name not in specs:
            raise ValueError(f"centred block {name!r} is not in the observation schema (blocks: {list(specs)})")
        blocks.append(BlockSpecView(level_block_name(name), ObservationModality.AUXILIARY.value, 1,
                                    bool(specs[name].has_uncertainties)))
    return SchemaView(tuple(blocks))


def _row_levels(values: Any, mask: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Per-row mean over valid elements: ``(level (..., 1), n_valid (..., 1), valid (..., L))``.

    Invalid elements (possibly NaN) never enter the sum; a row with no valid element gets level 0.
    """
    valid = xp.ones(values.shape, bool) if mask is None else mask
    zero = xp.zeros((), values.dtype)
    n = xp.sum(valid, axis=-1, keepdims=True).astype(values.dtype)
    total = xp.sum(xp.where(valid, values, zero), axis=-1, keepdims=True)
    level = total / xp.maximum(n, xp.ones((), values.dtype))
    return level, n, valid


@dataclass(frozen=True, eq=False)
class ObservationPreprocessor:
    """Fitted per-element standardisation of every block.

    Hashed by identity (``eq=False``) so it can be a static argument of ``eqx.filter_jit``.

    Attributes:
        mean: ``{block: (L,)}`` float64 means over valid training elements (of the centred
            values for a centred block).
        std: ``{block: (L,)}`` float64 stds (degenerate elements set to 1).
        metadata: Fit provenance (split, sample count, store fingerprint, floors).
        center_blocks: Blocks whose per-sample level is subtracted (sorted); empty = none.
        level_mean: ``{block: float}`` train mean of each centred block's level.
        level_std: ``{block: float}`` train std of each centred block's level (floored as above).
    """

    mean: Mapping[str, np.ndarray]
    std: Mapping[str, np.ndarray]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    center_blocks: tuple[str, ...] = ()
    level_mean: Mapping[str, float] = field(default_factory=dict)
    level_std: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.mean) != set(self.std) or not self.mean:
            raise ValueError(f"ObservationPreprocessor: mean blocks {sorted(self.mean)} and std blocks {sorted(self.std)} must match and be non-empty")
        for name in self.mean:
            mean, std = np.asarray(self.mean[name], np.float64), np.asarray(self.std[name], np.float64)
            if mean.ndim != 1 or mean.shape != std.shape:
                raise ValueError(f"ObservationPreprocessor block {name!r}: mean {mean.shape} and std {std.shape} must be equal 1-D shapes")
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
                raise ValueError(f"ObservationPreprocessor block {name!r}: mean must be finite and std finite and > 0")
        center = tuple(sorted(set(self.center_blocks)))
        unknown = [b for b in center if b not in self.mean]
        if unknown:
            raise ValueError(f"ObservationPreprocessor: centred block(s) {unknown} are not among the blocks {sorted(self.mean)}")
        clashes = [level_block_name(b) for b in center if level_block_name(b) in self.mean]
        if clashes:
            raise ValueError(f"ObservationPreprocessor: derived level block(s) {clashes} clash with observation blocks")
        if set(self.level_mean) != set(center) or set(self.level_std) != set(center):
            raise ValueError(f"ObservationPreprocessor: level statistics {sorted(self.level_mean)}/{sorted(self.level_std)} "
                             f"must cover exactly the centred blocks {list(center)}")
        for name in center:
            m, sd = float(self.level_mean[name]), float(self.level_std[name])
            if not (math.isfinite(m) and math.isfinite(sd) and sd > 0):
                raise ValueError(f"ObservationPreprocessor level of {name!r}: mean must be finite and std finite and > 0")
        object.__setattr__(self, "mean", {k: np.asarray(v, np.float64) for k, v in self.mean.items()})
        object.__setattr__(self, "std", {k: np.asarray(v, np.float64) for k, v in self.std.items()})
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "center_blocks", center)
        object.__setattr__(self, "level_mean", {k: float(self.level_mean[k]) for k in center})
        object.__setattr__(self, "level_std", {k: float(self.level_std[k]) for k in center})

    @classmethod
    def fit(
        cls,
        store: Any,
        split: str = "train",
        *,
        relative_std_floor: float = DEFAULT_RELATIVE_STD_FLOOR,
        absolute_std_floor: float = DEFAULT_ABSOLUTE_STD_FLOOR,
        center_blocks: Sequence[str] | None = None,
    ) -> ObservationPreprocessor:
        """Fit on ``split`` of a store (anything with ``iter_chunks(split)``), chunk by chunk.

        Args:
            center_blocks: Blocks to level-centre; ``None`` (default) = every spectrum-modality
                block of ``store.observation_schema`` (none when the store has no schema);
                ``()`` = plain per-element standardisation.

        Raises:
            ValueError: when the split has no samples, or a centred block is not in the store.
        """
        if center_blocks is None:
            center_blocks = default_center_blocks(getattr(store, "observation_schema", None))
        center = tuple(sorted(set(center_blocks)))
        moments: dict[str, _Moments] = {}
        levels: dict[str, _Moments] = {}
        n_rows = 0
        for _, _, obs in store.iter_chunks(split):
            n_rows += obs.batch_size
            for name, values in obs.values.items():
                mask = obs.masks.get(name)
                if name in center:
                    x = np.asarray(values, np.float64)
                    level, n, _ = _row_levels(x, None if mask is None else np.asarray(mask, bool), np)
                    values = x - level
                    chunk = _Moments.of_chunk(level, n > 0)
                    levels[name] = levels[name].merge(chunk) if name in levels else chunk
                chunk = _Moments.of_chunk(values, mask)
                moments[name] = moments[name].merge(chunk) if name in moments else chunk
        if n_rows == 0:
            raise ValueError(f"ObservationPreprocessor.fit: split {split!r} of {getattr(store, 'path', store)!r} has no samples")
        missing = [b for b in center if b not in moments]
        if missing:
            raise ValueError(f"ObservationPreprocessor.fit: centred block(s) {missing} are not in the store (blocks: {sorted(moments)})")
        metadata = {
            "split": split,
            "n_samples": n_rows,
            "store_fingerprint": getattr(store, "fingerprint", None),
            "relative_std_floor": relative_std_floor,
            "absolute_std_floor": absolute_std_floor,
        }
        std = {n: _floored_std(m, relative_std_floor, absolute_std_floor) for n, m in moments.items()}
        level_std = {n: float(_floored_std(m, relative_std_floor, absolute_std_floor)[0]) for n, m in levels.items()}
        return cls(mean={n: m.mean for n, m in moments.items()}, std=std, metadata=metadata, center_blocks=center,
                   level_mean={n: float(m.mean[0]) for n, m in levels.items()}, level_std=level_std)

    @property
    def block_names(self) -> tuple[str, ...]:
        """Blocks this preprocessor knows, sorted."""
        return tuple(sorted(self.mean))

    @property
    def derived_block_names(self) -> tuple[str, ...]:
        """Names of the derived level blocks :meth:`apply` adds (one per centred block)."""
        return tuple(level_block_name(b) for b in self.center_blocks)

    def output_schema(self, schema: Any) -> Any:
        """The schema of :meth:`apply`'s output for input ``schema`` (what the network is built
        from): ``schema`` plus the derived level blocks; ``schema`` itself without centring."""
        return network_schema(schema, self.center_blocks)

    def apply(self, obs: PreStackedObservations) -> PreStackedObservations:
        """Standardise a batch. numpy in, numpy out; JAX arrays (or tracers) in, JAX out.

        The output holds the input blocks plus, per centred block, its derived level block
        (see the module docstring).

        Raises:
            ValueError: when the blocks or their lengths differ from the fitted ones.
        """
        self._check_blocks(obs)
        xp = np if all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(obs)) else jnp
        values, unc, masks = {}, {}, dict(obs.masks)
        for name, v in obs.values.items():
            mean, std = (xp.asarray(a, dtype=v.dtype) for a in (self.mean[name], self.std[name]))
            if name in self.center_blocks:
                v = self._centre(name, v, obs, xp, values, unc, masks)
            values[name] = (v - mean) / std
            if name in obs.uncertainties:
                unc[name] = obs.uncertainties[name] / std
            if name in obs.masks:
                mask = obs.masks[name]
                values[name] = xp.where(mask, values[name], xp.zeros((), v.dtype))
                if name in unc:
                    unc[name] = xp.where(mask, unc[name], xp.ones((), v.dtype))
        return PreStackedObservations(values=values, uncertainties=unc, masks=masks)

    __call__ = apply

    def _centre(self, name: str, v: Any, obs: PreStackedObservations, xp: Any,
                values: dict, unc: dict, masks: dict) -> Any:
        """Write block ``name``'s standardised level block into the outputs; return ``v`` centred."""
        mask = obs.masks.get(name)
        level, n, valid = _row_levels(v, mask, xp)
        one, zero = xp.ones((), v.dtype), xp.zeros((), v.dtype)
        has_valid = n > 0
        derived = level_block_name(name)
        l_mean, l_std = (xp.asarray(a, dtype=v.dtype) for a in (self.level_mean[name], self.level_std[name]))
        values[derived] = xp.where(has_valid, (level - l_mean) / l_std, zero)
        if name in obs.uncertainties:
            sigma = obs.uncertainties[name]
            sq = xp.sum(xp.where(valid, sigma * sigma, zero), axis=-1, keepdims=True)
            unc[derived] = xp.where(has_valid, xp.sqrt(sq) / xp.maximum(n, one) / l_std, one)
        if mask is not None:
            masks[derived] = has_valid
        return v - level

    def _check_blocks(self, obs: PreStackedObservations) -> None:
        if set(obs.values) != set(self.mean):
            raise ValueError(f"ObservationPreprocessor.apply: observation blocks {sorted(obs.values)}, fitted on {sorted(self.mean)}")
        for name, v in obs.values.items():
            if v.shape[-1] != self.mean[name].shape[0]:
                raise ValueError(f"ObservationPreprocessor.apply: block {name!r} has length {v.shape[-1]}, fitted on length {self.mean[name].shape[0]}")

    def to_payload(self) -> dict[str, Any]:
        """JSON-serialisable state (exact float64 values as JSON numbers)."""
        return {
            "kind": PREPROCESSING_KIND,
            "version": PREPROCESSING_VERSION,
            "blocks": {n: {"mean": self.mean[n].tolist(), "std": self.std[n].tolist()} for n in sorted(self.mean)},
            "center_blocks": list(self.center_blocks),
            "levels": {n: {"mean": self.level_mean[n], "std": self.level_std[n]} for n in self.center_blocks},
            "metadata": _jsonable(self.metadata),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ObservationPreprocessor:
        """Rebuild from :meth:`to_payload` output.

        Raises:
            ValueError: naming the payload field that is missing or wrong.
        """
        if not isinstance(payload, Mapping):
            raise ValueError(f"preprocessing payload: expected a JSON object, got {type(payload).__name__}")
        if payload.get("kind") != PREPROCESSING_KIND:
            raise ValueError(f"preprocessing payload.kind: {payload.get('kind')!r}, expected {PREPROCESSING_KIND!r}")
        version = payload.get("version")
        if isinstance(version, bool) or version not in SUPPORTED_PREPROCESSING_VERSIONS:
            raise ValueError(f"preprocessing payload.version: {version!r}, expected one of {list(SUPPORTED_PREPROCESSING_VERSIONS)}")
        blocks = payload.get("blocks")
        if not isinstance(blocks, Mapping) or not blocks:
            raise ValueError("preprocessing payload.blocks: expected a non-empty object {block: {mean, std}}")
        for name, entry in blocks.items():
            if not isinstance(entry, Mapping) or "mean" not in entry or "std" not in entry:
                raise ValueError(f"preprocessing payload.blocks.{name}: expected an object with 'mean' and 'std' lists")
        center, level_mean, level_std = (), {}, {}
        if version >= 2:  # version 1 predates centring: nothing is centred
            center = payload.get("center_blocks")
            levels = payload.get("levels")
            if not isinstance(center, list) or not all(isinstance(b, str) for b in center):
                raise ValueError("preprocessing payload.center_blocks: expected a list of block names")
            if not isinstance(levels, Mapping) or set(levels) != set(center):
                raise ValueError(f"preprocessing payload.levels: expected an object {{block: {{mean, std}}}} for exactly {center}")
            for name in center:
                entry = levels[name]
                if not isinstance(entry, Mapping) or "mean" not in entry or "std" not in entry:
                    raise ValueError(f"preprocessing payload.levels.{name}: expected an object with 'mean' and 'std'")
                level_mean[name], level_std[name] = float(entry["mean"]), float(entry["std"])
        return cls(
            mean={n: np.asarray(e["mean"], np.float64) for n, e in blocks.items()},
            std={n: np.asarray(e["std"], np.float64) for n, e in blocks.items()},
            metadata=payload.get("metadata") or {},
            center_blocks=tuple(center), level_mean=level_mean, level_std=level_std,
        )


def fit_preprocessing(store: Any, split: str = "train", **kwargs: Any) -> ObservationPreprocessor:
    """Shorthand for :meth:`ObservationPreprocessor.fit`."""
    return ObservationPreprocessor.fit(store, split, **kwargs)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
