"""``sbi-ops diagnose`` end to end on a gaussian_linear store with a stand-in exact posterior.

The stand-in implements the seed API's calibration surface (``batch_encode_observation``,
``batch_sample_posterior``, ``log_prob``, ``parameter_space``, ``parameter_transform``) with the
closed-form posterior N(x / 2, 0.05 I); it samples in the *cube* space, so the test also checks
the conversion of draws and densities to physical units. A trained posterior replaces it once the
posterior classes can be trained quickly in a test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

POST_VAR = 0.05


@dataclass
class _Encoded:
    embedding: np.ndarray


class ExactGaussianLinearPosterior:
    """Closed-form posterior of gaussian_linear (prior var 0.1, noise var 0.1), cube space.

    Its own cube <-> physical map is written with scipy (prior N(0, s0^2): theta = s0 ndtri(u)),
    independent of ``sbi_core.spaces``, which the code under test uses for the conversion.
    """

    parameter_space = "cube"
    prior_sd = np.sqrt(0.1)

    def __init__(self, store, scale: float = 1.0):
        from sbi_core.spaces import ParameterTransform

        self.parameter_names = store.parameter_names
        self.parameter_transform = ParameterTransform([s.prior for s in store.parameter_specs])
        self.sd = np.sqrt(POST_VAR) * scale

    def batch_encode_observation(self, blocks_list):
        return [_Encoded(np.asarray(blocks[0].values) / 2.0) for blocks in blocks_list]

    def batch_sample_posterior(self, embeddings, n_samples, base_seed=0):
        rng = np.random.default_rng(base_seed)
        mean = np.asarray(embeddings, dtype=np.float64)[:, None, :]
        theta = mean + self.sd * rng.standard_normal((mean.shape[0], n_samples, mean.shape[2]))
        return stats.norm.cdf(theta / self.prior_sd)

    def log_prob(self, observation, parameters):
        cube = np.atleast_2d(np.asarray(parameters, dtype=np.float64))
        z_prior = stats.norm.ppf(cube)
        theta = self.prior_sd * z_prior
        # log q_cube(u) = log q_phys(theta(u)) + log|d theta / d u|, d theta/du = s0 / phi(z).
        log_jac = np.log(self.prior_sd) - stats.norm.logpdf(z_prior)
        z = (theta - observation.embedding) / self.sd
        return np.sum(-0.5 * z**2 - np.log(self.sd) + log_jac, axis=-1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from sbi_core.dataset import simulate_to_store
    from sbi_core.simulators import get_task

    path = tmp_path_factory.mktemp("diag") / "gl.zarr"
    return simulate_to_store(get_task("gaussian_linear", dim=2), 2000, str(path), progress=False)


def test_diagnose_posterior_exact_and_overconfident(store):
    from sbi_core.calibration.diagnose import diagnose_posterior

    exact = diagnose_posterior(ExactGaussianLinearPosterior(store), store, num_samples=300)
    assert exact.num_observations == store.split_indices("test").size
    assert exact.coverage.density_source == "log_prob"
    assert exact.passed, exact.failures
    np.testing.assert_allclose(exact.pp.contraction, 0.5, atol=0.1)
    over = diagnose_posterior(ExactGaussianLinearPosterior(store, scale=0.5), store, num_samples=300)
    assert {f.split(":")[0] for f in over.failures} == {"coverage", "sbc", "tarp"}


@pytest.mark.parametrize("scale, code", [(1.0, 0), (0.5, 1)])
def test_diagnose_command_writes_report_and_gates(store, tmp_path, monkeypatch, scale, code):
    import sbi_ops.commands.diagnose as command
    import typer

    monkeypatch.setattr(command, "load_posterior",
                        lambda _: ExactGaussianLinearPosterior(store, scale=scale))
    app = typer.Typer()
    command.register(app)
    app.command("noop")(lambda: None)  # two commands: typer then expects the command name
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["diagnose", str(model_dir), str(store.path), "--output",
                                      str(out), "--num-observations", "150", "--num-samples", "200"])
    assert result.exit_code == code, result.output
    assert "HPD calibration error" in result.output
    # The store is 2-d gaussian_linear; the built-in default is 10-d, so no simulator matches.
    assert "posterior predictive: skipped" in result.output
    payload = json.loads((out / "report.json").read_text())
    assert payload["passed"] is (code == 0) and payload["num_observations"] == 150
    assert {p.name for p in out.iterdir()} >= {"coverage.png", "sbc_ranks.png", "tarp.png", "pp.png"}


def test_diagnose_command_usage_errors(tmp_path):
    import sbi_ops.commands.diagnose as command
    import typer

    app = typer.Typer()
    command.register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["diagnose", str(tmp_path / "nope"), str(tmp_path)])
    assert result.exit_code == 2 and "no such model directory" in result.output
    result = CliRunner().invoke(app, ["diagnose", str(tmp_path), str(tmp_path), "--split", "dev"])
    assert result.exit_code == 2 and "--split must be one of" in result.output


@pytest.mark.slow
def test_predictive_diagnostics_with_the_task_simulator(store, tmp_path):
    from sbi_core.calibration.diagnose import predictive_diagnostics
    from sbi_core.simulators import get_task

    report, png = predictive_diagnostics(ExactGaussianLinearPosterior(store), store,
                                         get_task("gaussian_linear", dim=2), tmp_path,
                                         num_observations=40, num_draws=100)
    assert png.exists() and report.num_observations == 40 and report.num_points == 2
    # x_rep = theta + noise has variance 0.05 + 0.1 around x / 2, while x - x / 2 has variance
    # 0.2 / 4 = 0.05: an exact posterior's predictive check is conservative here (chi2 / L ~ 1/3).
    assert report.fraction_in_95 > 0.9
    assert 0.1 < np.median(report.reduced_chi2) < 0.7


@pytest.mark.slow
def test_diagnose_end_to_end_with_a_trained_flow_matching_posterior(store, tmp_path):
    """Train a small FMPE posterior (unconstrained space), save it, diagnose it via the CLI."""
    import sbi_ops.commands.diagnose as command
    import typer

    from sbi_core.calibration import SimulationBasedCalibrationReport

    module = pytest.importorskip("sbi_core.flow_matching_posterior")
    posterior = module.FlowMatchingPosterior(parameter_dim=2, embedding_dim=16, hidden_dim=32,
                                             num_epochs=5, batch_size=64,
                                             parameter_space="unconstrained")
    posterior.fit(store)
    posterior.save(str(tmp_path / "model"))
    app = typer.Typer()
    command.register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["diagnose", str(tmp_path / "model"), str(store.path),
                                      "--output", str(out), "--num-observations", "100",
                                      "--num-samples", "200"])
    # A 5-epoch model may or may not pass; the command must run and gate (0 or 1), not crash (2).
    assert result.exit_code in (0, 1), result.output
    report = SimulationBasedCalibrationReport.from_json((out / "report.json").read_text())
    assert report.metadata["estimator_class"] == "FlowMatchingPosterior"
    assert report.coverage.density_source == "log_prob"
    assert report.num_observations == 100 and report.num_samples == 200
    assert np.all(np.isfinite(report.pp.contraction)) and "HPD calibration error" in result.output


def test_local_sensitivity_through_the_posterior_api(store):
    """d mean / d x = 1/2 for gaussian_linear: perturbing x_i by s moves theta_i by s / 2 only."""
    from sbi_core.calibration import local_sensitivity
    from sbi_core.calibration.posterior_arrays import posterior_mean_function
    from sbi_core.observation import ObservationBlock

    posterior = ExactGaussianLinearPosterior(store)
    blocks = [ObservationBlock("x", "auxiliary", np.array([0.2, -0.1]))]
    mean_fn = posterior_mean_function(posterior, blocks, "x", num_samples=4000)
    report = local_sensitivity(np.array([0.2, -0.1]), np.array([0.1, 0.1]), mean_fn,
                               parameter_names=store.parameter_names, block_name="x")
    np.testing.assert_allclose(report.shift_matrix(), [[0.05, 0.0], [0.0, 0.05]], atol=2e-3)
    with pytest.raises(ValueError, match="no block 'y'"):
        posterior_mean_function(posterior, blocks, "y")
