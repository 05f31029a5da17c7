"""``sbi-ops sample --importance-sampling``: reweight the amortized posterior by the task likelihood.

Proposals come from the saved posterior; the task that simulated its training data (a built-in
task matched by name, version, parameters and blocks) supplies the likelihood and the prior. The
resampled posterior is what ``sample`` writes; the effective sample size, the sampling efficiency
and the log-evidence with its standard error are printed, and a low efficiency is a warning on
stderr (the amortized posterior is unreliable for that observation).
"""

from __future__ import annotations

import warnings
from typing import Any

import typer


class ImportanceSamplingUnavailable(Exception):
    """Importance sampling cannot run for this model (no matching task, or no likelihood)."""


def parse_task_options(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings (values as YAML scalars or lists) -> task factory keywords.

    Raises:
        ImportanceSamplingUnavailable: an item without ``=`` or with an unreadable value.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ImportanceSamplingUnavailable(f"--task-option expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value.strip())
        except yaml.YAMLError as exc:
            raise ImportanceSamplingUnavailable(f"--task-option {item!r}: cannot read the value ({exc})") from None
    return out


def likelihood_task(posterior: Any, task_options: dict[str, Any]) -> Any:
    """The built-in task the posterior was trained on; it must expose a likelihood.

    Raises:
        ImportanceSamplingUnavailable: the task is unknown, differs from the recorded one, or
            has no likelihood (the message names the task and what is missing).
    """
    from sbi_core.simulators import UnknownTaskError
    from sbi_core.simulators.matching import posterior_builtin_task

    try:
        task = posterior_builtin_task(posterior, **task_options)
    except (UnknownTaskError, ValueError) as exc:
        raise ImportanceSamplingUnavailable(
            f"--importance-sampling needs the task's likelihood, but the model's task "
            f"{posterior.task_name!r} cannot be used: {exc}") from None
    if not task.has_likelihood:
        raise ImportanceSamplingUnavailable(
            f"--importance-sampling needs a likelihood, but task {task.name!r} exposes none; "
            "sample without --importance-sampling")
    return task


def importance_resample(posterior: Any, encoded: Any, blocks: list, task: Any, *, num_samples: int,
                        num_proposals: int, seed: int, efficiency_threshold: float | None = None) -> Any:
    """Run importance sampling, report it, and return the resampled physical-unit draws.

    Raises:
        ImportanceSamplingUnavailable: every proposal got zero weight (nothing to resample).
    """
    import jax

    from sbi_core.importance_sampling import LowImportanceSamplingEfficiencyWarning, importance_sample_posterior

    options = {} if efficiency_threshold is None else {"efficiency_threshold": efficiency_threshold}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LowImportanceSamplingEfficiencyWarning)
        result = importance_sample_posterior(posterior, encoded, task, blocks, jax.random.PRNGKey(seed),
                                             num_proposals, num_resampled=num_samples, **options)
    report(result)
    for warning in caught:
        if issubclass(warning.category, LowImportanceSamplingEfficiencyWarning):
            typer.echo(f"warning: {warning.message}", err=True)
    if result.resampled.shape[0] == 0:
        raise ImportanceSamplingUnavailable(
            f"every one of the {result.num_samples} proposals has zero importance weight (outside the "
            "prior or a non-finite likelihood/density): no resampled posterior to write")
    return result.resampled


def report(result: Any) -> None:
    """Print ESS, efficiency, log-evidence +- standard error and the invalid-draw count."""
    typer.echo(f"importance sampling: ESS {result.effective_sample_size:.1f} of {result.num_samples} "
               f"proposals, sampling efficiency {result.sampling_efficiency:.2%}")
    typer.echo(f"log-evidence {result.log_evidence:.4f} +- {result.log_evidence_standard_error:.4f}"
               + (f" ({result.num_invalid} proposals with zero weight)" if result.num_invalid else ""))
