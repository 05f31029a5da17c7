"""Validate a 200,000 x 233 store and record peak memory and time.

Usage: ``python -m benchmarks.validate_large [--samples 200000] [--length 233] [--store PATH]``.
Writes ``benchmarks/results-validation.json``. The store is written with plain zarr (random,
in-bounds data, chunks of 1024 samples like ``sbi-ops simulate``); each validation runs in a fresh
subprocess so its peak RSS is its own. Not part of the test suite (it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).with_name("results-validation.json")
PRIORS = [
    ("t_eq", "K", {"kind": "uniform", "low": 500.0, "high": 2500.0}),
    ("log_kzz", "dex", {"kind": "uniform", "low": 5.0, "high": 13.0}),
    ("metallicity", "x solar", {"kind": "log_uniform", "low": 0.1, "high": 1000.0}),
    ("c_to_o", "", {"kind": "uniform", "low": 0.1, "high": 1.6}),
    ("log_g", "cgs", {"kind": "normal", "loc": 3.0, "scale": 0.2}),
    ("r_p", "R_jup", {"kind": "uniform", "low": 0.8, "high": 2.0}),
]


def _draw(rng: np.random.Generator, prior: dict, n: int) -> np.ndarray:
    if prior["kind"] == "uniform":
        return rng.uniform(prior["low"], prior["high"], n)
    if prior["kind"] == "log_uniform":
        return np.exp(rng.uniform(np.log(prior["low"]), np.log(prior["high"]), n))
    return rng.normal(prior["loc"], prior["scale"], n)


def write_store(path: Path, n: int, length: int, chunk: int = 1024) -> float:
    """Write the benchmark store with plain zarr; return seconds taken."""
    import zarr

    began = time.perf_counter()
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["sbi_store"] = {
        "format_version": "1.0", "task": {"name": "benchmark_transmission", "version": "1"},
        "parameters": [{"name": a, "unit": u, "prior": p} for a, u, p in PRIORS],
        "blocks": [{"name": "spectrum", "modality": "spectrum", "length": length,
                    "has_uncertainties": True}],
        "noise_model": None, "n_samples": n}
    params = group.create_array("parameters", shape=(n, len(PRIORS)), chunks=(chunk, len(PRIORS)),
                                dtype="float32")
    block = group.require_group("blocks").require_group("spectrum")
    values = block.create_array("values", shape=(n, length), chunks=(chunk, length),
                                dtype="float32")
    unc = block.create_array("uncertainties", shape=(n, length), chunks=(chunk, length),
                             dtype="float32")
    block.create_array("coordinates", data=np.linspace(0.6, 5.0, length))
    rng = np.random.default_rng(0)
    step = 16 * chunk
    for start in range(0, n, step):
        rows = min(step, n - start)
        params[start:start + rows] = np.stack([_draw(rng, p, rows) for _, _, p in PRIORS], 1)
        values[start:start + rows] = rng.uniform(0.01, 0.02, (rows, length)).astype(np.float32)
        unc[start:start + rows] = rng.uniform(1e-4, 3e-4, (rows, length)).astype(np.float32)
    return time.perf_counter() - began


def _measure(store: str, fingerprint: bool) -> dict:
    """Run in the subprocess: validate and sample RSS every 20 ms."""
    import psutil

    from validation import validate_store

    # Warm up on a tiny store first so lazily imported libraries (scipy.stats, pandera backends,
    # jax via sbi_core.priors) count in the baseline, not in the validation's growth.
    warm = Path(store).with_name("warmup-small.zarr")
    write_store(warm, 2048, 8)
    validate_store(warm, fingerprint=fingerprint)
    proc = psutil.Process()
    baseline = proc.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss)

    threading.Thread(target=poll, daemon=True).start()
    began = time.perf_counter()
    report = validate_store(store, fingerprint=fingerprint)
    elapsed = time.perf_counter() - began
    done.set()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return {"fingerprint": fingerprint, "valid": report.valid, "seconds": round(elapsed, 2),
            "rss_baseline_mib": round(baseline / 2**20, 1),
            "rss_peak_mib": round(peak[0] / 2**20, 1),
            "rss_growth_mib": round((peak[0] - baseline) / 2**20, 1),
            "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "n_errors": len(report.errors), "n_warnings": len(report.warnings),
            "read_step_samples": report.statistics.get("read_step_samples")}


def _run(store: Path, fingerprint: bool, samples: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.validate_large", "--measure", str(store)]
    out = subprocess.run(cmd + (["--fingerprint"] if fingerprint else []), check=True,
                         capture_output=True, text=True).stdout
    return {"samples": samples, **json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--length", type=int, default=233)
    parser.add_argument("--store", type=Path, default=Path("/tmp/sbi-ops-validate-large.zarr"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--fingerprint", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(args.measure, args.fingerprint)))
        return
    # A quarter-size store too: if memory is bounded, growth does not scale with the samples.
    quarter = args.store.with_name("quarter-" + args.store.name)
    write_store(quarter, args.samples // 4, args.length)
    write_s = write_store(args.store, args.samples, args.length)
    runs = [_run(quarter, False, args.samples // 4)]
    runs += [_run(args.store, fingerprint, args.samples) for fingerprint in (False, True)]
    size = sum(p.stat().st_size for p in args.store.rglob("*") if p.is_file())
    data_bytes = args.samples * (2 * args.length + len(PRIORS)) * 4
    result = {"samples": args.samples, "length": args.length, "parameters": len(PRIORS),
              "uncompressed_mib": round(data_bytes / 2**20, 1),
              "store_on_disk_mib": round(size / 2**20, 1), "write_seconds": round(write_s, 1),
              "runs": runs, "machine": {"python": platform.python_version(),
                                        "cpu_count": __import__("os").cpu_count(),
                                        "note": "shared 2-core machine, other jobs running"},
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
