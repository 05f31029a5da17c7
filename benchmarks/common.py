"""Shared pieces of the benchmark harness: data preparation, timing, machine facts, children.

Every comparison runs ours and the peer on the *same* files: one training store (explicit
train/validation split, 90% / 10% like sbi's default ``validation_fraction``), one test store
(fresh simulations with another seed) and one ``.npz`` holding the same numbers flattened for the
PyTorch ``sbi`` peer. Both estimators train in a child process each, so both report the same kind
of peak memory (``ru_maxrss`` of the child) and the same "process wall" (from the parent's launch
timestamp to the end of training: interpreter start, imports, data loading, compilation,
training).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

WORKDIR = Path(__file__).resolve().parent / ".work"
REPO = Path(__file__).resolve().parent.parent
VALIDATION_FRACTION = 0.1


def log(message: str) -> None:
    """One progress line on stdout (timestamped)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss``, KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info() -> dict[str, Any]:
    """Cores, load average, memory, CPU model and library versions of this run."""
    import importlib

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(), "python": platform.python_version(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        cpu = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        info["cpu_model"] = cpu[0].split(":", 1)[1].strip() if cpu else None
        mem = [ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")]
        info["memory_total_gb"] = round(int(mem[0].split()[1]) / 1024**2, 1) if mem else None
    except OSError:
        pass
    versions = {}
    for name in ("jax", "jaxlib", "equinox", "optax", "numpy", "sklearn", "zarr"):
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except (ImportError, AttributeError):
            versions[name] = None
    info["versions"] = versions
    info["git_commit"] = _git_commit()
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ---------------------------------------------------------------------------------------------- data
def _copy_with_splits(source: Any, task: Any, path: Path, seed: int) -> Any:
    """Rewrite ``source`` at ``path`` with an explicit random 90/10 train/validation split."""
    from sbi_core.dataset import create_store

    theta, obs = source.read("all")
    n = theta.shape[0]
    writer = create_store(path, task_payload=task.to_payload(), n_samples=n, chunk_size=n, overwrite=True)
    with writer:
        blocks = {name: {"values": obs.values[name], "uncertainties": obs.uncertainties.get(name)}
                  for name in obs.values}
        writer.write_chunk(0, theta, blocks)
        order = np.random.default_rng(seed).permutation(n)
        n_val = int(round(VALIDATION_FRACTION * n))
        writer.write_splits({"train": order[n_val:], "validation": order[:n_val]})
        return writer.finalize()


def flatten_observations(schema: Any, obs: Any) -> np.ndarray:
    """``(N, D)`` peer input: per block (schema order) its values, then its uncertainties."""
    parts = []
    for spec in schema.blocks:
        parts.append(np.asarray(obs.values[spec.name], np.float32))
        if spec.name in obs.uncertainties:
            parts.append(np.asarray(obs.uncertainties[spec.name], np.float32))
    return np.concatenate(parts, axis=1)


def prior_arrays(store: Any) -> dict[str, np.ndarray]:
    """The store's priors for the peer: box bounds when all uniform, else normal loc/scale."""
    priors = [spec.prior for spec in store.parameter_specs]
    kinds = {type(p).__name__ for p in priors}
    if kinds == {"UniformPrior"}:
        return {"prior_low": np.array([p.low for p in priors], np.float32),
                "prior_high": np.array([p.high for p in priors], np.float32)}
    if kinds == {"NormalPrior"}:
        return {"prior_loc": np.array([p.loc for p in priors], np.float32),
                "prior_scale": np.array([p.scale for p in priors], np.float32)}
    raise ValueError(f"the peer harness handles all-uniform or all-normal priors, got {sorted(kinds)}")


def prepare_task_data(task_name: str, num_simulations: int, num_test: int, directory: Path,
                      seed: int = 0) -> dict[str, Path]:
    """Simulate the training and test stores of ``task_name`` and the peer's ``.npz``.

    Returns:
        ``{"train": store, "test": store, "npz": peer input}`` paths.
    """
    from sbi_core.dataset import simulate_to_store
    from sbi_core.simulators import get_task

    task = get_task(task_name)
    directory.mkdir(parents=True, exist_ok=True)
    raw = simulate_to_store(task, num_simulations, directory / "raw.zarr", seed=seed, overwrite=True, progress=False)
    train = _copy_with_splits(raw, task, directory / "train.zarr", seed)
    test = simulate_to_store(task, num_test, directory / "test.zarr", seed=seed + 1_000_003, overwrite=True,
                             progress=False)
    theta, obs = train.read("all")
    theta_test, obs_test = test.read("all")
    npz = directory / "peer-input.npz"
    np.savez(npz, theta=theta.astype(np.float32), x=flatten_observations(train.observation_schema, obs),
             x_test=flatten_observations(test.observation_schema, obs_test),
             theta_test=theta_test.astype(np.float32), **prior_arrays(train))
    return {"train": directory / "train.zarr", "test": directory / "test.zarr", "npz": npz}


# ---------------------------------------------------------------------------------------------- children
def run_child(argv: list[str], log_path: Path, timeout_s: float | None = None) -> dict[str, Any]:
    """Run one benchmark child (its output goes to ``log_path``); return its wall time.

    ``--launched-at`` (wall-clock seconds) is appended so that the child can report its process
    wall from launch to the end of training.

    Raises:
        RuntimeError: the child failed (with the tail of its log).
    """
    launched = time.time()
    start = time.perf_counter()
    with open(log_path, "w") as handle:
        proc = subprocess.run([*argv, "--launched-at", repr(launched)], stdout=handle, stderr=subprocess.STDOUT,
                              cwd=REPO, timeout=timeout_s, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{argv[:3]} exited with {proc.returncode}; log {log_path}:\n{tail}")
    return {"child_wall_s": wall}


def load_child_output(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(timings, arrays)`` of a child's ``.npz`` (timings stored as a JSON string)."""
    with np.load(path) as data:
        arrays = {k: np.asarray(data[k]) for k in data.files if k != "timings"}
        timings = json.loads(str(data["timings"]))
    return timings, arrays


def python_executable() -> str:
    """Our interpreter (the one running the harness)."""
    return sys.executable
