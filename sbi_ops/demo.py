"""``make demo``: the main job on embedded defaults, end to end, with a summary at the end.

The demo drives the real ``sbi-ops`` command line (the same commands a user types), so it
exercises exactly what the README promises. It runs only stages whose commands are registered in
``sbi_ops.cli.COMMAND_MODULES``: a stage that is not built yet is skipped and said so, never faked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sbi_ops.cli import COMMAND_MODULES

DEMO_TASK = "exo_transmission"
DEMO_SIMULATIONS = int(os.environ.get("SBI_OPS_DEMO_SIMULATIONS", "20000"))
DEMO_OUTPUT = Path(os.environ.get("SBI_OPS_DEMO_OUTPUT", "demo-output")).resolve()


@dataclass
class StageResult:
    """What one demo stage did, for the closing summary table."""

    name: str
    seconds: float
    outcome: str
    outputs: list[str] = field(default_factory=list)


def _sbi_ops(*args: str) -> subprocess.CompletedProcess:
    """Run one ``sbi-ops`` command with this interpreter, streaming its output to the terminal."""
    command = [sys.executable, "-m", "sbi_ops.cli", *args]
    print(f"\n$ sbi-ops {' '.join(args)}", flush=True)
    return subprocess.run(command, check=False)


def _run_stage(name: str, args: list[str], outputs: list[str]) -> StageResult:
    start = time.perf_counter()
    completed = _sbi_ops(*args)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"demo: stage '{name}' failed with exit code {completed.returncode}")
    return StageResult(name, seconds, "ok", outputs)


def _write_demo_observation(store: Path, target: Path) -> None:
    """Take one test-split observation from the store as the demo's 'observed' spectrum."""
    import numpy as np

    from sbi_core.dataset import open_store

    with open_store(store) as opened:
        index = int(opened.split_indices("test")[0])
        _, observations = opened.read(np.array([index], dtype=np.int64))
        blocks = []
        for spec in opened.observation_schema.blocks:
            block = {"name": spec.name, "values": observations.values[spec.name][0].tolist()}
            if spec.name in observations.uncertainties:
                block["uncertainties"] = observations.uncertainties[spec.name][0].tolist()
            blocks.append(block)
    target.write_text(json.dumps({"blocks": blocks}))


def _stages(store: Path, model: Path, observation: Path) -> list[tuple[str, list[str], list[str]]]:
    samples = DEMO_OUTPUT / "samples.csv"
    report = DEMO_OUTPUT / "validation-report.json"
    diagnostics = DEMO_OUTPUT / "diagnostics"
    return [
        ("simulate", ["simulate", "--task", DEMO_TASK, "--num-simulations", str(DEMO_SIMULATIONS),
                      "--output", str(store), "--seed", "0"], [str(store)]),
        ("validate", ["validate", str(store), "--report", str(report)], [str(report)]),
        ("train", ["train", str(store), "--output", str(model)], [str(model)]),
        ("sample", ["sample", str(model), "--observation", str(observation), "--num-samples", "10000",
                    "--output", str(samples)], [str(samples)]),
        ("diagnose", ["diagnose", str(model), str(store), "--output", str(diagnostics)], [str(diagnostics)]),
    ]


def main() -> None:
    """Run every built stage of the main job and print where the results are."""
    if DEMO_OUTPUT.exists():
        shutil.rmtree(DEMO_OUTPUT)
    DEMO_OUTPUT.mkdir(parents=True)
    store, model = DEMO_OUTPUT / "sims.zarr", DEMO_OUTPUT / "model"
    observation = DEMO_OUTPUT / "observation.json"
    results: list[StageResult] = []
    for name, args, outputs in _stages(store, model, observation):
        if name not in COMMAND_MODULES:
            results.append(StageResult(name, 0.0, "not built yet: skipped"))
            continue
        if name == "sample":
            _write_demo_observation(store, observation)
        results.append(_run_stage(name, args, outputs))
    _print_summary(results)


def _print_summary(results: list[StageResult]) -> None:
    print("\nsbi-ops demo summary")
    print(f"{'stage':<10} {'seconds':>8}  outcome / outputs")
    for result in results:
        outputs = ", ".join(result.outputs)
        print(f"{result.name:<10} {result.seconds:>8.1f}  {result.outcome}  {outputs}")
    print(f"\nAll results are under {DEMO_OUTPUT}")


if __name__ == "__main__":
    main()
