"""The GPU check's report: what comes back from the device is collected, summarised and rendered."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

from benchmarks.score_accelerator_check import collect, flow_matching_summary, render

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "accelerator_check.sh"


def _add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_collect_adds_up_step_logs_and_unpacks_packed_logs(tmp_path):
    first, second = tmp_path / "1", tmp_path / "2"
    for folder, step in ((first, "exo_gpu: rc 0 in 56 s\n"), (second, "two_moons_gpu: rc 0 in 32 s\n")):
        folder.mkdir()
        (folder / "steps.txt").write_text(step)
        (folder / "environment.txt").write_text(f"GPU 0: from {folder.name}\n16\njax\n")
    (first / "two_moons_gpu.npz").write_bytes(b"old")
    (second / "two_moons_gpu.npz").write_bytes(b"new")
    with tarfile.open(second / "logs.tgz", "w:gz") as tar:
        _add_text(tar, "./tests_gpu.log", "20 passed in 78.2s\n")

    npz, texts = collect([first, second])

    assert npz["two_moons_gpu"] == second / "two_moons_gpu.npz"  # a later call's file wins
    assert texts["steps.txt"] == "exo_gpu: rc 0 in 56 s\ntwo_moons_gpu: rc 0 in 32 s\n"
    assert texts["environment.txt"].startswith("GPU 0: from 2")
    assert texts["tests_gpu.log"] == "20 passed in 78.2s\n"


def test_flow_matching_summary_reads_the_bench_json_and_tolerates_absence():
    bench = {"settings": {"num_observations": "5", "num_samples": "2000"},
             "two_moons": {"summary": {"flow_matching/midpoint": {"c2st_mean": 0.519, "samples_per_s_mean": 3e5}},
                           "training_time_s": {"flow_matching": 16.1}}}
    summary = flow_matching_summary(json.dumps(bench))
    assert summary["observations"] == 5 and summary["samples"] == 2000
    assert summary["training_time_s"] == 16.1
    assert flow_matching_summary(None) is None
    assert flow_matching_summary(json.dumps({"two_moons": {"errors": {"x": "boom"}}})) is None


def test_render_shows_each_run_with_its_metric_and_timings():
    timings = {"fit_wall_s": 19.0, "epochs": 157, "best_epoch": 137, "seconds_per_epoch": 0.0312,
               "first_epoch_s": 6.5, "sample_single_seconds": 0.0046, "sample_batched_seconds": 0.0398,
               "log_prob_seconds": 0.001, "gate_passed": True}
    results = {"environment": "GPU 0: NVIDIA H100\n16\njax 0.11.2\n", "cpu_count": "16", "jax": "jax 0.11.2",
               "rows": [{"run": "two_moons_gpu", "where": "GPU", "c2st": 0.541, **timings},
                        {"run": "exo_gpu", "where": "GPU", "calibration_error": 0.025,
                         "calibration_error_floor": 0.028, **timings, "gate_passed": False}],
               "flow_matching": None, "tests": "20 passed", "steps": "two_moons_gpu: rc 0 in 32 s"}
    text = render(results)
    assert "| two_moons_gpu | GPU | C2ST 0.541 | 19 | 157 (137) | 0.0312 |" in text
    assert "calibration error 0.025 (floor 0.028)" in text
    assert text.rstrip().splitlines()[-2] == "two_moons_gpu: rc 0 in 32 s"
    assert "| no |" in text  # a failed stability gate is shown, not hidden
    assert "NVIDIA H100" in text and "20 passed" in text


def test_check_script_refuses_to_run_without_an_output_folder(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "OUT" in result.stderr
