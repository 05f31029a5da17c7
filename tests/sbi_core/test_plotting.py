"""Each plot writes one readable PNG and returns its path."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sbi_core.calibration import replicate_observations, run_calibration  # noqa: E402
from sbi_core.plotting import (  # noqa: E402
    plot_calibration_report,
    plot_corner,
    plot_posterior_predictive,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


@pytest.fixture(scope="module")
def report():
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 0.3, (200, 3))
    x = theta + rng.normal(0, 0.3, (200, 3))
    samples = x[:, None, :] / 2 + 0.5 * 0.3 * np.sqrt(2) * rng.standard_normal((200, 300, 3))
    return run_calibration(samples, theta, parameter_names=["T", "log_X_H2O", "R_p"])


def test_calibration_report_plots(report, tmp_path):
    paths = plot_calibration_report(report, tmp_path / "diag")
    assert set(paths) == {"coverage", "sbc", "tarp", "pp"}
    assert all(_is_png(p) for p in paths.values())
    assert paths["coverage"].name == "coverage.png"


def test_corner_with_and_without_reference(tmp_path):
    rng = np.random.default_rng(1)
    amortized, reference = rng.normal(size=(1000, 3)), rng.normal(0.2, 1.0, size=(1000, 3))
    path = plot_corner(amortized, reference, ["a", "b", "c"], tmp_path / "corner.png",
                       truth=np.zeros(3), title="obs 0")
    assert _is_png(path)
    assert _is_png(plot_corner(amortized, None, ["a", "b", "c"], tmp_path / "alone.png"))


def test_posterior_predictive_plot(tmp_path):
    rng = np.random.default_rng(2)
    design = rng.normal(size=(30, 2))
    samples = rng.normal(size=(1, 200, 2))
    replicated = replicate_observations(samples, lambda th: th @ design.T, np.full((1, 30), 0.1))
    observed = design @ np.array([0.1, -0.3]) + 0.1 * rng.standard_normal(30)
    path = plot_posterior_predictive(np.linspace(0.6, 5.0, 30), observed, replicated[0],
                                     tmp_path / "ppc.png", uncertainties=np.full(30, 0.1))
    assert _is_png(path)
    with pytest.raises(ValueError, match="replicated"):
        plot_posterior_predictive(np.arange(3.0), np.zeros(3), np.zeros((5, 4)), tmp_path / "x.png")


def test_local_sensitivity_plot(tmp_path):
    from sbi_core.calibration import local_sensitivity
    from sbi_core.plotting import plot_local_sensitivity

    weights = np.random.default_rng(3).normal(size=(50, 3))
    report = local_sensitivity(np.zeros(50), np.full(50, 0.1), lambda obs: obs @ weights,
                               parameter_names=["T", "log_X_H2O", "R_p"],
                               coordinates=np.linspace(0.6, 5.0, 50), baseline_std=np.ones(3))
    assert _is_png(plot_local_sensitivity(report, tmp_path / "sensitivity.png", title="obs 0"))
