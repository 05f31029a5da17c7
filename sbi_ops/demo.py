"""``make demo``: the main job on embedded defaults, end to end, with a summary at the end.

simulate -> validate -> train -> diagnose -> register (the Prefect ``retrain`` flow behind
``sbi-ops pipeline``, tracked in MLflow on sqlite) -> a sample through the registered model
(``models:/<name>@champion``). The demo drives the real ``sbi-ops`` command line, so it exercises
exactly what the README promises; nothing is faked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEMO_TASK = "exo_transmission"
DEMO_MODEL_NAME = "exo-transmission-demo"
DEMO_SIMULATIONS = int(os.environ.get("SBI_OPS_DEMO_SIMULATIONS", "10000"))
DEMO_OUTPUT = Path(os.environ.get("SBI_OPS_DEMO_OUTPUT", "demo-output")).resolve()
DEMO_CONFIG = Path(__file__).with_name("demo_config.yaml")


@dataclass
class StageResult:
    """What one demo stage did, for the closing summary table."""

    name: str
    seconds: float
    output: str


def _sbi_ops(name: str, *args: str, ok_codes: tuple[int, ...] = (0,)) -> StageResult:
    """Run one ``sbi-ops`` command with this interpreter; stop the demo if it fails."""
    print(f"\n$ sbi-ops {name} {' '.join(args)}", flush=True)
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "sbi_ops.cli", name, *args], check=False)
    if completed.returncode not in ok_codes:
        raise SystemExit(f"demo: 'sbi-ops {name}' failed with exit code {completed.returncode}")
    return StageResult(name, time.perf_counter() - start, "")


def _test_observation(store_path: Path):
    """One held-out observation of the store (the demo's 'observed' spectrum) and its truth."""
    import pandas as pd

    from sbi_core.dataset import open_store

    with open_store(store_path) as store:
        index = int(store.split_indices("test")[0])
        truth, observations = store.read(np.array([index], dtype=np.int64))
        row = {}
        for spec in store.observation_schema.blocks:
            row[spec.name] = [observations.values[spec.name][0].astype(float).tolist()]
            if spec.name in observations.uncertainties:
                row[f"{spec.name}_uncertainties"] = [observations.uncertainties[spec.name][0].astype(float).tolist()]
        return pd.DataFrame(row), truth[0], list(store.parameter_names)


def _sample_registered_model(data_dir: Path, store_path: Path, output: Path) -> StageResult:
    """Load ``models:/<name>@champion`` through MLflow's pyfunc API and retrieve one spectrum."""
    import mlflow

    start = time.perf_counter()
    mlflow.set_tracking_uri(f"sqlite:///{data_dir / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{DEMO_MODEL_NAME}@champion")
    frame, truth, names = _test_observation(store_path)
    samples = model.predict(frame, params={"num_samples": 10_000, "seed": 0})
    samples.to_csv(output, index=False)
    print(f"\nposterior for one held-out spectrum ({len(samples)} draws via models:/{DEMO_MODEL_NAME}@champion)")
    print(f"{'parameter':<14} {'true':>10} {'mean':>10} {'std':>10}")
    for name, value in zip(names, truth):
        print(f"{name:<14} {value:>10.4g} {samples[name].mean():>10.4g} {samples[name].std():>10.4g}")
    return StageResult("sample", time.perf_counter() - start, str(output))


def main() -> None:
    """Run the main job end to end and print where the results are."""
    if DEMO_OUTPUT.exists():
        shutil.rmtree(DEMO_OUTPUT)
    DEMO_OUTPUT.mkdir(parents=True)
    store, data_dir = DEMO_OUTPUT / "sims.zarr", DEMO_OUTPUT / "data"
    report = DEMO_OUTPUT / "validation-report.json"
    results = []
    simulate = _sbi_ops("simulate", "--task", DEMO_TASK, "--num-simulations", str(DEMO_SIMULATIONS),
                        "--output", str(store), "--seed", "0")
    results.append(StageResult("simulate", simulate.seconds, str(store)))
    validate = _sbi_ops("validate", str(store), "--report", str(report))
    results.append(StageResult("validate", validate.seconds, str(report)))
    pipeline = _sbi_ops("pipeline", "--store", str(store), "--model-name", DEMO_MODEL_NAME,
                        "--data-dir", str(data_dir), "--config", str(DEMO_CONFIG))
    results.append(StageResult("pipeline: validate, train, diagnose, register", pipeline.seconds, str(data_dir)))
    results.append(_sample_registered_model(data_dir, store, DEMO_OUTPUT / "samples.csv"))
    _print_summary(results, data_dir)


def _print_summary(results: list[StageResult], data_dir: Path) -> None:
    print("\nsbi-ops demo summary")
    print(f"{'stage':<48} {'seconds':>8}  output")
    for result in results:
        print(f"{result.name:<48} {result.seconds:>8.1f}  {result.output}")
    print(f"\nAll results are under {DEMO_OUTPUT}")
    print("Open the MLflow UI:")
    print(f"  .venv/bin/mlflow ui --backend-store-uri sqlite:///{data_dir / 'mlflow.db'} --port 5000")
    print("Serve the champion model:")
    print(f"  .venv/bin/sbi-ops serve models:/{DEMO_MODEL_NAME}@champion --data-dir {data_dir} --port 5001")


if __name__ == "__main__":
    main()
