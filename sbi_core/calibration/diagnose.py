"""Calibrate a trained posterior on a held-out split of a simulation store.

The library side of ``sbi-ops diagnose`` (and of the Prefect diagnostics task): pick the
observations, draw the arrays (:mod:`sbi_core.calibration.posterior_arrays`), run every
diagnostic, and write ``report.json`` plus one PNG per topic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sbi_core.calibration.posterior_arrays import (
    compiled_parameter_ops,
    blocks_from_stacked,
    posterior_calibration_arrays,
)
from sbi_core.calibration.reports import CalibrationThresholds, SimulationBasedCalibrationReport
from sbi_core.calibration.runner import run_calibration


def select_observations(store: Any, split: str, num_observations: int | None) -> np.ndarray:
    """The first ``num_observations`` indices of ``split`` (deterministic; all if None)."""
    indices = np.asarray(store.split_indices(split))
    if indices.size < 2:
        raise ValueError(f"split {split!r} of {store.path} has {indices.size} samples; "
                         "calibration needs at least 2")
    return indices if num_observations is None else indices[:num_observations]


def check_compatible(posterior: Any, store: Any) -> None:
    """Raise ``ValueError`` when the posterior was trained on other parameters than the store's."""
    mine, theirs = tuple(posterior.parameter_names), tuple(store.parameter_names)
    if mine != theirs:
        raise ValueError(f"the posterior infers parameters {list(mine)} but the store holds "
                         f"{list(theirs)}")


def diagnose_posterior(
    posterior: Any,
    store: Any,
    *,
    split: str = "test",
    num_observations: int | None = 1000,
    num_samples: int = 1000,
    seed: int = 0,
    thresholds: CalibrationThresholds | None = None,
    with_log_prob: bool = True,
) -> SimulationBasedCalibrationReport:
    """Coverage, SBC, TARP and P-P of ``posterior`` on ``split`` of ``store``, in physical units.

    Args:
        posterior: A trained posterior (seed API).
        store: An open ``SimulationStore``.
        split: ``"train"``, ``"validation"``, ``"test"`` or ``"all"``.
        num_observations: Observations to use (the first of the split); None for all.
        num_samples: Posterior draws per observation.
        seed: Sampling and TARP seed.
        thresholds: Pass/fail thresholds.
        with_log_prob: Use the posterior's density for HPD coverage (else a Gaussian fit).

    Returns:
        The report; its ``metadata`` names the store, split, fingerprint and model.
    """
    check_compatible(posterior, store)
    indices = select_observations(store, split, num_observations)
    parameters, observations = store.read(indices)
    blocks = blocks_from_stacked(store.observation_schema, observations)
    arrays = posterior_calibration_arrays(posterior, parameters, blocks, num_samples=num_samples,
                                          seed=seed, with_log_prob=with_log_prob)
    prior_variance = _prior_variance(posterior)
    metadata = {
        "store": str(store.path), "split": split, "store_fingerprint": store.fingerprint,
        "task": f"{store.task_name}@{store.task_version}",
        "estimator_class": type(posterior).__name__, "parameter_space": "physical",
        "sampling_seconds": arrays.sampling_seconds,
    }
    return run_calibration(arrays.samples, arrays.true_parameters, arrays.log_prob_samples,
                           arrays.log_prob_true, parameter_names=store.parameter_names,
                           thresholds=thresholds, prior_variance=prior_variance, seed=seed,
                           metadata=metadata)


def _prior_variance(posterior: Any) -> np.ndarray | None:
    """Prior variance per parameter from the posterior's priors (None: use the truths' variance)."""
    transform = getattr(posterior, "parameter_transform", None)
    if transform is None:
        return None
    import jax

    sample = compiled_parameter_ops()["sample_prior"]  # one compiled call, not one per JAX primitive
    draws = np.asarray(sample(transform, jax.random.PRNGKey(0), 20_000), dtype=np.float64)
    var = draws.var(axis=0)
    return var if np.all(np.isfinite(var)) and np.all(var > 0) else None


def write_diagnostics(report: SimulationBasedCalibrationReport, output: str | Path) -> dict[str, Path]:
    """Write ``report.json`` and the coverage, SBC, TARP and P-P PNGs into ``output``."""
    from sbi_core.plotting import plot_calibration_report

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / "report.json"
    path.write_text(report.to_json(indent=2))
    return {"report": path, **plot_calibration_report(report, output)}


def matching_task(store: Any) -> tuple[Any, str]:
    """The built-in task that simulated ``store`` (default options), or None and why not.

    Stores record only the task's name and version, so the built-in task (with its default
    options) is accepted only when its parameters (names, priors) and blocks (names, lengths)
    equal the store's (:func:`sbi_core.simulators.matching.matching_builtin_task`).
    """
    from sbi_core.simulators import UnknownTaskError
    from sbi_core.simulators.matching import matching_builtin_task

    manifest = store.manifest
    try:
        task = matching_builtin_task(store.task_name, store.task_version, manifest["parameters"],
                                     manifest["blocks"])
    except (UnknownTaskError, ValueError) as exc:
        return None, str(exc)
    return task, ""


def predictive_diagnostics(
    posterior: Any,
    store: Any,
    task: Any,
    output: str | Path,
    *,
    split: str = "test",
    num_observations: int = 50,
    num_draws: int = 200,
    seed: int = 0,
) -> tuple[Any, Path]:
    """Posterior-predictive check of the first block on ``split``; writes ``predictive.png``.

    Replicates come from ``task.simulate`` (which adds the task's own observational noise), so
    no extra noise is added. The plot shows the first observation with its 68/95% bands.

    Returns:
        ``(PosteriorPredictiveReport, png_path)``.
    """
    import jax

    from sbi_core.calibration.predictive import replicate_observations, summarize_replicates
    from sbi_core.plotting import plot_posterior_predictive

    indices = select_observations(store, split, num_observations)
    parameters, observations = store.read(indices)
    arrays = posterior_calibration_arrays(
        posterior, parameters, blocks_from_stacked(store.observation_schema, observations),
        num_samples=num_draws, seed=seed, with_log_prob=False)
    spec = store.observation_schema.blocks[0]
    key = jax.random.PRNGKey(seed)

    def simulator(theta: np.ndarray) -> np.ndarray:
        return np.asarray(task.simulate(key, theta)[spec.name]["values"])

    replicated = replicate_observations(arrays.samples, simulator, add_noise=False)
    observed = np.asarray(observations.values[spec.name], dtype=np.float64)
    report = summarize_replicates(replicated, observed, block_name=spec.name, noise_added=False)
    coords = spec.coordinates if spec.coordinates is not None else np.arange(spec.length)
    unc = observations.uncertainties.get(spec.name)
    png = plot_posterior_predictive(
        np.asarray(coords), observed[0], replicated[0], Path(output) / "predictive.png",
        uncertainties=None if unc is None else np.asarray(unc[0]),
        xlabel="wavelength [micron]" if spec.coordinates is not None else "element",
        ylabel=spec.name, title=f"{store.task_name}: {split} observation {int(indices[0])}")
    return report, png
