"""Posterior estimator interfaces and concrete flow backends (re-export shim).

This module re-exports all public symbols from the split posterior sub-modules for backward
compatibility. New code should import from :mod:`sbi_core.posterior_base`,
:mod:`sbi_core.flow_posterior`, or :mod:`sbi_core.flow_matching_posterior` directly.
"""

from __future__ import annotations

from sbi_core.flow_posterior import (
    ConditionalAutoregressiveFlowPosterior,
    ConditionalFlowPosterior,
    ConditionalNeuralAutoregressiveFlowPosterior,
    ConditionalSplineFlowPosterior,
)
from sbi_core.posterior_base import (
    POSTERIOR_METADATA_SCHEMA_VERSION,
    PersistentPosteriorEstimator,
    PosteriorBatch,
    PosteriorEstimator,
    PosteriorSamples,
    TrainingArtifacts,
)

__all__ = [
    "POSTERIOR_METADATA_SCHEMA_VERSION",
    "ConditionalAutoregressiveFlowPosterior",
    "ConditionalFlowPosterior",
    "ConditionalNeuralAutoregressiveFlowPosterior",
    "ConditionalSplineFlowPosterior",
    "PersistentPosteriorEstimator",
    "PosteriorBatch",
    "PosteriorEstimator",
    "PosteriorSamples",
    "TrainingArtifacts",
]

try:  # the flow-matching backend lives in its own module (built separately)
    from sbi_core.flow_matching_posterior import FlowMatchingPosterior  # noqa: F401
except ImportError as _exc:  # pragma: no cover - only while that module is absent
    if getattr(_exc, "name", None) != "sbi_core.flow_matching_posterior":
        raise
else:
    __all__.append("FlowMatchingPosterior")
