"""``sbi-ops train`` and ``sbi-ops sample``: options, errors, and a real round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sbi_core.estimator_registry import (
    TRAINING_DEFAULTS,
    EstimatorOptionsError,
    parse_set_options,
    resolve_estimator_options,
    split_fit_options,
)
from sbi_ops.cli import app
from tests.sbi_core.posterior_helpers import gaussian_linear_store

runner = CliRunner()


def test_set_values_parse_as_yaml_scalars():
    opts = parse_set_options(["learning_rate=1e-3", "flow_family=affine", "early_stopping_patience=null",
                              "use_cosine_schedule=false", "num_epochs=3"])
    assert opts == {"learning_rate": 1e-3, "flow_family": "affine", "early_stopping_patience": None,
                    "use_cosine_schedule": False, "num_epochs": 3}
    with pytest.raises(EstimatorOptionsError, match="key=value"):
        parse_set_options(["num_epochs"])


def test_defaults_train_to_convergence_and_overrides_win():
    cls, opts = resolve_estimator_options({"num_epochs": 7}, {"flow_family": "affine"})
    assert cls.__name__ == "ConditionalFlowPosterior"
    assert opts["num_epochs"] == 7 and opts["flow_family"] == "affine"
    assert opts["early_stopping_patience"] == TRAINING_DEFAULTS["early_stopping_patience"]
    assert opts["use_cosine_schedule"] is True


@pytest.mark.parametrize("estimator", ["conditional_flow", "flow_matching"])
def test_center_spectrum_levels_is_routed_to_fit_not_the_constructor(estimator):
    cls, opts = resolve_estimator_options({"estimator": estimator}, {"center_spectrum_levels": False})
    constructor, fit = split_fit_options(opts)
    assert fit == {"center_spectrum_levels": False, "parameter_average_decay": 0.999}
    assert "center_spectrum_levels" not in constructor and "parameter_average_decay" not in constructor
    cls(parameter_dim=2, **constructor)  # the constructor accepts what is left
    assert split_fit_options(resolve_estimator_options({}, {})[1])[1] == {"parameter_average_decay": 0.999}
    with pytest.raises(EstimatorOptionsError, match="center_spectrum_levels must be true or false"):
        split_fit_options({"center_spectrum_levels": "no"})


def test_the_weight_average_is_a_default_that_null_turns_off():
    _, opts = resolve_estimator_options({}, parse_set_options(["parameter_average_decay=null"]))
    assert split_fit_options(opts)[1] == {"parameter_average_decay": None}
    _, opts = resolve_estimator_options({"parameter_average_decay": 0.99}, {})
    assert split_fit_options(opts)[1]["parameter_average_decay"] == 0.99
    assert TRAINING_DEFAULTS["parameter_average_decay"] == 0.999


def test_unknown_key_names_key_and_allowed(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "missing.zarr"), "--output", str(tmp_path / "m"),
                                 "--set", "num_epoch=3"])
    assert result.exit_code == 2
    assert "num_epoch" in result.output and "num_epochs" in result.output and "allowed" in result.output
    result = runner.invoke(app, ["train", str(tmp_path / "s.zarr"), "--output", str(tmp_path / "m"),
                                 "--set", "estimator=nope"])
    assert result.exit_code == 2 and "conditional_flow" in result.output


def test_sample_rejects_bad_output_suffix(tmp_path):
    obs = tmp_path / "obs.json"
    obs.write_text(json.dumps({"blocks": [{"name": "x", "values": [0.0, 0.0]}]}))
    result = runner.invoke(app, ["sample", str(tmp_path), "--observation", str(obs), "--num-samples", "3",
                                 "--output", str(tmp_path / "out.txt")])
    assert result.exit_code == 2 and ".npy or .csv" in result.output


@pytest.mark.slow
def test_train_then_sample_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("SBI_OPS_COMPILATION_CACHE", "0")  # keep the test process's jax config untouched
    store = gaussian_linear_store(tmp_path / "gl.zarr", n=300)
    config = tmp_path / "train.yaml"
    config.write_text("flow_family: affine\nembedding_dim: 8\nhidden_dim: 8\nnum_coupling_layers: 2\n")
    model = tmp_path / "model"
    result = runner.invoke(app, ["train", str(store.path), "--output", str(model), "--config", str(config),
                                 "--set", "num_epochs=3", "--set", "batch_size=64",
                                 "--set", "photometry_embedding_dim=8"])
    assert result.exit_code == 0, result.output
    assert "best validation loss" in result.output and (model / "metadata.json").is_file()
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["estimator_config"]["num_epochs"] == 3 and meta["schema_version"] == "0.2.0"

    obs = tmp_path / "obs.json"
    obs.write_text(json.dumps({"blocks": [{"name": "x", "values": [0.1, -0.2]}]}))
    out_csv = tmp_path / "draws.csv"
    result = runner.invoke(app, ["sample", str(model), "--observation", str(obs), "--num-samples", "50",
                                 "--output", str(out_csv), "--seed", "4"])
    assert result.exit_code == 0, result.output
    header = out_csv.read_text().splitlines()[0]
    assert header == "theta_0,theta_1"
    draws = np.loadtxt(out_csv, delimiter=",", skiprows=1)
    assert draws.shape == (50, 2) and np.all(np.isfinite(draws))
    out_npy = tmp_path / "draws.npy"
    result = runner.invoke(app, ["sample", str(model), "--observation", str(obs), "--num-samples", "50",
                                 "--output", str(out_npy), "--seed", "4"])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out_npy), draws, rtol=1e-6)
    # An observation that does not fit the schema: exit 2 naming the problem.
    obs.write_text(json.dumps({"blocks": [{"name": "x", "values": [0.1, -0.2, 0.3]}]}))
    result = runner.invoke(app, ["sample", str(model), "--observation", str(obs), "--num-samples", "5",
                                 "--output", str(out_npy)])
    assert result.exit_code == 2 and "length 3, expected 2" in result.output
