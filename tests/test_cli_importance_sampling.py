"""``sbi-ops sample --importance-sampling``: task lookup, report, warnings and errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sbi_core.simulators import get_task
from sbi_core.simulators.matching import TaskMismatchError, matching_builtin_task
from sbi_ops.cli import app
from tests.sbi_core.posterior_helpers import gaussian_linear_store

runner = CliRunner()
OBSERVATION = {"blocks": [{"name": "x", "values": [0.1, -0.2]}]}


def _payload_rows(task):
    payload = task.to_payload()
    return payload["parameters"], payload["blocks"]


def test_matching_builtin_task_accepts_the_same_task_and_names_differences():
    task = get_task("gaussian_linear", dim=2)
    parameters, blocks = _payload_rows(task)
    assert matching_builtin_task("gaussian_linear", task.version, parameters, blocks, dim=2).parameter_dim == 2
    with pytest.raises(TaskMismatchError, match="2 parameters.*10|10 parameters.*2"):
        matching_builtin_task("gaussian_linear", task.version, parameters, blocks)  # default dim=10
    with pytest.raises(TaskMismatchError, match="version '1.0', recorded '9'"):
        matching_builtin_task("gaussian_linear", "9", parameters, blocks, dim=2)
    wider = [dict(parameters[0], prior={"kind": "normal", "loc": 0.0, "scale": 5.0}), parameters[1]]
    with pytest.raises(TaskMismatchError, match="parameters 0"):
        matching_builtin_task("gaussian_linear", task.version, wider, blocks, dim=2)
    with pytest.raises(TaskMismatchError, match="no task name"):
        matching_builtin_task(None, None, parameters, blocks)


def test_importance_options_need_the_flag(tmp_path):
    obs = tmp_path / "obs.json"
    obs.write_text(json.dumps(OBSERVATION))
    base = ["sample", str(tmp_path), "--observation", str(obs), "--num-samples", "3", "--output",
            str(tmp_path / "out.npy")]
    result = runner.invoke(app, base + ["--num-proposals", "10"])
    assert result.exit_code == 2 and "only apply with --importance-sampling" in result.output
    result = runner.invoke(app, base + ["--importance-sampling", "--num-proposals", "0"])
    assert result.exit_code == 2 and "--num-proposals must be a positive integer" in result.output
    result = runner.invoke(app, base + ["--importance-sampling", "--efficiency-threshold", "2"])
    assert result.exit_code == 2 and "--efficiency-threshold must lie in [0, 1]" in result.output


@pytest.fixture(scope="module")
def affine_model(tmp_path_factory):
    """A tiny affine-flow posterior on gaussian_linear (dim 2), trained through the CLI."""
    tmp = tmp_path_factory.mktemp("is")
    store = gaussian_linear_store(tmp / "gl.zarr", n=400)
    model = tmp / "model"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SBI_OPS_COMPILATION_CACHE", "0")
        result = runner.invoke(app, ["train", str(store.path), "--output", str(model),
                                     "--set", "flow_family=affine", "--set", "embedding_dim=8",
                                     "--set", "hidden_dim=16", "--set", "num_coupling_layers=2",
                                     "--set", "photometry_embedding_dim=8", "--set", "num_epochs=30",
                                     "--set", "batch_size=64"])
    assert result.exit_code == 0, result.output
    obs = tmp / "obs.json"
    obs.write_text(json.dumps(OBSERVATION))
    return model, obs


def _sample(model, obs, out, *extra):
    return runner.invoke(app, ["sample", str(model), "--observation", str(obs), "--num-samples", "500",
                               "--output", str(out), "--seed", "3", "--importance-sampling", *extra])


@pytest.mark.slow
def test_importance_sampling_reports_and_writes_resampled_draws(affine_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SBI_OPS_COMPILATION_CACHE", "0")
    model, obs = affine_model
    out = tmp_path / "is.csv"
    result = _sample(model, obs, out, "--task-option", "dim=2", "--num-proposals", "4000")
    assert result.exit_code == 0, result.output
    assert "ESS" in result.stdout and "of 4000 proposals" in result.stdout
    assert "sampling efficiency" in result.stdout and "log-evidence" in result.stdout
    assert "importance-resampled" in result.stdout
    draws = np.loadtxt(out, delimiter=",", skiprows=1)
    assert draws.shape == (500, 2) and np.all(np.isfinite(draws))
    # Resampled draws follow the exact posterior N(x / 2, 0.05 I) (physical units).
    np.testing.assert_allclose(draws.mean(0), [0.05, -0.1], atol=0.06)
    np.testing.assert_allclose(draws.std(0), np.sqrt(0.05), rtol=0.25)
    # The printed log-evidence matches the closed form within a few standard errors.
    line = next(l for l in result.stdout.splitlines() if l.startswith("log-evidence"))
    log_z, se = float(line.split()[1]), float(line.split()[3])
    exact = float(get_task("gaussian_linear", dim=2).log_evidence(np.array([0.1, -0.2])))
    assert abs(log_z - exact) < 5 * se + 0.02


@pytest.mark.slow
def test_low_efficiency_is_a_warning_on_stderr(affine_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SBI_OPS_COMPILATION_CACHE", "0")
    model, obs = affine_model
    result = _sample(model, obs, tmp_path / "is.npy", "--task-option", "dim=2", "--efficiency-threshold", "1")
    assert result.exit_code == 0, result.output
    assert "warning: importance-sampling efficiency" in result.stderr and "unreliable" in result.stderr
    assert np.load(tmp_path / "is.npy").shape == (500, 2)


@pytest.mark.slow
def test_task_without_likelihood_or_mismatch_exits_2(affine_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SBI_OPS_COMPILATION_CACHE", "0")
    model, obs = affine_model
    out = tmp_path / "is.npy"
    result = _sample(model, obs, out)  # default gaussian_linear is 10-d: not the model's task
    assert result.exit_code == 2
    assert "task 'gaussian_linear' cannot be used" in result.stderr and "parameters" in result.stderr
    import sbi_core.simulators.matching as matching

    no_likelihood = dataclasses.replace(get_task("gaussian_linear", dim=2), likelihood=None)
    monkeypatch.setattr(matching, "get_task", lambda name, **kw: no_likelihood)
    result = _sample(model, obs, out, "--task-option", "dim=2")
    assert result.exit_code == 2
    assert "needs a likelihood, but task 'gaussian_linear' exposes none" in result.stderr
    assert not out.exists()
