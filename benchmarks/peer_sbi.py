"""Peer side of the benchmark: the PyTorch ``sbi`` package (0.27, CPU), NPE with an NSF.

Runs inside its own virtual environment (``benchmarks/.peer-venv``, created by
``benchmarks/peer_env.py``), so nothing of ours is imported here. Reads the training simulations
and test observations from an ``.npz`` written by our harness (``theta``, ``x``, ``x_test``,
``theta_test`` and the prior), trains ``NPE(density_estimator="nsf")`` with sbi's default training
settings (batch 200, lr 5e-4, 10% validation, stop after 20 epochs without improvement), and writes
timings and samples back. It mirrors ``benchmarks/ours_worker.py``.

Usage: peer_sbi.py INPUT.npz OUTPUT.npz [--num-samples N] [--c2st-observations K]
       [--batch-observations B] [--calibration-observations C --calibration-samples S]
       [--repeats R] [--seed S] [--no-speed] [--max-epochs E] [--launched-at T]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch


def _prior(data):
    from sbi.utils import BoxUniform

    if "prior_low" in data:
        return BoxUniform(torch.as_tensor(data["prior_low"]), torch.as_tensor(data["prior_high"]))
    normal = torch.distributions.Normal(torch.as_tensor(data["prior_loc"]), torch.as_tensor(data["prior_scale"]))
    return torch.distributions.Independent(normal, 1)


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def train(data, args):
    """Train NPE-NSF with sbi's defaults; return the posterior and the training timings."""
    from sbi.inference import NPE

    theta = torch.as_tensor(data["theta"], dtype=torch.float32)
    x = torch.as_tensor(data["x"], dtype=torch.float32)
    start = time.perf_counter()
    inference = NPE(prior=_prior(data), density_estimator="nsf", show_progress_bars=False)
    # sbi's default training settings; --max-epochs (quick smoke tests only) caps the epochs.
    cap = {} if args.max_epochs is None else {"max_num_epochs": args.max_epochs}
    estimator = inference.append_simulations(theta, x).train(show_train_summary=False, **cap)
    train_seconds = time.perf_counter() - start
    process_wall = time.time() - args.launched_at if args.launched_at else float("nan")
    summary = inference.summary
    epochs = int(summary["epochs_trained"][-1]) if summary.get("epochs_trained") else -1
    durations = [float(d) for d in summary.get("epoch_durations_sec", [])]
    timings = {"fit_wall_s": train_seconds, "process_wall_s": process_wall, "epochs": epochs,
               "seconds_per_epoch": float(np.median(durations)) if durations else train_seconds / max(epochs, 1),
               "best_validation_loss": float(summary["best_validation_loss"][-1]) if summary.get("best_validation_loss") else None}
    return inference.build_posterior(estimator), timings


def time_sampling(posterior, x_test, args) -> dict:
    n, batch = args.num_samples, x_test[: args.batch_observations]
    theta_eval = posterior.sample((n,), x=x_test[0], show_progress_bars=False)
    default = posterior.set_default_x(x_test[0])
    return {
        "sample_single_seconds": _median_time(
            lambda: posterior.sample((n,), x=x_test[0], show_progress_bars=False), args.repeats),
        "sample_batched_seconds": _median_time(
            lambda: posterior.sample_batched((n,), x=batch, show_progress_bars=False), max(1, args.repeats - 2)),
        # log_prob with sbi's defaults (leakage-normalised). sbi caches the leakage factor only at the
        # default x (otherwise it re-estimates it with 10,000 rejection draws per call), so set it:
        # the warm-up call computes the factor and the timed calls pay for the flow alone.
        "log_prob_seconds": _median_time(lambda: default.log_prob(theta_eval), args.repeats),
        "num_samples": n, "num_batched_observations": int(batch.shape[0]),
    }


def calibration(posterior, data, args) -> tuple[dict, dict]:
    """Draws ``(C, S, P)`` and log-densities of draws and truths (unnormalised: HPD ranks only)."""
    c, s = args.calibration_observations, args.calibration_samples
    x = torch.as_tensor(data["x_test"][:c], dtype=torch.float32)
    truth = torch.as_tensor(data["theta_test"][:c], dtype=torch.float32)
    start = time.perf_counter()
    samples = posterior.sample_batched((s,), x=x, show_progress_bars=False)  # (S, C, P)
    sampling = time.perf_counter() - start
    lps = posterior.log_prob_batched(samples, x=x, norm_posterior=False)  # (S, C)
    lpt = posterior.log_prob_batched(truth, x=x, norm_posterior=False)  # (C,)
    seconds = time.perf_counter() - start
    arrays = {"cal_samples": samples.permute(1, 0, 2).numpy(), "cal_log_prob_samples": lps.T.numpy(),
              "cal_log_prob_true": lpt.reshape(-1).numpy(), "cal_theta": truth.numpy()}
    return arrays, {"calibration_seconds": seconds, "calibration_sampling_seconds": sampling}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--c2st-observations", type=int, default=10)
    parser.add_argument("--batch-observations", type=int, default=100)
    parser.add_argument("--calibration-observations", type=int, default=0)
    parser.add_argument("--calibration-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-speed", dest="speed", action="store_false")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap (default: sbi's, i.e. none)")
    parser.add_argument("--launched-at", type=float, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data = dict(np.load(args.input))
    torch.manual_seed(args.seed)
    posterior, timings = train(data, args)
    print(f"peer_sbi: trained {timings}", flush=True)
    x_test = torch.as_tensor(data["x_test"], dtype=torch.float32)
    arrays = {}
    if args.speed:
        timings.update(time_sampling(posterior, x_test, args))
    if args.c2st_observations > 0:
        k = args.c2st_observations
        draws = posterior.sample_batched((args.num_samples,), x=x_test[:k], show_progress_bars=False)
        arrays["samples"] = draws.permute(1, 0, 2).numpy()  # (K, n, P)
    if args.calibration_observations > 0:
        cal_arrays, cal_timings = calibration(posterior, data, args)
        arrays.update(cal_arrays)
        timings.update(cal_timings)
    timings.update(peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                   torch_version=torch.__version__, torch_threads=torch.get_num_threads())
    import sbi

    timings["sbi_version"] = sbi.__version__
    np.savez(args.output, timings=json.dumps(timings), **arrays)
    print(json.dumps(timings), flush=True)


if __name__ == "__main__":
    main()
