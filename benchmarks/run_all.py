"""Run the benchmark suites and write ``benchmarks/results.json`` and ``benchmarks/results.md``.

    python -m benchmarks.run_all [--quick] [--only NAME ...]      (``make bench`` runs it)

Suites: ``gaussian_linear``, ``two_moons``, ``exo_transmission`` (ours vs the PyTorch ``sbi``
peer, :mod:`benchmarks.bench_posteriors`), ``flow_matching`` (the flow-matching engineer's
``benchmarks/bench_flow_matching.py``, run unchanged; its own results file is linked),
``serving`` (``/invocations`` latency and throughput, :mod:`benchmarks.bench_serving`) and
``scaling`` (time and C2ST vs simulations, time vs batch size, memory vs store size,
:mod:`benchmarks.bench_scaling`); the last two also write their own results files and plots.
``--quick`` runs tiny sizes to smoke-test the harness: its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from benchmarks.common import log, machine_info  # noqa: E402

RESULTS_JSON = Path(__file__).with_name("results.json")
RESULTS_MD = Path(__file__).with_name("results.md")
QUICK_JSON, QUICK_MD = RESULTS_JSON.with_name("results-quick.json"), RESULTS_MD.with_name("results-quick.md")
SUITES = ("gaussian_linear", "two_moons", "exo_transmission", "flow_matching", "serving", "scaling")

FULL = {"num_simulations": 10_000, "exo_simulations": 20_000, "num_test": 200, "max_epochs": 300,
        "num_samples": 10_000, "c2st_observations": 10, "c2st_max_samples": None, "batch_observations": 100,
        "calibration_observations": 200, "calibration_samples": 1000, "repeats": 5, "peer": True,
        "peer_max_epochs": None, "warm_cache_rerun": True, "child_timeout_s": 7200, "training_seeds": 3}
QUICK = {**FULL, "num_simulations": 1_000, "exo_simulations": 2_000, "num_test": 100, "max_epochs": 3,
         "num_samples": 500, "c2st_observations": 3, "c2st_max_samples": 300, "batch_observations": 10, "calibration_observations": 50,
         "calibration_samples": 200, "repeats": 2, "peer_max_epochs": 3, "training_seeds": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: smoke-test the harness")
    p.add_argument("--only", nargs="+", choices=SUITES, metavar="NAME", help=f"subset of {', '.join(SUITES)}")
    p.add_argument("--no-peer", dest="peer", action="store_false", help="skip the sbi peer (ours only)")
    p.add_argument("--c2st-max-samples", type=int, default=None,
                   help="classify at most this many draws per set (default: all 10,000 as in sbibm; slow)")
    p.add_argument("--training-seeds", type=int, default=None,
                   help="two_moons: train ours and sbi with seeds 0..N-1 and compare mean C2STs "
                        "(default 3; 2 with --quick); timings come from seed 0")
    p.add_argument("--output-json", type=Path, default=RESULTS_JSON)
    p.add_argument("--output-md", type=Path, default=RESULTS_MD)
    return p.parse_args(argv)


def run_flow_matching(quick: bool) -> dict[str, Any]:
    """The flow-matching suite (issue 4), run as written by its owner; summary kept here."""
    from benchmarks import bench_flow_matching

    # A smoke test writes beside, never over, the flow-matching engineer's committed results.
    argv = ["--exo"] + (["--quick", "--output", str(QUICK_JSON.with_name("results-flow-matching-quick.json"))]
                        if quick else [])
    start = time.perf_counter()
    results = bench_flow_matching.main(argv)
    output = Path(argv[-1]).name if quick else bench_flow_matching.RESULTS.name
    summary = {task: results[task].get("summary") for task in ("gaussian_linear", "two_moons") if task in results}
    exo = results.get("exo_transmission", {})
    return {"summary": summary, "training_time_s": {t: results[t].get("training_time_s") for t in summary},
            "exo_importance_sampling": {k: exo.get(k) for k in ("efficiency_median", "efficiency_mean",
                                                                 "num_low_efficiency", "training_time_s")},
            "results_file": output, "suite_wall_s": time.perf_counter() - start}


def run_serving_or_scaling(name: str, quick: bool) -> dict[str, Any]:
    """``bench_serving`` / ``bench_scaling``; with ``--quick`` they write their ``-quick`` files."""
    from benchmarks import bench_scaling, bench_serving

    module = bench_serving if name == "serving" else bench_scaling
    start = time.perf_counter()
    results = module.main(["--quick"] if quick else [])
    return {**results, "suite_wall_s": time.perf_counter() - start}


def run_suite(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    if name == "flow_matching":
        return run_flow_matching(settings["quick"])
    if name in ("serving", "scaling"):
        return run_serving_or_scaling(name, settings["quick"])
    from benchmarks.bench_posteriors import plans, run_task

    return run_task(plans(settings)[name], settings)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    settings = {**(QUICK if args.quick else FULL), "quick": args.quick, "peer": args.peer}
    if args.quick and args.output_json == RESULTS_JSON and args.output_md == RESULTS_MD:
        # A smoke test never overwrites the real results.
        args.output_json, args.output_md = QUICK_JSON, QUICK_MD
    if args.c2st_max_samples is not None:
        settings["c2st_max_samples"] = args.c2st_max_samples
    if args.training_seeds is not None:
        if args.training_seeds < 1:
            raise SystemExit(f"--training-seeds must be >= 1, got {args.training_seeds}")
        settings["training_seeds"] = args.training_seeds
    from benchmarks.bench_posteriors import RECIPE

    results: dict[str, Any] = {"machine": machine_info(), "settings": settings, "recipe": RECIPE, "suites": {}}
    log(f"machine: {results['machine']['cpu_count']} cores, load average {results['machine']['load_average_at_start']}")
    start = time.perf_counter()
    for name in args.only or SUITES:
        try:
            results["suites"][name] = run_suite(name, settings)
        except Exception as exc:  # noqa: BLE001 - one failing suite must not hide the others
            log(f"{name}: FAILED: {exc!r}")
            results["suites"][name] = {"error": repr(exc)}
        _write(results, args)
    results["total_wall_s"] = time.perf_counter() - start
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    _write(results, args)
    log(f"wrote {args.output_json} and {args.output_md} in {results['total_wall_s']:.0f} s")
    return results


def _write(results: dict[str, Any], args: argparse.Namespace) -> None:
    from benchmarks.report import render

    args.output_json.write_text(json.dumps(results, indent=2, default=str))
    args.output_md.write_text(render(results))


if __name__ == "__main__":
    main()
