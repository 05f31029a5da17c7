"""Input pipeline: training throughput from a Zarr store vs from memory, and peak memory vs store size.

Issue 8, item 3: "the input pipeline's throughput from a Zarr store vs from memory (target:
store-fed training within 10% of in-memory speed), and peak memory vs store size when the store
is larger than the memory budget (target: flat)".

1. Throughput. One synthetic store (``N`` rows: 4 parameters, a 256-bin spectrum with
   uncertainties, chunks of 1,024 rows). The same model (an MLP regressing the parameters from
   values and uncertainties), loss, seed and batch size are trained with ``SBITrainer`` twice:
   ``InMemoryData.from_store`` (the whole split on the device, epochs compiled in one
   ``lax.scan``) and ``StreamingData`` over the store opened with a memory budget smaller than
   the split (block-shuffled Zarr reads, prefetched in a thread, one compiled step per batch).
   Validation is in memory for both, so only the training input path differs. Throughput =
   training samples / median epoch time, over the epochs after the first (compilation).
2. Peak memory. Stores of growing size, all larger than a fixed memory budget; in a fresh child
   process each: open the store with that budget and stream one shuffled epoch of batches through
   a reduction; report the peak RSS above the RSS after imports and ``open_store``.

Scratch stores go to ``benchmarks/.work/input-pipeline/`` (git-ignored). Results:
``benchmarks/results-input-pipeline.json``. ``--quick`` runs tiny sizes (a smoke test: its
numbers mean nothing); ``--mode medium`` is a few minutes on 2 cores. Timings on a loaded 2-core machine are noisy; compare the ratio.

    python -m benchmarks.bench_input_pipeline [--quick | --mode quick|medium|full] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work" / "input-pipeline"
P, L, CHUNK = 4, 256, 1024
ROW_BYTES = 4 * (P + 2 * L)  # float32 parameters + values + uncertainties

SETTINGS = {
    "quick": {"n_train_store": 4096, "epochs": 3, "batch_size": 128, "budget_mb": 2, "rss_sizes_mb": [4, 8, 16], "rss_budget_mb": 2},
    "medium": {"n_train_store": 16384, "epochs": 4, "batch_size": 256, "budget_mb": 8, "rss_sizes_mb": [16, 32, 64, 128], "rss_budget_mb": 8},
    "full": {"n_train_store": 65536, "epochs": 6, "batch_size": 256, "budget_mb": 16, "rss_sizes_mb": [64, 128, 256, 512], "rss_budget_mb": 32},
}


# ---------------------------------------------------------------------------------------- stores
def payload() -> dict:
    return {"name": "input-pipeline-bench", "version": "1",
            "parameters": [{"name": f"p{i}", "unit": "", "prior": {"kind": "uniform", "low": -1.0, "high": 1.0}} for i in range(P)],
            "blocks": [{"name": "spectrum", "modality": "spectrum", "length": L, "has_uncertainties": True}],
            "noise_model": None}


def make_store(path: Path, n: int, seed: int = 0):
    """A synthetic store: spectrum = a linear map of the parameters plus noise (learnable)."""
    from sbi_core.dataset import create_store

    if path.exists():
        from sbi_core.dataset import open_store

        try:
            store = open_store(path)
            if store.n_samples == n:
                return store
        except Exception:  # noqa: BLE001 - rebuilt below
            pass
        shutil.rmtree(path)
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(P, L)).astype(np.float32) / np.sqrt(P)
    writer = create_store(path, task_payload=payload(), n_samples=n, chunk_size=CHUNK)
    with writer:
        for index in writer.pending_chunks():
            start, stop = writer.chunk_bounds(index)
            theta = rng.uniform(-1, 1, size=(stop - start, P)).astype(np.float32)
            sigma = np.full((stop - start, L), 0.1, np.float32)
            values = theta @ mixing + sigma * rng.normal(size=sigma.shape).astype(np.float32)
            writer.write_chunk(index, theta, {"spectrum": {"values": values, "uncertainties": sigma}})
        return writer.finalize()


# ------------------------------------------------------------------------------------ throughput
def _prepare(parameters, observations):
    return np.asarray(parameters, np.float32), {
        "values": np.asarray(observations.values["spectrum"], np.float32),
        "uncertainties": np.asarray(observations.uncertainties["spectrum"], np.float32)}


def _loss(model, parameters, observations, key):
    import jax
    import jax.numpy as jnp

    x = jnp.concatenate([observations["values"], jnp.log(observations["uncertainties"])], axis=-1)
    return jnp.mean((jax.vmap(model)(x) - parameters) ** 2)


def _eval(model, parameters, observations):
    return _loss(model, parameters, observations, None)


def train_throughput(store_path: Path, settings: dict) -> dict:
    import equinox as eqx
    import jax

    from sbi_core.configs import OptimizationConfig
    from sbi_core.dataset import open_store
    from sbi_core.training import InMemoryData, SBITrainer, StreamingData

    budget = settings["budget_mb"] * 2**20
    streamed_store = open_store(store_path, memory_budget_bytes=budget)
    memory_store = open_store(store_path)
    assert not streamed_store.fits_in_memory("train"), "the store must be larger than the streaming budget"
    validation = InMemoryData.from_store(memory_store, "validation", _prepare)
    config = OptimizationConfig(learning_rate=1e-3, batch_size=settings["batch_size"], num_epochs=settings["epochs"])
    sources = {"in_memory": InMemoryData.from_store(memory_store, "train", _prepare),
               "zarr_streaming": StreamingData(streamed_store, "train", _prepare)}
    out = {}
    n_train = len(memory_store.split_indices("train"))
    for name, data in sources.items():
        model = eqx.nn.MLP(2 * L, P, 128, 2, key=jax.random.key(0))
        start = time.perf_counter()
        result = SBITrainer(config, progress=False, seed=0).fit(model, train_loss=_loss, eval_loss=_eval,
                                                                 train_data=data, validation_data=validation)
        total = time.perf_counter() - start
        times = result.history["epoch_time_s"][1:]  # the first epoch compiles
        median = statistics.median(times)
        out[name] = {"median_epoch_s": median, "epoch_times_s": result.history["epoch_time_s"],
                     "train_samples_per_s": result.steps_per_epoch * config.batch_size / median,
                     "wall_s": total, "final_validation_loss": result.history["validation_loss"][-1]}
    out["streaming_over_in_memory_throughput"] = (out["zarr_streaming"]["train_samples_per_s"]
                                                   / out["in_memory"]["train_samples_per_s"])
    out["n_train"] = n_train
    out["memory_budget_bytes_streaming"] = budget
    out["train_split_bytes"] = memory_store.split_nbytes("train")
    return out


# ------------------------------------------------------------------------------------ peak memory
def rss_child(store_path: str, budget: int, batch_size: int) -> dict:
    """Run in a fresh process: stream one shuffled epoch; peak RSS above the pre-epoch baseline.

    Everything the epoch imports (jax, equinox, the batch types) is imported first, so the
    baseline is the process before any data is read; RSS is sampled every 2 ms in a thread.
    """
    import threading

    import equinox  # noqa: F401 - imported before the baseline, as are the batch types
    import jax  # noqa: F401
    import psutil

    import sbi_core.batch  # noqa: F401
    import sbi_core.observation  # noqa: F401
    from sbi_core.dataset import open_store

    store = open_store(store_path, memory_budget_bytes=budget)
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak, done = [baseline], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    total, rows, start = 0.0, 0, time.perf_counter()
    for batch in store.iter_batches("train", batch_size=batch_size, shuffle=True, seed=0):
        total += float(np.sum(batch.observations.values["spectrum"][:, 0]))
        rows += len(batch.parameters)
    done.set()
    sampler.join()
    peak[0] = max(peak[0], process.memory_info().rss)
    return {"store_bytes_train": store.split_nbytes("train"), "memory_budget_bytes": budget,
            "streamed": not store.fits_in_memory("train"), "rows": rows,
            "baseline_rss_bytes": baseline, "peak_rss_bytes": peak[0],
            "peak_minus_baseline_rss_bytes": peak[0] - baseline,
            "lifetime_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "epoch_s": time.perf_counter() - start}


def peak_memory_curve(settings: dict) -> list[dict]:
    rows = []
    budget = settings["rss_budget_mb"] * 2**20
    for size_mb in settings["rss_sizes_mb"]:
        n = max(CHUNK, int(size_mb * 2**20 / 0.8 / ROW_BYTES))  # the train split is ~80% of the rows
        path = WORK / f"rss-{size_mb}mb.zarr"
        make_store(path, n)
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_input_pipeline", "--rss-child", str(path), str(budget),
                               str(settings["batch_size"])], cwd=REPO, capture_output=True, text=True, timeout=1800)
        if proc.returncode:
            raise RuntimeError(f"rss child for {path} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"target_train_mb": size_mb, "n_samples": n, **result})
        print(f"  store {result['store_bytes_train'] / 2**20:7.1f} MB (budget {budget / 2**20:.0f} MB): "
              f"peak RSS {result['peak_rss_bytes'] / 2**20:7.1f} MB, above baseline {result['peak_minus_baseline_rss_bytes'] / 2**20:6.1f} MB", flush=True)
    return rows


def machine() -> dict:
    import jax

    return {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()], "load_average": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, numbers mean nothing")
    parser.add_argument("--mode", choices=sorted(SETTINGS), default=None, help="sizes (default full; --quick = quick)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results-input-pipeline.json"))
    parser.add_argument("--rss-child", nargs=3, metavar=("STORE", "BUDGET", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child[0], int(args.rss_child[1]), int(args.rss_child[2]))))
        return 0
    mode = args.mode or ("quick" if args.quick else "full")
    settings = SETTINGS[mode]
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.time()
    n = int(settings["n_train_store"] / 0.8)
    print(f"[{mode}] throughput: store of {n} rows x {ROW_BYTES} bytes", flush=True)
    throughput = train_throughput(make_store(WORK / f"throughput-{n}.zarr", n).path, settings)
    print(f"  in-memory {throughput['in_memory']['train_samples_per_s']:.0f} samples/s, zarr streaming "
          f"{throughput['zarr_streaming']['train_samples_per_s']:.0f} samples/s "
          f"(ratio {throughput['streaming_over_in_memory_throughput']:.2f})", flush=True)
    print(f"[{mode}] peak RSS vs store size", flush=True)
    curve = peak_memory_curve(settings)
    peaks = [r["peak_minus_baseline_rss_bytes"] for r in curve]
    result = {"mode": mode, "settings": settings, "machine": machine(), "started": started, "wall_s": time.time() - started,
              "throughput": throughput, "peak_memory_vs_store_size": curve,
              "peak_growth_largest_over_smallest": peaks[-1] / max(peaks[0], 1),
              "targets": {"streaming_within_10pct_of_in_memory": throughput["streaming_over_in_memory_throughput"] >= 0.9,
                          "store_size_ratio": curve[-1]["store_bytes_train"] / curve[0]["store_bytes_train"]},
              "note": "quick mode: tiny sizes, numbers mean nothing" if mode == "quick" else
                      "timings on a shared, loaded 2-core machine are noisy; compare ratios from the same run"}
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
