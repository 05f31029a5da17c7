"""Diagnostic plots: one PNG per topic, readable without the report next to it.

Every function draws on a fresh ``matplotlib.figure.Figure`` (no pyplot state, no GUI backend:
safe in flows, servers and tests), writes one PNG and returns its path. Titles state the verdict
(the statistic, its reference value and PASS/FAIL where a threshold applies) and shaded bands show
what an exactly calibrated posterior would scatter within, so a person can judge a plot alone.

References:
    Hermans et al. (2022) expected coverage; Talts et al. (2018) SBC rank histograms;
    Lemos et al. (2023) TARP; Foreman-Mackey (2016) corner.py, JOSS 1(2).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from sbi_core.calibration.coverage import CoverageResult
from sbi_core.calibration.pp import PPResult
from sbi_core.calibration.reports import SimulationBasedCalibrationReport
from sbi_core.calibration.sbc import SBCResult, default_num_bins, rank_histogram
from sbi_core.calibration.tarp import TARPResult

AMORTIZED_COLOR, REFERENCE_COLOR, BAND_COLOR = "tab:blue", "tab:orange", "0.85"


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _verdict(passed: bool | None) -> str:
    return "" if passed is None else ("  [PASS]" if passed else "  [FAIL]")


def _diagonal_band(ax, levels: np.ndarray, n_obs: int, label: str) -> None:
    """Identity line with the 95% binomial band of an exactly calibrated posterior."""
    half = 1.96 * np.sqrt(levels * (1.0 - levels) / n_obs)
    ax.fill_between(levels, levels - half, levels + half, color=BAND_COLOR, label=label)
    ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls="--", label="ideal")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")


def plot_coverage(
    coverage: CoverageResult, path: str | Path, *, passed: bool | None = None
) -> Path:
    """Expected HPD coverage against the credibility level, with the Monte-Carlo band.

    Below the diagonal: overconfident (regions too small); above: underconfident.

    Args:
        coverage: Result of :func:`sbi_core.calibration.expected_coverage`.
        path: Output PNG path.
        passed: Verdict to print in the title, if any.

    Returns:
        The PNG path.
    """
    n_obs = coverage.hpd_credibility.size
    fig = Figure(figsize=(5.2, 5.2))
    ax = fig.add_subplot()
    _diagonal_band(ax, coverage.levels, n_obs, f"95% MC band (N={n_obs})")
    ax.plot(coverage.levels, coverage.coverage, color=AMORTIZED_COLOR, lw=2, label="posterior")
    ax.set(xlabel="credibility level", ylabel="empirical coverage of HPD region")
    ax.set_title(f"Expected coverage{_verdict(passed)}\ncalibration error "
                 f"{coverage.calibration_error:.3f} (MC floor {coverage.calibration_error_floor:.3f})",
                 fontsize=10)
    ax.text(0.97, 0.03, "below diagonal: overconfident\nabove: underconfident",
            ha="right", va="bottom", fontsize=8, transform=ax.transAxes, color="0.3")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return int(np.ceil(n / cols)), cols


def plot_sbc_ranks(
    sbc: SBCResult, parameter_names: Sequence[str], path: str | Path,
    *, passed: bool | None = None,
) -> Path:
    """SBC rank histograms, one panel per parameter, with the 99% band of uniform ranks.

    U shape: overconfident; hump: underconfident; slope: biased (Talts et al. 2018).
    """
    n_obs, n_par = sbc.ranks.shape
    rows, cols = _grid(n_par)
    fig = Figure(figsize=(3.2 * cols, 2.7 * rows + 0.9), layout="constrained")
    bins = sbc.num_bins or default_num_bins(n_obs)
    low, high = stats.binom.ppf([0.005, 0.995], n_obs, 1.0 / bins)
    edges = np.linspace(0, sbc.num_samples + 1, bins + 1)
    for i, name in enumerate(parameter_names):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axhspan(low, high, color=BAND_COLOR, label="99% uniform band")
        ax.axhline(n_obs / bins, color="k", lw=0.8, ls="--")
        counts = rank_histogram(sbc.ranks[:, i], sbc.num_samples, bins)
        ax.stairs(counts, edges, fill=True, color=AMORTIZED_COLOR, alpha=0.7)
        ax.set_title(f"{name}\nKS p={sbc.ks_p_value[i]:.2g}, chi2 p={sbc.chi2_p_value[i]:.2g}",
                     fontsize=9)
        ax.set_xlabel("rank of truth among draws", fontsize=8)
        if i == 0:
            ax.legend(loc="upper center", fontsize=7)
    fig.supxlabel("U shape: overconfident | hump: underconfident | slope: biased",
                  fontsize=8, color="0.3")
    fig.suptitle(f"SBC rank histograms (N={n_obs}, S={sbc.num_samples}){_verdict(passed)}")
    return _save(fig, path)


def plot_tarp(tarp: TARPResult, path: str | Path, *, passed: bool | None = None) -> Path:
    """TARP expected coverage probability against the credibility level (Lemos et al. 2023)."""
    n_obs = tarp.coverage_values.size
    fig = Figure(figsize=(5.2, 5.2))
    ax = fig.add_subplot()
    _diagonal_band(ax, tarp.levels, n_obs, f"95% MC band (N={n_obs})")
    ax.plot(tarp.levels, tarp.ecp, color=AMORTIZED_COLOR, lw=2, label="posterior")
    ax.set(xlabel="credibility level", ylabel="expected coverage probability (TARP)")
    ax.set_title(f"TARP{_verdict(passed)}\nATC {tarp.atc:+.3f}, KS p={tarp.ks_p_value:.2g}",
                 fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_pp(
    pp: PPResult, parameter_names: Sequence[str], path: str | Path,
    *, passed: bool | None = None,
) -> Path:
    """Marginal P-P curves of every parameter on one axes, with the 95% band and KS p-values."""
    n_obs = pp.z_scores.shape[0]
    fig = Figure(figsize=(5.6, 5.2))
    ax = fig.add_subplot()
    _diagonal_band(ax, pp.levels, n_obs, f"95% MC band (N={n_obs})")
    for i, name in enumerate(parameter_names):
        ax.plot(pp.levels, pp.pp_curves[i], lw=1.5,
                label=f"{name} (KS p={pp.ks_p_value[i]:.2g}, z {pp.z_score_mean[i]:+.2f}"
                      f"±{pp.z_score_std[i]:.2f})")
    ax.set(xlabel="credible level (posterior CDF at truth)", ylabel="fraction of truths below")
    ax.set_title(f"Marginal P-P{_verdict(passed)}", fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


def plot_corner(
    amortized: np.ndarray,
    reference: np.ndarray | None,
    parameter_names: Sequence[str],
    path: str | Path,
    *,
    truth: np.ndarray | None = None,
    title: str | None = None,
) -> Path:
    """Corner plot of the amortized posterior, overlaid on the reference retrieval if given.

    Both sets are drawn on shared axis ranges (the union of their 0.5-99.5% quantiles) with
    1/2-sigma contours, so a shift or a width mismatch is visible at a glance.
    """
    import corner  # imported here: only this plot needs it

    amortized = np.asarray(amortized, dtype=float)
    sets = [amortized] if reference is None else [amortized, np.asarray(reference, dtype=float)]
    both = np.concatenate(sets)
    ranges = [tuple(np.percentile(both[:, i], [0.5, 99.5])) for i in range(both.shape[1])]
    levels = (1 - np.exp(-0.5), 1 - np.exp(-2.0))  # 1 and 2 sigma of a 2-d Gaussian
    common = dict(labels=list(parameter_names), range=ranges, levels=levels, bins=30,
                  plot_datapoints=False, plot_density=False, smooth=1.0,
                  hist_kwargs={"density": True})
    n_par = amortized.shape[1]
    fig = Figure(figsize=(2.2 * n_par + 1, 2.2 * n_par + 1))
    fig.subplots(n_par, n_par)
    if reference is not None:
        corner.corner(sets[1], fig=fig, color=REFERENCE_COLOR,
                      hist_kwargs={"density": True, "color": REFERENCE_COLOR},
                      **{k: v for k, v in common.items() if k != "hist_kwargs"})
    corner.corner(amortized, fig=fig, color=AMORTIZED_COLOR, truths=truth, truth_color="k",
                  hist_kwargs={"density": True, "color": AMORTIZED_COLOR},
                  **{k: v for k, v in common.items() if k != "hist_kwargs"})
    handles = [("amortized", AMORTIZED_COLOR)] + (
        [] if reference is None else [("reference (nested sampling)", REFERENCE_COLOR)])
    for k, (label, color) in enumerate(handles):
        fig.text(0.98, 0.97 - 0.03 * k, label, color=color, ha="right", va="top", fontsize=11)
    if title:
        fig.suptitle(title, x=0.02, ha="left")
    return _save(fig, path)


def plot_posterior_predictive(
    coordinates: np.ndarray,
    observed: np.ndarray,
    replicated: np.ndarray,
    path: str | Path,
    *,
    uncertainties: np.ndarray | None = None,
    xlabel: str = "wavelength [micron]",
    ylabel: str = "transit depth",
    title: str | None = None,
) -> Path:
    """Observed spectrum with the 68/95% posterior-predictive bands of replicated data.

    Args:
        coordinates: Point coordinates ``(L,)`` (e.g. wavelengths).
        observed: Observed values ``(L,)``.
        replicated: Replicated data ``(S, L)`` from posterior draws (see
            :func:`sbi_core.calibration.replicate_observations`).
        path: Output PNG path.
        uncertainties: Observational 1-sigma error bars ``(L,)``.
        xlabel, ylabel, title: Axis labels and title.

    Returns:
        The PNG path.
    """
    x, observed, replicated = (np.asarray(a, dtype=float) for a in (coordinates, observed, replicated))
    if replicated.ndim != 2 or replicated.shape[1] != x.size or observed.shape != x.shape:
        raise ValueError(f"need coordinates (L,), observed (L,), replicated (S, L); got "
                         f"{x.shape}, {observed.shape}, {replicated.shape}")
    q = np.percentile(replicated, [2.5, 16, 50, 84, 97.5], axis=0)
    inside68 = np.mean((observed >= q[1]) & (observed <= q[3]))
    inside95 = np.mean((observed >= q[0]) & (observed <= q[4]))
    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot()
    ax.fill_between(x, q[0], q[4], color=AMORTIZED_COLOR, alpha=0.2, lw=0, label="95% predictive")
    ax.fill_between(x, q[1], q[3], color=AMORTIZED_COLOR, alpha=0.4, lw=0, label="68% predictive")
    ax.plot(x, q[2], color=AMORTIZED_COLOR, lw=1, label="predictive median")
    ax.errorbar(x, observed, yerr=uncertainties, fmt=".", color="k", ms=3, lw=0.6,
                label="observed")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title((title + "\n" if title else "") + f"Posterior predictive: {inside68:.0%} of "
                 f"points in 68% band, {inside95:.0%} in 95% band", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def plot_calibration_report(
    report: SimulationBasedCalibrationReport, directory: str | Path
) -> dict[str, Path]:
    """Write the coverage, SBC, TARP and P-P PNGs of one report into ``directory``.

    Each panel's verdict is that diagnostic's own part of ``report.failures``.

    Returns:
        ``{"coverage": path, "sbc": path, "tarp": path, "pp": path}``.
    """
    directory = Path(directory)
    failed = {f.split(":", 1)[0] for f in report.failures}
    names = report.parameter_names
    return {
        "coverage": plot_coverage(report.coverage, directory / "coverage.png",
                                  passed="coverage" not in failed),
        "sbc": plot_sbc_ranks(report.sbc, names, directory / "sbc_ranks.png",
                              passed="sbc" not in failed),
        "tarp": plot_tarp(report.tarp, directory / "tarp.png", passed="tarp" not in failed),
        "pp": plot_pp(report.pp, names, directory / "pp.png"),
    }


def plot_local_sensitivity(report, path: str | Path, *, title: str | None = None) -> Path:
    """Heat map of how each element (wavelength) moves each parameter's posterior mean.

    Colour is the mean shift in units of the posterior sd when ``report.baseline_std`` is known
    (else in parameter units), for a perturbation of one element by its uncertainty; red and blue
    are opposite directions. Columns that light up are the elements that drive that parameter.

    Args:
        report: A :class:`sbi_core.calibration.LocalSensitivityReport`.
        path: Output PNG path.
        title: Optional title prefix.

    Returns:
        The PNG path.
    """
    normalised = report.baseline_std is not None
    shifts = report.shift_matrix(normalised=normalised).T  # (P, L)
    coords = [p.coordinate for p in report.points]
    x = np.arange(len(coords)) if any(c is None for c in coords) else np.asarray(coords, float)
    limit = float(np.max(np.abs(shifts))) or 1.0
    fig = Figure(figsize=(9, 0.45 * len(report.parameter_names) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(x, np.arange(len(report.parameter_names)), shifts, cmap="RdBu_r",
                         vmin=-limit, vmax=limit, shading="nearest")
    ax.set_yticks(np.arange(len(report.parameter_names)), report.parameter_names)
    ax.invert_yaxis()  # first parameter on top, as in the report
    ax.set_xlabel("element" if any(c is None for c in coords) else "wavelength [micron]")
    fig.colorbar(mesh, ax=ax, label="mean shift / posterior sd" if normalised else "mean shift")
    ax.set_title((title + ": " if title else "") + f"local sensitivity of the posterior mean "
                 f"({report.block_name}, +1 sigma per element)", fontsize=10)
    return _save(fig, path)
