"""Benchmark a trained posterior against nested-sampling retrievals of held-out observations.

Issue 6's acceptance run: for a few test observations of a store simulated by a task with a
likelihood, run a dynesty reference retrieval per observation and compare the amortized posterior
with it (JSD per marginal, C2ST, interval overlap, wall-time ratio), plus one corner plot per case.
The posterior is duck-typed (seed API: ``encode_observation``, ``sample_posterior``,
``to_physical``), so this module does not import the posterior classes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sbi_core.benchmark.reference import task_reference
from sbi_core.benchmark.suite import (
    BenchmarkComparison,
    RetrievalBenchmarkCase,
    RetrievalBenchmarkSuite,
)


def cases_from_store(store: Any, *, split: str = "test", num_cases: int = 3) -> tuple[RetrievalBenchmarkCase, ...]:
    """The first ``num_cases`` observations of ``split`` as benchmark cases.

    Each case's observation is ``{block: {"values": (L,), "uncertainties": (L,)}}`` (the form
    ``SBITask.log_likelihood`` takes) and ``true_parameters`` the simulating parameters.
    """
    indices = np.asarray(store.split_indices(split))[:num_cases]
    parameters, observations = store.read(indices)
    cases = []
    for row, index in enumerate(indices):
        observation = {}
        for spec in store.observation_schema.blocks:
            block = {"values": np.asarray(observations.values[spec.name][row], dtype=np.float64)}
            if spec.name in observations.uncertainties:
                block["uncertainties"] = np.asarray(observations.uncertainties[spec.name][row],
                                                    dtype=np.float64)
            observation[spec.name] = block
        cases.append(RetrievalBenchmarkCase(f"{split}-{int(index)}", observation,
                                            np.asarray(parameters[row], dtype=np.float64),
                                            metadata={"store_index": int(index)}))
    return tuple(cases)


def amortized_sampler(posterior: Any, store: Any, *, num_samples: int = 5000, seed: int = 0):
    """``case -> (N, P)`` physical-unit draws of ``posterior`` (encode + sample + convert).

    One warm-up call compiles the model first, so the timed calls measure a retrieval, not JIT
    compilation (a served model is compiled once).
    """
    from sbi_core.observation import build_observation_blocks_from_sample

    def sample(case: RetrievalBenchmarkCase) -> np.ndarray:
        blocks = build_observation_blocks_from_sample(store.observation_schema, case.observation)
        draws = posterior.sample_posterior(posterior.encode_observation(blocks), num_samples, seed)
        return np.asarray(posterior.to_physical(draws).samples, dtype=np.float64)

    return sample


def benchmark_posterior(
    posterior: Any,
    store: Any,
    task: Any,
    *,
    split: str = "test",
    num_cases: int = 3,
    num_samples: int = 5000,
    nlive: int | None = None,
    seed: int = 0,
    output: str | Path | None = None,
    reference_sampler: str = "dynesty",
    reference_options: Mapping[str, Any] | None = None,
) -> BenchmarkComparison:
    """Compare ``posterior`` with dynesty retrievals of the first ``num_cases`` test observations.

    Args:
        posterior: A trained posterior (seed API).
        store: The simulation store the cases come from.
        task: The ``SBITask`` that simulated the store (needs ``has_likelihood``).
        split: Split of the cases.
        num_cases: Number of observations.
        num_samples: Amortized draws per case.
        nlive: Live points of the reference sampler (its default when None).
        seed: Sampler and C2ST seed.
        output: Directory for ``benchmark.json``, ``benchmark.md`` and ``corner_<case>.png``.
        reference_sampler: ``"dynesty"`` or ``"nautilus"`` (see :func:`task_reference`).
        reference_options: Further keywords of the reference sampler (e.g. ``{"maxcall": 10**6}``).

    Returns:
        A :class:`BenchmarkComparison`.
    """
    names = tuple(store.parameter_names)
    suite = RetrievalBenchmarkSuite(names, cases_from_store(store, split=split, num_cases=num_cases),
                                    seed=seed)
    sampler = amortized_sampler(posterior, store, num_samples=num_samples, seed=seed)
    sampler(suite.cases[0])  # warm-up: compile outside the timed calls
    options = dict(reference_options or {})
    suite = suite.run_references(lambda case: task_reference(
        task, case.observation, nlive=nlive, seed=seed, sampler=reference_sampler, **options))
    draws, seconds = {}, {}
    for case in suite.cases:
        start = time.perf_counter()
        draws[case.name] = sampler(case)
        seconds[case.name] = time.perf_counter() - start
    comparison = suite.compare(draws, seconds)
    if output is not None:
        _write(comparison, suite, draws, Path(output))
    return comparison


def _write(comparison: BenchmarkComparison, suite: RetrievalBenchmarkSuite,
           draws: dict[str, np.ndarray], output: Path) -> None:
    """benchmark.json, benchmark.md (the table) and one corner plot per case."""
    from sbi_core.plotting import plot_corner

    output.mkdir(parents=True, exist_ok=True)
    (output / "benchmark.json").write_text(comparison.to_json(indent=2))
    (output / "benchmark.md").write_text(comparison.table() + "\n")
    for case in suite.cases:
        plot_corner(draws[case.name], case.reference.samples, suite.parameter_names,
                    output / f"corner_{case.name}.png", truth=case.true_parameters,
                    title=f"{case.name}: amortized vs nested sampling")
