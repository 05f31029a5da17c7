"""Our side of a comparison, run as a child process (the mirror of ``peer_sbi.py``).

Trains one :class:`~sbi_core.flow_posterior.ConditionalFlowPosterior` on a training store, then
times sampling and ``log_prob`` on the test store's observations and writes samples and timings.

Usage: python -m benchmarks.ours_worker TRAIN.zarr TEST.zarr OUT.npz --config JSON
       [--num-samples N] [--c2st-observations K] [--batch-observations B]
       [--calibration-observations C --calibration-samples S] [--repeats R] [--no-speed]
       [--compilation-cache DIR] [--launched-at T]

Timed paths are what a user calls, end to end, with physical-unit output like the peer's:
one observation = ``encode_observation`` + ``sample_posterior`` + ``to_physical``; batched =
``batch_encode_observation`` + ``batch_sample_posterior`` + ``to_physical``. ``log_prob`` is
timed on parameters already in the posterior's configured space (its API).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from benchmarks.common import median_time, peak_rss_mb


def _to_physical(posterior: Any, samples: np.ndarray) -> np.ndarray:
    from sbi_core.posterior_base import PosteriorSamples

    shape = samples.shape
    flat = PosteriorSamples(samples=samples.reshape(-1, shape[-1]),
                            metadata={"parameter_space": posterior.parameter_space})
    return np.asarray(posterior.to_physical(flat).samples).reshape(shape)


def train(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Fit on the training store; return the posterior and the training timings."""
    if args.compilation_cache:
        from sbi_core.training import enable_compilation_cache

        enable_compilation_cache(args.compilation_cache)
    from sbi_core.dataset import open_store
    from sbi_core.posterior import ConditionalFlowPosterior

    from sbi_core.estimator_registry import split_fit_options

    store = open_store(args.train_store)
    # fit keywords (parameter_average_decay, center_spectrum_levels) may ride in the same config.
    constructor, fit_options = split_fit_options(json.loads(args.config))
    posterior = ConditionalFlowPosterior(parameter_dim=store.parameter_dim, **constructor)
    start = time.perf_counter()
    artifacts = posterior.fit(store, **fit_options)
    fit_wall = time.perf_counter() - start
    process_wall = time.time() - args.launched_at if args.launched_at else float("nan")
    epoch_times = [float(t) for t in artifacts.history.get("epoch_time_s", [])]
    meta = artifacts.metadata
    return posterior, {
        "fit_wall_s": fit_wall, "process_wall_s": process_wall, "epochs": int(meta.get("epochs_run", len(epoch_times))),
        "best_epoch": meta.get("best_epoch"), "stopped_early": meta.get("stopped_early"),
        # The first epoch carries the compilation; the steady-state epoch is the median of the rest.
        "seconds_per_epoch": float(np.median(epoch_times[1:] or epoch_times or [float("nan")])),
        "first_epoch_s": epoch_times[0] if epoch_times else None,
        "best_validation_loss": float(artifacts.validation_metrics.get("validation_loss", float("nan"))),
        "gate_passed": meta.get("gate_passed"), "train_rows": int(len(store.split_indices("train"))),
        "validation_rows": int(len(store.split_indices("validation"))),
    }


def time_sampling(posterior: Any, blocks: list, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of the single, batched and log_prob paths (after warm-up)."""
    n, batch = args.num_samples, blocks[: args.batch_observations]

    def single() -> np.ndarray:
        draws = posterior.sample_posterior(posterior.encode_observation(blocks[0]), n)
        return np.asarray(posterior.to_physical(draws).samples)

    def batched() -> np.ndarray:
        encoded = posterior.batch_encode_observation(batch)
        embeddings = np.stack([e.embedding for e in encoded])
        return _to_physical(posterior, posterior.batch_sample_posterior(embeddings, n, base_seed=1))

    encoded = posterior.encode_observation(blocks[0])
    theta = posterior.sample_posterior(encoded, n, seed=7).samples
    out = {"sample_single_seconds": median_time(single, args.repeats),
           "sample_batched_seconds": median_time(batched, max(1, args.repeats - 2)),
           "log_prob_seconds": median_time(lambda: posterior.log_prob(encoded, theta), args.repeats),
           "sample_single_space_seconds": median_time(lambda: posterior.sample_posterior(encoded, n), args.repeats)}
    out.update(num_samples=n, num_batched_observations=len(batch))
    return out


def c2st_samples(posterior: Any, blocks: list, args: argparse.Namespace) -> np.ndarray:
    """Physical-unit draws ``(K, n, P)`` for the first K test observations."""
    encoded = posterior.batch_encode_observation(blocks[: args.c2st_observations])
    embeddings = np.stack([e.embedding for e in encoded])
    return _to_physical(posterior, posterior.batch_sample_posterior(embeddings, args.num_samples, base_seed=11))


def calibration(posterior: Any, theta: np.ndarray, blocks: list, args: argparse.Namespace) -> dict[str, Any]:
    """Draws and physical-unit log-densities of ``C`` test observations for the coverage."""
    from sbi_core.calibration.posterior_arrays import posterior_calibration_arrays

    c = args.calibration_observations
    start = time.perf_counter()
    arrays = posterior_calibration_arrays(posterior, theta[:c], blocks[:c], num_samples=args.calibration_samples,
                                          seed=3)
    seconds = time.perf_counter() - start
    return {"arrays": {"cal_samples": arrays.samples, "cal_log_prob_samples": arrays.log_prob_samples,
                       "cal_log_prob_true": arrays.log_prob_true, "cal_theta": arrays.true_parameters},
            "timings": {"calibration_seconds": seconds, "calibration_sampling_seconds": arrays.sampling_seconds}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_store")
    p.add_argument("test_store")
    p.add_argument("output")
    p.add_argument("--config", default="{}", help="JSON constructor keywords of ConditionalFlowPosterior (and its fit keywords)")
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--c2st-observations", type=int, default=10)
    p.add_argument("--batch-observations", type=int, default=100)
    p.add_argument("--calibration-observations", type=int, default=0)
    p.add_argument("--calibration-samples", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-speed", dest="speed", action="store_false", help="skip the throughput timings")
    p.add_argument("--compilation-cache", default=None, help="JAX persistent compilation cache directory")
    p.add_argument("--launched-at", type=float, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    posterior, timings = train(args)
    print(f"ours_worker: trained {timings}", flush=True)
    from sbi_core.calibration.posterior_arrays import blocks_from_stacked
    from sbi_core.dataset import open_store

    test = open_store(args.test_store)
    theta_test, obs_test = test.read("all")
    blocks = blocks_from_stacked(test.observation_schema, obs_test)
    arrays: dict[str, Any] = {}
    if args.speed:
        timings.update(time_sampling(posterior, blocks, args))
    if args.c2st_observations > 0:
        arrays["samples"] = c2st_samples(posterior, blocks, args)
    if args.calibration_observations > 0:
        cal = calibration(posterior, np.asarray(theta_test), blocks, args)
        arrays.update(cal["arrays"])
        timings.update(cal["timings"])
    timings["peak_rss_mb"] = peak_rss_mb()
    np.savez(args.output, timings=json.dumps(timings), **arrays)
    print(json.dumps(timings), flush=True)


if __name__ == "__main__":
    main()
