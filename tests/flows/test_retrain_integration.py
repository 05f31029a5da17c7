"""The real stack: Prefect test harness + MLflow sqlite registry + the real library, end to end.

One retrain trains a tiny posterior (2 epochs); every other test reuses it through the Prefect
cache (same fingerprint + config), so the whole module costs one training.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.flows.conftest import LOOSE_DIAGNOSTICS, MODEL, TINY_CONFIG

pytestmark = pytest.mark.integration


def _options(store: Path, data: Path, **overrides):
    from tests.flows.conftest import retrain_options

    return retrain_options(store, data, **overrides)


def _versions(service):
    return service.client().search_model_versions(f"name = '{MODEL}'")


def test_retrain_registers_a_champion(first_run, service, data_dir):
    assert first_run["status"] == "registered" and first_run["promoted"], first_run
    assert service.tracking_uri == f"sqlite:///{data_dir / 'mlflow.db'}"
    client = service.client()
    run = client.get_run(first_run["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((data_dir / "mlartifacts").as_uri())
    epochs = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert epochs == [1, 2]
    for key in ("validation_loss", "learning_rate"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 2
    for key in ("final_validation_loss", "heldout_nll", "calibration_error", "sbc_min_p_value"):
        assert key in run.data.metrics, key
    assert run.data.tags["dataset_fingerprint"] == first_run["fingerprint"]
    assert run.data.tags["task_name"] == "gaussian_linear"
    assert run.data.params["num_epochs"] == "2"
    artifacts = {a.path for top in ("validation", "plots", "diagnostics")
                 for a in client.list_artifacts(run.info.run_id, top)}
    assert {"validation/validation.json", "plots/training.png", "diagnostics/coverage.png",
            "diagnostics/report.json"} <= artifacts
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == first_run["version"]
    assert client.get_model_version_by_alias(MODEL, "challenger").version == champion.version
    assert Path(first_run["model_dir"], "metadata.json").is_file()
    assert champion.tags["dataset_fingerprint"] == first_run["fingerprint"]
    assert champion.tags["promotion.reason"] == "no champion yet"
    assert float(champion.tags["metric.heldout_nll"]) == pytest.approx(first_run["metrics"]["heldout_nll"])
    assert not (Path.cwd() / "mlruns").exists() or not any((Path.cwd() / "mlruns").iterdir())


def test_champion_loads_and_predicts(first_run, service):
    import mlflow

    service.activate()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    frame = pd.DataFrame({"x": [[0.1, -0.2], [0.0, 0.3], [0.2, 0.2]]})
    out = model.predict(frame, params={"num_samples": 7, "seed": 1})
    assert list(out.columns) == ["theta_0", "theta_1", "observation_index"]
    assert out.shape == (21, 3) and sorted(set(out["observation_index"])) == [0, 1, 2]
    again = model.predict(frame, params={"num_samples": 7, "seed": 1})
    pd.testing.assert_frame_equal(out, again)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="expected 2 values"):
        model.predict(pd.DataFrame({"x": [[0.1]]}))


def test_second_run_is_cached_and_registers_nothing_new(first_run, tiny_store, data_dir, service):
    from flows.retrain import retrain

    before = len(_versions(service))
    again = retrain(_options(tiny_store, data_dir))
    assert again["status"] == "unchanged" and again["training_cached"] is True, again
    assert again["version"] == first_run["version"]
    skipped = retrain(_options(tiny_store, data_dir, if_data_changed=True))
    assert skipped["status"] == "skipped" and skipped["version"] == first_run["version"]
    assert len(_versions(service)) == before


def test_broken_store_fails_validation_and_registers_nothing(first_run, broken_store, data_dir, service):
    from flows.retrain import retrain
    from flows.stages import ValidationGateFailure

    before = len(_versions(service))
    with pytest.raises(ValidationGateFailure, match="invalid"):
        retrain(_options(broken_store, data_dir))
    assert len(_versions(service)) == before
    failed = service.client().search_runs([service.experiment_id()], "attributes.status = 'FAILED'")
    assert any("validation gate" in r.data.tags.get("gate_failure", "") for r in failed)


def test_calibration_gate_failure_registers_nothing(first_run, tiny_store, data_dir, service):
    from flows.retrain import retrain
    from flows.stages import CalibrationGateFailure

    before = len(_versions(service))
    strict = {**LOOSE_DIAGNOSTICS, "thresholds": {"max_calibration_error": 0.0}}
    with pytest.raises(CalibrationGateFailure, match="calibration error"):
        retrain(_options(tiny_store, data_dir, diagnostics=strict, model_name="tiny-gl-strict"))
    assert len(_versions(service)) == before
    assert service.client().search_model_versions("name = 'tiny-gl-strict'") == []


def test_pipeline_command_exit_codes(first_run, tiny_store, broken_store, data_dir):
    from sbi_ops.commands.pipeline import register
    import typer

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # keeps typer in multi-command mode
    runner = CliRunner()
    common = ["--data-dir", str(data_dir), "--model-name", MODEL]
    sets = [x for k, v in TINY_CONFIG.items() for x in ("--set", f"{k}={'null' if v is None else v}")]
    sets += ["--set", "diagnostics.num_observations=20", "--set", "diagnostics.num_samples=50",
             "--set", "diagnostics.thresholds.max_calibration_error_excess=1.0",
             "--set", "diagnostics.thresholds.sbc_alpha=0", "--set", "diagnostics.thresholds.tarp_alpha=0",
             "--set", "diagnostics.thresholds.max_abs_tarp_atc=1.0"]
    ok = runner.invoke(app, ["pipeline", "--store", str(tiny_store), "--if-data-changed", *common, *sets])
    assert ok.exit_code == 0 and "skipped" in ok.output, ok.output
    bad = runner.invoke(app, ["pipeline", "--store", str(broken_store), *common, *sets])
    assert bad.exit_code == 1, bad.output
    strict = runner.invoke(app, ["pipeline", "--store", str(tiny_store), *common, *sets,
                                 "--set", "diagnostics.thresholds.max_calibration_error=0"])
    assert strict.exit_code == 3, strict.output
    usage = runner.invoke(app, ["pipeline", "--store", str(tiny_store), "--task", "two_moons"])
    assert usage.exit_code == 2 and "exactly one" in usage.output
    unknown = runner.invoke(app, ["pipeline", "--store", str(tiny_store), "--set", "num_epoch=3"])
    assert unknown.exit_code == 2 and "num_epoch" in unknown.output


def test_simulate_dataset_writes_a_store_and_emits_the_event(prefect_harness, tmp_path):
    from unittest import mock

    from flows import retrain as retrain_module
    from flows.options import SimulateOptions
    from sbi_core.dataset import open_store

    with mock.patch.object(retrain_module, "emit_event", wraps=retrain_module.emit_event) as emitted:
        outcome = retrain_module.simulate_dataset(
            SimulateOptions(task="two_moons", num_simulations=64, output=tmp_path / "tm.zarr", seed=1))
    assert open_store(outcome["store"]).fingerprint == outcome["fingerprint"]
    kwargs = emitted.call_args.kwargs
    assert kwargs["event"] == "sbi.dataset.updated"
    assert kwargs["payload"]["store"] == outcome["store"]
    assert kwargs["resource"]["prefect.resource.id"].startswith("sbi.store.")
