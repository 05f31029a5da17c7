"""Amortized posteriors against classical (nested-sampling) reference retrievals.

Metrics (``metrics``): C2ST (Lopez-Paz & Oquab 2017, sbibm recipe), per-marginal Jensen-Shannon
divergence in millinats, credible-interval overlap, wall-time ratio. References (``reference``):
dynesty static nested sampling (Speagle 2020) or nautilus (Lange 2023, batched likelihood calls). Cases and comparisons (``suite``).
"""

from sbi_core.benchmark.metrics import (
    c2st,
    credible_interval_overlap,
    jensen_shannon_millinats,
    wall_time_ratio,
)
from sbi_core.benchmark.posterior_benchmark import (
    amortized_sampler,
    benchmark_posterior,
    cases_from_store,
)
from sbi_core.benchmark.nautilus_reference import nautilus_reference
from sbi_core.benchmark.reference import (
    REFERENCE_SAMPLERS,
    ReferenceRetrieval,
    gaussian_log_likelihood,
    nested_sampling_reference,
    prior_transform_from_priors,
    task_reference,
)
from sbi_core.benchmark.suite import (
    BenchmarkComparison,
    BenchmarkMetrics,
    RetrievalBenchmarkCase,
    RetrievalBenchmarkSuite,
    compare_samples,
)

__all__ = [
    "REFERENCE_SAMPLERS",
    "BenchmarkComparison",
    "BenchmarkMetrics",
    "ReferenceRetrieval",
    "RetrievalBenchmarkCase",
    "RetrievalBenchmarkSuite",
    "amortized_sampler",
    "benchmark_posterior",
    "c2st",
    "cases_from_store",
    "compare_samples",
    "credible_interval_overlap",
    "gaussian_log_likelihood",
    "jensen_shannon_millinats",
    "nautilus_reference",
    "nested_sampling_reference",
    "prior_transform_from_priors",
    "task_reference",
    "wall_time_ratio",
]
