"""``sbi-ops diagnose MODEL_DIR STORE``: calibration report, plots, and a CI gate.

Exit codes: 0 every threshold passed, 1 a threshold failed, 2 usage or input error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SPLITS = ("train", "validation", "test", "all")


def _fail(message: str) -> typer.Exit:
    """Print ``error: message`` to stderr; return the usage-error exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def load_posterior(model_dir: Path):
    """Load a saved posterior directory (any registered estimator class)."""
    from sbi_core.posterior_base import PersistentPosteriorEstimator

    return PersistentPosteriorEstimator.load(str(model_dir))


def summary_table(report) -> str:
    """A short plain-text table of every gated statistic and the per-parameter summaries."""
    t, cov, s = report.thresholds, report.coverage, report.summary()
    failed = {f.split(":", 1)[0] for f in report.failures}
    n_tests = 2 * len(report.parameter_names)
    limit = cov.calibration_error_floor + t.max_calibration_error_excess
    rows = [
        ("HPD calibration error", f"{cov.calibration_error:.4f}", f"<= {limit:.4f}", "coverage"),
        ("SBC min p-value", f"{s['sbc_min_p_value']:.3g}", f">= {t.sbc_alpha / n_tests:.3g}", "sbc"),
        ("TARP KS p-value", f"{report.tarp.ks_p_value:.3g}", f">= {t.tarp_alpha}", "tarp"),
        ("TARP ATC", f"{report.tarp.atc:+.4f}", f"|.| <= {t.max_abs_tarp_atc}", "tarp"),
    ]
    lines = [f"{report.num_observations} observations x {report.num_samples} draws "
             f"(HPD density: {cov.density_source})",
             f"{'check':<24}{'value':>12}  {'threshold':<18}verdict"]
    for name, value, threshold, key in rows:
        lines.append(f"{name:<24}{value:>12}  {threshold:<18}{'FAIL' if key in failed else 'ok'}")
    lines.append(f"{'parameter':<24}{'z mean':>8}{'z sd':>8}{'contraction':>13}{'SBC KS p':>10}")
    for i, name in enumerate(report.parameter_names):
        lines.append(f"{name:<24}{report.pp.z_score_mean[i]:>8.2f}{report.pp.z_score_std[i]:>8.2f}"
                     f"{report.pp.contraction[i]:>13.2f}{report.sbc.ks_p_value[i]:>10.3g}")
    lines.append("PASSED" if report.passed else "FAILED:\n  " + "\n  ".join(report.failures))
    return "\n".join(lines)


def _predictive(posterior, store, output: Path, *, split: str, seed: int) -> dict[str, Path]:
    """Run the posterior-predictive check if a matching simulator exists; report, never gate."""
    from sbi_core.calibration.diagnose import matching_task, predictive_diagnostics

    task, reason = matching_task(store)
    if task is None:
        typer.echo(f"posterior predictive: skipped ({reason})")
        return {}
    report, png = predictive_diagnostics(posterior, store, task, output, split=split, seed=seed)
    path = output / "predictive.json"
    path.write_text(report.to_json(indent=2))
    s = report.summary()
    typer.echo(f"posterior predictive ({s['block_name']}, {report.num_observations} observations): "
               f"{s['fraction_in_68']:.0%} of points in 68% bands, {s['fraction_in_95']:.0%} in "
               f"95% bands, median reduced chi2 {s['median_reduced_chi2']:.2f}")
    return {"predictive": path, "predictive_plot": png}


def diagnose(
    model_dir: Annotated[Path, typer.Argument(help="Saved posterior directory (metadata.json + weights).")],
    store: Annotated[Path, typer.Argument(help="Simulation store with held-out simulations.")],
    split: Annotated[str, typer.Option("--split", help=f"One of {', '.join(SPLITS)}.")] = "test",
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for report.json and plots.")] = Path("diagnostics"),
    num_observations: Annotated[Optional[int], typer.Option("--num-observations", "-n", help="Observations of the split to use (default 1000; first N).")] = 1000,
    num_samples: Annotated[int, typer.Option("--num-samples", help="Posterior draws per observation.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Sampling and TARP seed.")] = 0,
    max_calibration_error: Annotated[Optional[float], typer.Option("--max-calibration-error", help="Absolute cap on the HPD calibration error (e.g. 0.02).")] = None,
    calibration_error_excess: Annotated[float, typer.Option("--calibration-error-excess", help="Allowed excess of the calibration error over its Monte-Carlo floor.")] = 0.01,
    sbc_alpha: Annotated[float, typer.Option("--sbc-alpha", help="Family-wise level of the SBC tests (Bonferroni).")] = 0.01,
    tarp_alpha: Annotated[float, typer.Option("--tarp-alpha", help="Level of the TARP KS test.")] = 0.01,
    max_abs_tarp_atc: Annotated[float, typer.Option("--max-tarp-atc", help="Largest allowed |TARP ATC|.")] = 0.05,
    log_prob: Annotated[bool, typer.Option("--log-prob/--no-log-prob", help="Use the posterior density for HPD coverage (else a Gaussian fit to the draws).")] = True,
    predictive: Annotated[bool, typer.Option("--predictive/--no-predictive", help="Posterior-predictive check with the built-in simulator, when it matches the store (not gated).")] = True,
) -> None:
    """Calibrate a trained posterior on held-out simulations: coverage, SBC, TARP, P-P."""
    if not model_dir.is_dir():
        raise _fail(f"no such model directory: {model_dir}")
    if not store.exists():
        raise _fail(f"no such store: {store}")
    if split not in SPLITS:
        raise _fail(f"--split must be one of {list(SPLITS)}, got {split!r}")
    if (num_observations is not None and num_observations < 2) or num_samples < 2:
        raise _fail("--num-observations and --num-samples must be at least 2")
    from sbi_core.calibration import CalibrationThresholds
    from sbi_core.calibration.diagnose import diagnose_posterior, write_diagnostics
    from sbi_core.dataset import open_store

    try:
        thresholds = CalibrationThresholds(calibration_error_excess, max_calibration_error,
                                           sbc_alpha, tarp_alpha, max_abs_tarp_atc)
        posterior, opened = load_posterior(model_dir), open_store(str(store))
        report = diagnose_posterior(posterior, opened, split=split, seed=seed,
                                    num_observations=num_observations, num_samples=num_samples,
                                    thresholds=thresholds, with_log_prob=log_prob)
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    files = write_diagnostics(report, output)
    typer.echo(summary_table(report))
    if predictive:
        files.update(_predictive(posterior, opened, output, split=split, seed=seed))
    typer.echo(f"wrote {', '.join(str(p) for p in files.values())}")
    raise typer.Exit(EXIT_PASSED if report.passed else EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add the ``diagnose`` command to the ``sbi-ops`` application."""
    app.command("diagnose")(diagnose)
