"""Peer side of the benchmark: the PyTorch ``sbi`` package (0.27, CPU), NPE with an NSF.

Runs inside its own virtual environment (``benchmarks/.peer-venv``, created by
``benchmarks/peer_env.py``), so nothing of ours is imported here. Reads the training simulations
and test observations from an ``.npz`` written by our harness, trains ``NPE(density_estimator=
"nsf")`` with sbi's default training settings, and writes timings and samples back.

Usage: peer_sbi.py INPUT.npz OUTPUT.npz [--num-samples N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch


def _box_or_normal_prior(low, high, loc, scale):
    from sbi.utils import BoxUniform

    if low is not None:
        return BoxUniform(torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32))
    return torch.distributions.Independent(
        torch.distributions.Normal(torch.as_tensor(loc, dtype=torch.float32), torch.as_tensor(scale, dtype=torch.float32)), 1
    )


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = np.load(args.input)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from sbi.inference import NPE

    prior = _box_or_normal_prior(
        data["prior_low"] if "prior_low" in data else None,
        data["prior_high"] if "prior_high" in data else None,
        data["prior_loc"] if "prior_loc" in data else None,
        data["prior_scale"] if "prior_scale" in data else None,
    )
    theta = torch.as_tensor(data["theta"], dtype=torch.float32)
    x = torch.as_tensor(data["x"], dtype=torch.float32)
    x_test = torch.as_tensor(data["x_test"], dtype=torch.float32)

    start = time.perf_counter()
    inference = NPE(prior=prior, density_estimator="nsf", show_progress_bars=False)
    estimator = inference.append_simulations(theta, x).train(show_train_summary=False)
    train_seconds = time.perf_counter() - start
    epochs = int(inference.summary["epochs_trained"][-1]) if "epochs_trained" in inference.summary else -1
    posterior = inference.build_posterior(estimator)

    n = args.num_samples
    single_seconds = _median_time(lambda: posterior.sample((n,), x=x_test[0], show_progress_bars=False), args.repeats)
    batched_seconds = _median_time(
        lambda: posterior.sample_batched((n,), x=x_test, show_progress_bars=False), max(1, args.repeats - 2)
    )
    samples = posterior.sample_batched((n,), x=x_test, show_progress_bars=False).numpy()  # (n, B, P)
    theta_eval = posterior.sample((n,), x=x_test[0], show_progress_bars=False)
    log_prob_seconds = _median_time(lambda: posterior.log_prob(theta_eval, x=x_test[0]), args.repeats)

    timings = {
        "train_seconds": train_seconds,
        "epochs": epochs,
        "seconds_per_epoch": train_seconds / max(epochs, 1),
        "sample_single_seconds": single_seconds,
        "sample_batched_seconds": batched_seconds,
        "log_prob_seconds": log_prob_seconds,
        "num_observations": int(x_test.shape[0]),
        "num_samples": n,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "torch_version": torch.__version__,
    }
    np.savez(args.output, samples=np.transpose(samples, (1, 0, 2)), timings=json.dumps(timings))
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
