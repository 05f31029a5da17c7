"""``sbi-ops train --set estimator=flow_matching`` then ``sbi-ops sample`` (plain and importance
sampled), end to end through the command line on a small gaussian_linear store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sbi_core.simulators import get_task
from sbi_ops.cli import app
from tests.sbi_core.posterior_helpers import gaussian_linear_store

runner = CliRunner()
X = [0.1, -0.2]
EXACT_MEAN, EXACT_STD = np.array(X) / 2.0, np.sqrt(0.05)  # posterior N(x / 2, 0.05 I)


@pytest.mark.slow
def test_flow_matching_train_sample_and_importance_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("SBI_OPS_COMPILATION_CACHE", "0")  # keep the test process's jax config untouched
    store = gaussian_linear_store(tmp_path / "gl.zarr", n=400)
    model = tmp_path / "model"
    options = ["estimator=flow_matching", "embedding_dim=8", "hidden_dim=16", "num_velocity_layers=2",
               "photometry_embedding_dim=8", "num_epochs=3", "batch_size=64", "solver=rk4",
               "integration_steps=8", "sigma_min=0.001", "time_prior_exponent=1.0"]
    result = runner.invoke(app, ["train", str(store.path), "--output", str(model),
                                 *[arg for o in options for arg in ("--set", o)]])
    assert result.exit_code == 0, result.output
    assert "trained FlowMatchingPosterior on gaussian_linear" in result.output
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["estimator_family"] == "flow_matching"
    config = meta["estimator_config"]
    assert (config["solver"], config["integration_steps"], config["num_epochs"]) == ("rk4", 8, 3)
    assert config["sigma_min"] == 0.001 and config["time_prior_exponent"] == 1.0

    obs = tmp_path / "obs.json"
    obs.write_text(json.dumps({"blocks": [{"name": "x", "values": X}]}))
    sample = ["sample", str(model), "--observation", str(obs), "--seed", "2"]
    out_csv, out_npy = tmp_path / "draws.csv", tmp_path / "draws.npy"
    result = runner.invoke(app, [*sample, "--num-samples", "300", "--output", str(out_csv)])
    assert result.exit_code == 0, result.output
    assert out_csv.read_text().splitlines()[0] == "theta_0,theta_1"
    draws = np.loadtxt(out_csv, delimiter=",", skiprows=1)
    assert draws.shape == (300, 2) and np.all(np.isfinite(draws))
    result = runner.invoke(app, [*sample, "--num-samples", "300", "--output", str(out_npy)])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out_npy), draws, rtol=1e-6)  # same seed, same draws

    out_is = tmp_path / "is.npy"
    result = runner.invoke(app, [*sample, "--num-samples", "1000", "--output", str(out_is),
                                 "--importance-sampling", "--task-option", "dim=2", "--num-proposals", "3000"])
    assert result.exit_code == 0, result.output
    assert "of 3000 proposals" in result.stdout and "log-evidence" in result.stdout
    resampled = np.load(out_is)
    assert resampled.shape == (1000, 2) and np.all(np.isfinite(resampled))
    np.testing.assert_allclose(resampled.mean(0), EXACT_MEAN, atol=0.06)
    np.testing.assert_allclose(resampled.std(0), EXACT_STD, rtol=0.25)
    line = next(l for l in result.stdout.splitlines() if l.startswith("log-evidence"))
    log_z, se = float(line.split()[1]), float(line.split()[3])
    exact = float(get_task("gaussian_linear", dim=2).log_evidence(np.array(X)))
    assert abs(log_z - exact) < 5 * se + 0.02
