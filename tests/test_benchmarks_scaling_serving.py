"""The serving and scaling benchmarks: pure parts fast, and the scaling suite's --quick mode tiny."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import bench_scaling, bench_serving
from benchmarks.report import render


def test_serving_summary_percentiles_and_throughput():
    out = bench_serving.summarise(np.arange(1.0, 101.0), wall_s=2.0)
    assert out["requests_ok"] == 100 and out["throughput_rps"] == 50.0
    assert out["p50_ms"] == pytest.approx(50.5) and out["p99_ms"] == pytest.approx(99.01)
    assert bench_serving.summarise(np.array([]), 1.0) == {"requests_ok": 0, "wall_s": 1.0}


def test_serving_request_is_one_observation():
    body = json.loads(bench_serving.request_body([0.1, -0.2], 1000))
    assert body == {"inputs": [{"x": [0.1, -0.2]}], "params": {"num_samples": 1000}}


def _serving_results(p50: float) -> dict:
    level = {"clients": 1, "requests_ok": 10, "p50_ms": p50, "p95_ms": 2 * p50, "p99_ms": 3 * p50, "mean_ms": p50,
             "throughput_rps": 1000 / p50, "num_failures": 0, "load_average": [3.0, 2.0, 1.0]}
    return {"settings": {"num_samples": 1000, "breakdown_repeats": 5}, "machine": {"cpu_count": 2},
            "levels": [level, {**level, "clients": 8}], "breakdown_ms": {"sample_ms": 4.0, "mlflow_invocations_total_ms": 20.0},
            "http_and_server_overhead_ms": p50 - 20.0}


def test_report_has_serving_and_scaling_rows_and_states_the_latency_target():
    scaling = {"settings": {"c2st_observations": 2, "c2st_samples": 100}, "machine": {"cpu_count": 2},
               "simulations": [{"num_simulations": 1000, "epoch_cap": 300, "epochs": 40, "ended_by": "early stopping",
                                "steps_per_epoch": 4, "seconds_per_epoch": 0.02, "fit_wall_s": 3.0, "c2st": 0.6,
                                "load_average": [1.0]}]}
    results = {"machine": {"cpu_count": 2}, "settings": {"quick": False}, "recipe": {},
               "suites": {"serving": _serving_results(80.0), "scaling": scaling}}
    text = render(results)
    assert "## Serving: `/invocations` latency" in text and "| 8 | 10 | 80 |" in text
    assert "target p50 <= 50 ms after warm-up (1 client): 80 ms, **not met**" in text
    assert "## Scaling curves" in text and "| 1,000 | 300 | 40 | early stopping |" in text
    assert "**met**" in bench_serving.render(_serving_results(30.0))


@pytest.mark.slow
def test_scaling_quick_mode_runs_end_to_end(tmp_path):
    """Tiny sizes: two store sizes, two batch sizes, the memory curve (children), plots."""
    out = tmp_path / "scaling.json"
    results = bench_scaling.main(["--quick", "--sizes", "300", "--output", str(out), "--plot-dir", str(tmp_path),
                                  "--work", str(tmp_path / "work")])
    saved = json.loads(out.read_text())
    assert [r["num_simulations"] for r in saved["simulations"]] == [300]
    assert 0.0 <= saved["simulations"][0]["c2st"] <= 1.0
    assert [r["batch_size"] for r in saved["batch_size"]] == [32, 64]
    assert all(r["streamed"] for r in saved["memory"]["rows"])
    pipeline = saved["pipeline"]
    assert pipeline["in_memory"]["train_samples_per_s"] > 0 and pipeline["zarr_streaming"]["train_samples_per_s"] > 0
    assert "Training throughput, Zarr store vs memory" in out.with_suffix(".md").read_text()
    assert {p.rsplit("/", 1)[-1] for p in results["plots"]} == {
        "scaling-simulations-quick.png", "scaling-batch-size-quick.png", "scaling-memory-quick.png"}
    assert all((tmp_path / p.rsplit("/", 1)[-1]).stat().st_size > 0 for p in results["plots"])
    assert "Time per epoch vs batch size" in out.with_suffix(".md").read_text()


@pytest.mark.slow
@pytest.mark.integration
def test_serving_quick_mode_serves_and_measures(tmp_path):
    """Tiny model, the real `sbi-ops serve` server on loopback, 1/4/8 clients, the breakdown."""
    out = tmp_path / "serving.json"
    results = bench_serving.main(["--quick", "--output", str(out), "--work", str(tmp_path / "work")])
    assert [lv["clients"] for lv in results["levels"]] == [1, 4, 8]
    assert all(lv["num_failures"] == 0 and lv["p50_ms"] > 0 for lv in results["levels"])
    b = results["breakdown_ms"]
    assert b["padded_rows"] == 1 and b["draws_computed"] == 1024 and b["draws_returned"] == 1000
    assert results["paired"]["http_p50_ms"] > 0
    assert "Where the time of one request goes" in out.with_suffix(".md").read_text()
