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

__all__.append("FlowMatchingPosterior")


def __getattr__(name: str):
    """``FlowMatchingPosterior`` on first use (PEP 562): its module pulls in diffrax, optimistix
    and lineax (~0.5 s of imports on 2 cores), which a flow-only fit or CLI call never needs."""
    if name == "FlowMatchingPosterior":
        from sbi_core.flow_matching_posterior import FlowMatchingPosterior

        globals()[name] = FlowMatchingPosterior
        return FlowMatchingPosterior
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
