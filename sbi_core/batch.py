"""The unit of data every estimator trains on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jaxtyping import Array, Float

from sbi_core.observation import PreStackedObservations

__all__ = ["PosteriorBatch"]


@dataclass(frozen=True, eq=False)  # array fields: identity equality, hashable
class PosteriorBatch:
    """A batch of (parameters, observations) pairs.

    Attributes:
        parameters: ``(B, P)`` parameters in physical units (numpy or JAX).
        observations: The matching observations, batch axis first.
        metadata: Where the batch came from, e.g. ``{"split": "train", "indices": (B,) int64}``.
    """

    parameters: Float[np.ndarray | Array, "B P"]
    observations: PreStackedObservations
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_params = int(np.shape(self.parameters)[0]) if np.ndim(self.parameters) == 2 else None
        if n_params is None:
            raise ValueError(f"PosteriorBatch.parameters: expected shape (B, P), got {np.shape(self.parameters)}")
        if n_params != self.observations.batch_size:
            raise ValueError(
                f"PosteriorBatch: parameters have {n_params} rows but observations have "
                f"{self.observations.batch_size}; expected the same batch size"
            )

    @property
    def batch_size(self) -> int:
        """Number of pairs ``B``."""
        return int(np.shape(self.parameters)[0])
