"""Score what ``benchmarks/accelerator_check.sh`` brought back from a GPU machine, and write the report.

The check trains on a lent GPU machine; the scoring runs here, with the same metric code and the
same test stores as ``bench_posteriors`` (C2ST on 10 test observations x 10,000 draws against the
exact reference for ``two_moons``; expected HPD coverage on 200 observations for
``exo_transmission``). Timings are those the worker measured there (medians after a warm-up).

Usage: python -m benchmarks.score_accelerator_check DEVICE_OUTPUT_DIR [DEVICE_OUTPUT_DIR ...]
       [--output-json benchmarks/results-accelerator.json] [--output-md benchmarks/results-accelerator.md]

Several folders may be given (one per device call); a later folder's file of the same name wins.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_posteriors import reference_samples, score_c2st, score_calibration
from benchmarks.common import WORKDIR, load_child_output

HERE = Path(__file__).parent
#: What each returned ``.npz`` is: (task, where it ran, how it was scored).
RUNS = {
    "two_moons_gpu": ("two_moons", "GPU, default float32 matmul precision", "c2st"),
    "two_moons_gpu_highest": ("two_moons", "GPU, JAX_DEFAULT_MATMUL_PRECISION=highest", "c2st"),
    "two_moons_cpu": ("two_moons", "the GPU machine's 16 CPU cores", "c2st"),
    "exo_gpu": ("exo_transmission", "GPU, default float32 matmul precision", "calibration"),
}
TIMING_KEYS = ("fit_wall_s", "epochs", "best_epoch", "seconds_per_epoch", "first_epoch_s", "best_validation_loss",
               "gate_passed", "sample_single_seconds", "sample_batched_seconds", "log_prob_seconds")


def collect(folders: list[Path]) -> tuple[dict[str, Path], dict[str, str]]:
    """The returned ``.npz`` files by run name, and the text files by name (``.txt``, ``.log`` and
    ``.json``; the logs unpacked from ``logs.tgz``)."""
    npz, texts = {}, {}
    for folder in folders:
        npz.update({p.stem: p for p in folder.glob("*.npz")})
        for path in [*folder.glob("*.txt"), *folder.glob("*.log"), *folder.glob("*.json")]:
            # The step logs of several calls add up; any other file is the latest call's.
            texts[path.name] = (texts.get(path.name, "") if path.name == "steps.txt" else "") + path.read_text()
        if (folder / "logs.tgz").exists():
            with tarfile.open(folder / "logs.tgz") as tar:
                for member in tar.getmembers():
                    name = Path(member.name).name
                    if member.isfile() and name.endswith(".log"):
                        texts[name] = tar.extractfile(member).read().decode()
    return npz, texts


def score_run(name: str, path: Path) -> dict[str, Any]:
    task, where, metric = RUNS[name]
    timings, arrays = load_child_output(path)
    row = {"run": name, "task": task, "where": where, **{k: timings.get(k) for k in TIMING_KEYS}}
    files = {"test": WORKDIR / task / "test.zarr", "train": WORKDIR / task / "train.zarr"}
    if metric == "c2st":
        reference = reference_samples(task, files, arrays["samples"].shape[0], arrays["samples"].shape[1])
        row.update(score_c2st(arrays["samples"], reference, {"c2st_max_samples": None}))
    else:
        from sbi_core.dataset import open_store

        names = list(open_store(files["train"]).parameter_names)
        row.update(score_calibration(arrays, names))
    return row


def flow_matching_summary(text: str | None) -> dict[str, Any] | None:
    """The two_moons summary of a ``bench_flow_matching`` JSON, or None."""
    if not text:
        return None
    data = json.loads(text)
    task = data.get("two_moons") or {}
    if "summary" not in task:
        return None
    settings = data.get("settings", {})
    return {"summary": task["summary"], "training_time_s": task.get("training_time_s", {}).get("flow_matching"),
            "observations": int(settings.get("num_observations", len(task.get("cases", [])))),
            "samples": int(settings.get("num_samples", 0))}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def render(results: dict[str, Any]) -> str:
    lines = ["# GPU check (`benchmarks/accelerator_check.sh`)", "",
             f"- machine: {results['environment'].strip().splitlines()[0] if results['environment'] else 'n/a'}; "
             f"{results.get('cpu_count', 'n/a')} CPU cores; {results.get('jax', 'n/a')}",
             "- our bench recipes (two_moons: the `bench_posteriors` two_moons row; exo: `EXO_RECIPE`), trained on "
             "the same stores as `make bench`; scored here with the bench's metric code.",
             "- timings are medians after a warm-up, measured on that machine: compare them with the 2-core "
             "rows of `results.md` only as orders of magnitude (another machine, another JAX version).",
             f"- device calls: {results.get('calls', 1)} (their step logs below); a run in several calls is "
             "reported from the last, which is how a run whose files did not come back was repeated.",
             "", "| run | where | metric | fit (s) | epochs (best) | s / epoch | first epoch (s) | "
             "1 obs x 10k draws (s) | 100 obs x 10k draws (s) | log_prob 10k (s) | stability gate |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        metric = (f"C2ST {row['c2st']:.3f}" if "c2st" in row
                  else f"calibration error {row['calibration_error']:.3f} (floor {row['calibration_error_floor']:.3f})")
        lines.append(f"| {row['run']} | {row['where']} | {metric} | {_fmt(row['fit_wall_s'])} | "
                     f"{_fmt(row['epochs'])} ({_fmt(row['best_epoch'])}) | {_fmt(row['seconds_per_epoch'])} | "
                     f"{_fmt(row['first_epoch_s'])} | {_fmt(row['sample_single_seconds'])} | "
                     f"{_fmt(row['sample_batched_seconds'])} | {_fmt(row['log_prob_seconds'])} | "
                     f"{_fmt(row['gate_passed'])} |")
    fm = results.get("flow_matching")
    if fm:
        lines += ["", "Flow matching on the GPU (`bench_flow_matching --tasks two_moons`, its two_moons recipe; "
                  f"C2ST on {fm['observations']} observations x {fm['samples']:,} draws, scored there):", "",
                  "| solver | C2ST | draws / s | training (s) |", "|---|---|---|---|"]
        for name, cell in fm["summary"].items():
            lines.append(f"| {name} | {cell['c2st_mean']:.3f} | {cell['samples_per_s_mean']:,.0f} | "
                         f"{_fmt(fm['training_time_s'])} |")
    if results.get("tests"):
        lines += ["", f"- tests on the GPU (`tests_gpu`): {results['tests']}"]
    if results.get("steps"):
        lines += ["", "Step log:", "", "```", results["steps"].strip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--output-json", type=Path, default=HERE / "results-accelerator.json")
    p.add_argument("--output-md", type=Path, default=HERE / "results-accelerator.md")
    args = p.parse_args(argv)
    npz, texts = collect(args.folders)
    unknown = sorted(set(npz) - set(RUNS))
    if unknown:
        raise SystemExit(f"unknown run files {unknown}; known: {sorted(RUNS)}")
    env = texts.get("environment.txt", "")
    env_lines = env.strip().splitlines()
    results = {
        "calls": len(args.folders), "environment": env, "cpu_count": env_lines[1] if len(env_lines) > 1 else None,
        "jax": env_lines[2] if len(env_lines) > 2 else None,
        "rows": [score_run(name, npz[name]) for name in RUNS if name in npz],
        "flow_matching": flow_matching_summary(texts.get("fm_two_moons_gpu.json")),
        "tests": next((line for line in texts.get("tests_gpu.log", "").splitlines() if " passed" in line
                       or " failed" in line), None),
        "steps": texts.get("steps.txt", ""),
    }
    args.output_json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    args.output_md.write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    main()
