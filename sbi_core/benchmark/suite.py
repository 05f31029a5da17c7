"""Benchmark cases: amortized posterior draws against classical reference retrievals.

A :class:`RetrievalBenchmarkSuite` holds :class:`RetrievalBenchmarkCase` s (one observation and,
once run, its nested-sampling reference). :meth:`RetrievalBenchmarkSuite.compare` scores the
amortized draws of each case with :class:`BenchmarkMetrics` (per-marginal JSD in millinats,
C2ST, credible-interval overlap, wall-time ratio) and collects them in a
:class:`BenchmarkComparison` with a printable table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sbi_core.benchmark.metrics import (
    c2st,
    credible_interval_overlap,
    jensen_shannon_millinats,
    wall_time_ratio,
)
from sbi_core.benchmark.reference import ReferenceRetrieval
from sbi_core.calibration._serialization import to_jsonable


@dataclass(frozen=True)
class RetrievalBenchmarkCase:
    """One observation to retrieve, with its reference retrieval once it has run.

    Attributes:
        name: Unique case name (e.g. ``"test-17"``).
        observation: The observation, in whatever form the likelihood and the posterior take
            (e.g. ``{block: {"values": ..., "uncertainties": ...}}``).
        true_parameters: Parameters that generated the observation ``(P,)``, if known.
        reference: The reference retrieval, or None before :meth:`RetrievalBenchmarkSuite.run_references`.
        metadata: Free-form context.
    """

    name: str
    observation: Any
    true_parameters: np.ndarray | None = None
    reference: ReferenceRetrieval | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchmarkMetrics:
    """Amortized vs reference posterior for one case.

    Attributes:
        case_name: The case.
        parameter_names: Parameter names in column order.
        jsd_millinats: Jensen-Shannon divergence per marginal (0 same, 693 disjoint).
        c2st: Classifier two-sample accuracy (0.5 same, 1.0 disjoint).
        interval_overlap: Intersection over union of the central 90% intervals per marginal.
        amortized_wall_time_s: Seconds to draw the amortized samples.
        reference_wall_time_s: Seconds of the reference retrieval.
        wall_time_ratio: ``reference / amortized`` (the speed-up).
        reference_log_evidence: ``ln Z`` of the reference.
        reference_log_evidence_error: Its error.
        num_amortized_samples: Amortized draws used.
        num_reference_samples: Reference draws used.
    """

    case_name: str
    parameter_names: tuple[str, ...]
    jsd_millinats: dict[str, float]
    c2st: float
    interval_overlap: dict[str, float]
    amortized_wall_time_s: float
    reference_wall_time_s: float
    wall_time_ratio: float
    reference_log_evidence: float
    reference_log_evidence_error: float
    num_amortized_samples: int
    num_reference_samples: int

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-ready dict."""
        return to_jsonable(self)


def compare_samples(
    case: RetrievalBenchmarkCase,
    samples: np.ndarray,
    amortized_wall_time_s: float,
    parameter_names: Sequence[str],
    *,
    seed: int = 0,
    c2st_max_samples: int | None = 2000,
) -> BenchmarkMetrics:
    """Score one case's amortized draws ``(N, P)`` against its reference retrieval."""
    if case.reference is None:
        raise ValueError(f"case {case.name!r} has no reference retrieval; run it first")
    ref, names = case.reference, tuple(parameter_names)
    jsd = jensen_shannon_millinats(samples, ref.samples)
    overlap = credible_interval_overlap(samples, ref.samples)
    return BenchmarkMetrics(
        case_name=case.name,
        parameter_names=names,
        jsd_millinats=dict(zip(names, jsd.tolist())),
        c2st=c2st(samples, ref.samples, seed=seed, max_samples=c2st_max_samples),
        interval_overlap=dict(zip(names, overlap.tolist())),
        amortized_wall_time_s=float(amortized_wall_time_s),
        reference_wall_time_s=ref.wall_time_s,
        wall_time_ratio=wall_time_ratio(ref.wall_time_s, amortized_wall_time_s),
        reference_log_evidence=ref.log_evidence,
        reference_log_evidence_error=ref.log_evidence_error,
        num_amortized_samples=int(np.shape(samples)[0]),
        num_reference_samples=int(ref.samples.shape[0]),
    )


@dataclass(frozen=True)
class BenchmarkComparison:
    """Metrics of every case, with a printable table and JSON export."""

    parameter_names: tuple[str, ...]
    metrics: tuple[BenchmarkMetrics, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Means over cases: max-marginal JSD, C2ST, wall-time ratio."""
        return {
            "num_cases": len(self.metrics),
            "mean_max_jsd_millinats": float(np.mean([max(m.jsd_millinats.values())
                                                     for m in self.metrics])),
            "mean_c2st": float(np.mean([m.c2st for m in self.metrics])),
            "mean_wall_time_ratio": float(np.mean([m.wall_time_ratio for m in self.metrics])),
        }

    def table(self) -> str:
        """A Markdown table: one row per case, JSD per parameter, C2ST, speed-up."""
        head = ["case", *[f"JSD {n} [mnat]" for n in self.parameter_names], "C2ST",
                "min IoU90", "ref s", "amortized s", "speed-up"]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in self.metrics:
            cells = [m.case_name, *[f"{m.jsd_millinats[n]:.1f}" for n in self.parameter_names],
                     f"{m.c2st:.3f}", f"{min(m.interval_overlap.values()):.2f}",
                     f"{m.reference_wall_time_s:.3g}", f"{m.amortized_wall_time_s:.3g}",
                     f"{m.wall_time_ratio:.0f}x"]
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-ready dict with the summary."""
        payload = to_jsonable(self)
        payload["summary"] = self.summary()
        return payload

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)


ReferenceRunner = Callable[[RetrievalBenchmarkCase], ReferenceRetrieval]
AmortizedSampler = Callable[[RetrievalBenchmarkCase], np.ndarray]


@dataclass(frozen=True)
class RetrievalBenchmarkSuite:
    """A set of benchmark cases sharing one parameter list.

    Attributes:
        parameter_names: Parameter names in column order.
        cases: The cases.
        seed: Seed of the C2ST classifier and folds.
    """

    parameter_names: tuple[str, ...]
    cases: tuple[RetrievalBenchmarkCase, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        names = [c.name for c in self.cases]
        if len(set(names)) != len(names):
            raise ValueError(f"case names must be unique; got {names}")

    def run_references(self, runner: ReferenceRunner) -> RetrievalBenchmarkSuite:
        """A new suite whose cases carry ``runner(case)``'s reference retrieval.

        ``runner`` is e.g. ``lambda case: task_reference(task, case.observation, nlive=500)``.
        Cases that already have a reference keep it.
        """
        cases = tuple(c if c.reference is not None else replace(c, reference=runner(c))
                      for c in self.cases)
        return replace(self, cases=cases)

    def compare(self, sampler: AmortizedSampler | Mapping[str, np.ndarray],
                wall_times: Mapping[str, float] | None = None) -> BenchmarkComparison:
        """Score the amortized posterior against every case's reference.

        Args:
            sampler: Either a callable ``case -> (N, P) draws`` (timed here with
                ``time.perf_counter``) or a mapping case name -> draws with ``wall_times``.
            wall_times: Seconds per case when ``sampler`` is a mapping.

        Returns:
            A :class:`BenchmarkComparison`.
        """
        import time

        metrics = []
        for case in self.cases:
            if callable(sampler):
                start = time.perf_counter()
                draws = np.asarray(sampler(case))
                seconds = time.perf_counter() - start
            else:
                if wall_times is None or case.name not in sampler:
                    raise ValueError(f"no amortized draws or wall time for case {case.name!r}")
                draws, seconds = np.asarray(sampler[case.name]), wall_times[case.name]
            metrics.append(compare_samples(case, draws, seconds, self.parameter_names,
                                           seed=self.seed))
        return BenchmarkComparison(self.parameter_names, tuple(metrics))
