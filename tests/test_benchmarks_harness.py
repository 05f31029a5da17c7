"""Fast checks of the benchmark harness's pure parts (the suites themselves run via `make bench`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.common import flatten_observations, median_time
from benchmarks.report import render


def test_flatten_observations_orders_values_then_uncertainties_per_block():
    schema = SimpleNamespace(blocks=[SimpleNamespace(name="spectrum"), SimpleNamespace(name="photometry")])
    obs = SimpleNamespace(values={"spectrum": np.ones((2, 3)), "photometry": 3 * np.ones((2, 1))},
                          uncertainties={"spectrum": 2 * np.ones((2, 3))})
    flat = flatten_observations(schema, obs)
    assert flat.shape == (2, 7)
    np.testing.assert_array_equal(flat[0], [1, 1, 1, 2, 2, 2, 3])


def test_median_time_calls_warmup_plus_repeats():
    calls = []
    median_time(lambda: calls.append(1), repeats=3, warmup=1)
    assert len(calls) == 4


def _row(c2st, fit, sample):
    return {"c2st": c2st, "fit_wall_s": fit, "process_wall_s": fit + 5, "epochs": 50, "seconds_per_epoch": 0.1,
            "sample_single_seconds": sample, "sample_batched_seconds": 10 * sample, "log_prob_seconds": sample,
            "peak_rss_mb": 500.0, "num_samples": 10_000, "num_batched_observations": 100}


def test_render_states_targets_and_ratios():
    results = {"machine": {"cpu_count": 2}, "settings": {"quick": False}, "recipe": {}, "suites": {
        "two_moons": {"num_simulations": 10_000, "metric": "c2st",
                      "rows": {"ours/spline": _row(0.52, 10.0, 0.01), "sbi/nsf": _row(0.53, 200.0, 1.0)}},
        "exo_transmission": {"error": "RuntimeError('boom')"}}}
    text = render(results)
    assert "| two_moons | 10000 | ours/spline | 0.52 | **met** |" in text
    assert "fit() wall 20x **met**" in text
    assert "batched 100x **met**" in text
    assert "exo_transmission: `RuntimeError('boom')`" in text
    assert "re-run after this run" not in text
    results["suites"]["two_moons"]["note"] = "Re-run at 07:00 with recipe X."
    text = render(results)
    assert "> two_moons: Re-run at 07:00 with recipe X." in text
    assert "- re-run after this run (their sections say when and why): two_moons" in text


def test_flow_matching_section_shows_a_rerun_note_and_rows():
    from benchmarks.report import flow_matching_section

    suite = {"note": "Re-run at 06:40 alone.", "summary": {"two_moons": {"flow_matching/midpoint":
                                                                        {"c2st_mean": 0.52, "samples_per_s_mean": 10.0}}},
             "results_file": "results-flow-matching.json"}
    text = "\n".join(flow_matching_section(suite))
    assert "> Re-run at 06:40 alone." in text and "| two_moons | flow_matching/midpoint | 0.52 |" in text
    assert "Re-run" not in "\n".join(flow_matching_section({k: v for k, v in suite.items() if k != "note"}))


def test_family_config_layers_recipe_task_and_family_overrides():
    from benchmarks.bench_posteriors import RECIPE, family_config, plans

    plan = plans({"num_simulations": 10_000, "exo_simulations": 20_000})["gaussian_linear"]
    spline = family_config(plan, "spline", max_epochs=300)
    naf = family_config(plan, "neural_autoregressive", max_epochs=3)
    assert spline["hidden_dim"] == naf["hidden_dim"] == 32 != RECIPE["hidden_dim"]  # task override
    assert spline["spline_bound"] == 4.0 and "spline_bound" not in naf  # family override
    assert naf["learning_rate"] == 1e-3 and spline["learning_rate"] == 3e-4
    assert "num_spline_bins" not in naf and spline["num_spline_bins"] == RECIPE["num_spline_bins"]
    assert (spline["num_epochs"], naf["num_epochs"]) == (300, 3)  # the settings' cap bounds the plan
    assert spline["flow_family"] == "spline" and spline["parameter_space"] == "physical"


def test_training_seeds_are_recorded_and_the_verdict_compares_their_means():
    from benchmarks.bench_posteriors import add_seed

    ours, peer = _row(0.535, 10.0, 0.01), _row(0.531, 200.0, 1.0)
    add_seed(ours, 1, {"fit_wall_s": 11.0, "epochs": 60}, {"c2st": 0.555})
    add_seed(ours, 2, {"fit_wall_s": 12.0, "epochs": 70}, {"c2st": 0.545})
    add_seed(peer, 1, {"fit_wall_s": 190.0, "epochs": 180}, {"c2st": 0.541})
    add_seed(peer, 2, {"fit_wall_s": 210.0, "epochs": 190}, {"c2st": 0.539})
    assert ours["training_seeds"] == [0, 1, 2] and ours["c2st_seeds"] == [0.535, 0.555, 0.545]
    assert ours["fit_wall_s_seeds"] == [10.0, 11.0, 12.0] and ours["epochs_seeds"] == [50, 60, 70]
    assert ours["c2st_seed_mean"] == pytest.approx(0.545) and peer["c2st_seed_mean"] == pytest.approx(0.537)
    results = {"machine": {"cpu_count": 2}, "settings": {"quick": False}, "recipe": {}, "suites": {
        "two_moons": {"num_simulations": 10_000, "metric": "c2st", "rows": {"ours/spline": ours, "sbi/nsf": peer}}}}
    text = render(results)
    # Seed 0 alone (0.535 vs 0.531) would pass; the means (0.545 vs 0.537) are what is judged.
    assert "C2ST, mean over training seeds [0, 1, 2]: ours 0.545 (0.535, 0.555, 0.545) vs sbi 0.537" in text
    assert "within +0.01): **met**" in text
    assert "| two_moons | 10000 | ours/spline | 0.545 (mean of seeds [0, 1, 2]: 0.535, 0.555, 0.545) | **met** |" in text
    ours["c2st_seeds"][1] = 0.585
    ours["c2st_seed_mean"] = 0.555
    assert "within +0.01): **not met**" in render(results)
