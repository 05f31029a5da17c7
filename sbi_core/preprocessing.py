"""Per-element standardisation of observation blocks, fitted on the train split only.

``x' = (x - mean) / std`` per block element; uncertainties become ``sigma / std`` (the same
transformed units, so ``x' +- sigma'`` is the standardised ``x +- sigma``). Masked elements are
set to value 0 and uncertainty 1 (a neutral, positive value, so an encoder's ``log(sigma)`` stays
finite). Statistics are streamed chunk by chunk with Chan et al.'s parallel merge of Welford
accumulators, so fitting never loads the store into memory.

The fitted state is a JSON payload saved with every model and applied identically at training
and inference; :meth:`ObservationPreprocessor.apply` works on numpy arrays and inside ``jax.jit``.

References:
    Chan, Golub & LeVeque (1979), "Updating formulae and a pairwise algorithm for computing
    sample variances".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.observation import PreStackedObservations

__all__ = ["ObservationPreprocessor", "fit_preprocessing", "PREPROCESSING_KIND", "PREPROCESSING_VERSION"]

PREPROCESSING_KIND = "per_element_standardization"
PREPROCESSING_VERSION = 1
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


@dataclass(frozen=True, eq=False)
class ObservationPreprocessor:
    """Fitted per-element standardisation of every block.

    Hashed by identity (``eq=False``) so it can be a static argument of ``eqx.filter_jit``.

    Attributes:
        mean: ``{block: (L,)}`` float64 means over valid training elements.
        std: ``{block: (L,)}`` float64 stds (degenerate elements set to 1).
        metadata: Fit provenance (split, sample count, store fingerprint, floors).
    """

    mean: Mapping[str, np.ndarray]
    std: Mapping[str, np.ndarray]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.mean) != set(self.std) or not self.mean:
            raise ValueError(f"ObservationPreprocessor: mean blocks {sorted(self.mean)} and std blocks {sorted(self.std)} must match and be non-empty")
        for name in self.mean:
            mean, std = np.asarray(self.mean[name], np.float64), np.asarray(self.std[name], np.float64)
            if mean.ndim != 1 or mean.shape != std.shape:
                raise ValueError(f"ObservationPreprocessor block {name!r}: mean {mean.shape} and std {std.shape} must be equal 1-D shapes")
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
                raise ValueError(f"ObservationPreprocessor block {name!r}: mean must be finite and std finite and > 0")
        object.__setattr__(self, "mean", {k: np.asarray(v, np.float64) for k, v in self.mean.items()})
        object.__setattr__(self, "std", {k: np.asarray(v, np.float64) for k, v in self.std.items()})
        object.__setattr__(self, "metadata", dict(self.metadata))

    @classmethod
    def fit(
        cls,
        store: Any,
        split: str = "train",
        *,
        relative_std_floor: float = DEFAULT_RELATIVE_STD_FLOOR,
        absolute_std_floor: float = DEFAULT_ABSOLUTE_STD_FLOOR,
    ) -> ObservationPreprocessor:
        """Fit on ``split`` of a store (anything with ``iter_chunks(split)``), chunk by chunk.

        Raises:
            ValueError: when the split has no samples.
        """
        moments: dict[str, _Moments] = {}
        n_rows = 0
        for _, _, obs in store.iter_chunks(split):
            n_rows += obs.batch_size
            for name, values in obs.values.items():
                chunk = _Moments.of_chunk(values, obs.masks.get(name))
                moments[name] = moments[name].merge(chunk) if name in moments else chunk
        if n_rows == 0:
            raise ValueError(f"ObservationPreprocessor.fit: split {split!r} of {getattr(store, 'path', store)!r} has no samples")
        metadata = {
            "split": split,
            "n_samples": n_rows,
            "store_fingerprint": getattr(store, "fingerprint", None),
            "relative_std_floor": relative_std_floor,
            "absolute_std_floor": absolute_std_floor,
        }
        std = {n: _floored_std(m, relative_std_floor, absolute_std_floor) for n, m in moments.items()}
        return cls(mean={n: m.mean for n, m in moments.items()}, std=std, metadata=metadata)

    @property
    def block_names(self) -> tuple[str, ...]:
        """Blocks this preprocessor knows, sorted."""
        return tuple(sorted(self.mean))

    def apply(self, obs: PreStackedObservations) -> PreStackedObservations:
        """Standardise a batch. numpy in, numpy out; JAX arrays (or tracers) in, JAX out.

        Raises:
            ValueError: when the blocks or their lengths differ from the fitted ones.
        """
        self._check_blocks(obs)
        xp = np if all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(obs)) else jnp
        values, unc = {}, {}
        for name, v in obs.values.items():
            mean, std = (xp.asarray(a, dtype=v.dtype) for a in (self.mean[name], self.std[name]))
            values[name] = (v - mean) / std
            if name in obs.uncertainties:
                unc[name] = obs.uncertainties[name] / std
            if name in obs.masks:
                mask = obs.masks[name]
                values[name] = xp.where(mask, values[name], xp.zeros((), v.dtype))
                if name in unc:
                    unc[name] = xp.where(mask, unc[name], xp.ones((), v.dtype))
        return PreStackedObservations(values=values, uncertainties=unc, masks=dict(obs.masks))

    __call__ = apply

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
        if payload.get("version") != PREPROCESSING_VERSION:
            raise ValueError(f"preprocessing payload.version: {payload.get('version')!r}, expected {PREPROCESSING_VERSION}")
        blocks = payload.get("blocks")
        if not isinstance(blocks, Mapping) or not blocks:
            raise ValueError("preprocessing payload.blocks: expected a non-empty object {block: {mean, std}}")
        for name, entry in blocks.items():
            if not isinstance(entry, Mapping) or "mean" not in entry or "std" not in entry:
                raise ValueError(f"preprocessing payload.blocks.{name}: expected an object with 'mean' and 'std' lists")
        return cls(
            mean={n: np.asarray(e["mean"], np.float64) for n, e in blocks.items()},
            std={n: np.asarray(e["std"], np.float64) for n, e in blocks.items()},
            metadata=payload.get("metadata") or {},
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
