"""Scaling curves (issue 8, item 3): simulations, batch size, and memory vs store size.

1. **Training time and C2ST vs number of simulations** (``two_moons``: 1e3, 1e4, 1e5, 1e6). The
   data and scores are those of the posterior suites (``benchmarks.common.prepare_task_data``: a
   90/10 train/validation split; ``bench_posteriors.reference_samples`` / ``score_c2st``: sbibm's
   C2ST against exact reference draws), the model is the benchmark recipe
   (``bench_posteriors.RECIPE``, spline flow, unconstrained space) trained by
   ``ours_worker.train`` in this process. Epochs are capped per size (``epoch_caps``: at 1e5 and
   1e6 one epoch is 352 and 3,516 steps, so early stopping to convergence would take hours on 2
   cores) and the cosine schedule is stretched over the cap (``lr_schedule_total_epochs =
   min(150, cap)``) so the learning rate decays fully; early stopping (patience 20) still applies.
   The cap is recorded with every row, and the table says whether early stopping or the cap
   ended training.
2. **Time per epoch vs batch size**: the same model on one store (``batch_store`` simulations),
   a fixed number of epochs per batch size (8); median epoch time over the epochs after the first
   (compilation), and training samples per second.
3. **Peak memory vs store size, store larger than the memory budget** (streaming path, target
   flat): ``bench_input_pipeline.peak_memory_curve`` (a fresh child per store streams one
   shuffled epoch with a fixed memory budget; peak RSS above the post-import baseline), run here
   unchanged at the sizes of its ``medium`` mode (``--memory-mode`` picks another).
4. **Training throughput from a Zarr store vs from memory** (part ``pipeline``, target: streaming
   within 10% of in-memory): ``bench_input_pipeline.train_throughput`` on a store larger than the
   streaming budget, same sizes mode as the memory curve.

Results: ``benchmarks/results-scaling.json`` and PNG plots ``benchmarks/scaling-simulations.png``,
``scaling-batch-size.png``, ``scaling-memory.png`` (``--quick``: ``results-scaling-quick.json``
and ``*-quick.png``: tiny sizes whose numbers mean nothing). Scratch stores:
``benchmarks/.work/scaling/``.

    python -m benchmarks.bench_scaling [--quick] [--parts simulations batch_size pipeline memory]
                                       [--output FILE] [--plot-dir DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
WORK = BENCH / ".work" / "scaling"
RESULTS_JSON = BENCH / "results-scaling.json"
PARTS = ("simulations", "batch_size", "pipeline", "memory")
TASK = "two_moons"

FULL: dict[str, Any] = {
    "sizes": [1_000, 10_000, 100_000, 1_000_000],
    "epoch_caps": {"1000": 300, "10000": 300, "100000": 40, "1000000": 6},
    "num_test": 20, "c2st_observations": 5, "c2st_samples": 2000, "c2st_max_samples": 2000,
    "batch_sizes": [64, 128, 256, 512, 1024, 2048], "batch_store": 20_000, "batch_epochs": 8,
    "memory_mode": "medium", "model_overrides": {},
}
QUICK: dict[str, Any] = {
    "sizes": [300, 600], "epoch_caps": {"300": 2, "600": 2}, "num_test": 5, "c2st_observations": 1,
    "c2st_samples": 200, "c2st_max_samples": 200, "batch_sizes": [32, 64], "batch_store": 600, "batch_epochs": 2,
    "memory_mode": "quick",
    "model_overrides": {"embedding_dim": 8, "hidden_dim": 16, "num_coupling_layers": 2, "num_spline_bins": 4},
}


def log(message: str) -> None:
    print(f"[scaling {time.strftime('%H:%M:%S')}] {message}", flush=True)


def model_config(settings: dict[str, Any], num_epochs: int, **extra: Any) -> dict[str, Any]:
    """The benchmark recipe (spline, unconstrained) with ``num_epochs`` and the schedule fitted to it."""
    from benchmarks.bench_posteriors import RECIPE

    config = {**RECIPE, "flow_family": "spline", "parameter_space": "unconstrained", **settings["model_overrides"],
              "num_epochs": int(num_epochs)}
    config["lr_schedule_total_epochs"] = float(min(RECIPE["lr_schedule_total_epochs"], num_epochs))
    config.update(extra)
    return config


def _train(store: Path, config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from benchmarks.ours_worker import train

    return train(SimpleNamespace(train_store=str(store), config=json.dumps(config), compilation_cache=None,
                                 launched_at=None))


# ------------------------------------------------------------------------------------ simulations
def simulations_curve(settings: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Training time and C2ST for each number of simulations."""
    from benchmarks.bench_posteriors import reference_samples, score_c2st
    from benchmarks.common import prepare_task_data
    from benchmarks.ours_worker import c2st_samples
    from sbi_core.calibration.posterior_arrays import blocks_from_stacked
    from sbi_core.dataset import open_store

    rows = []
    for n in settings["sizes"]:
        cap = int(settings["epoch_caps"][str(n)])
        log(f"simulations: {n} {TASK} simulations (epoch cap {cap})")
        start = time.perf_counter()
        files = prepare_task_data(TASK, n, settings["num_test"], work / f"{TASK}-{n}")
        data_s = time.perf_counter() - start
        config = model_config(settings, cap)
        posterior, timings = _train(files["train"], config)
        test = open_store(files["test"])
        _, obs = test.read("all")
        blocks = blocks_from_stacked(test.observation_schema, obs)
        k, draws = settings["c2st_observations"], settings["c2st_samples"]
        samples = c2st_samples(posterior, blocks, SimpleNamespace(c2st_observations=k, num_samples=draws))
        reference = reference_samples(TASK, files, k, draws)
        scores = score_c2st(samples, reference, {"c2st_max_samples": settings["c2st_max_samples"]})
        row = {"num_simulations": n, "epoch_cap": cap, "data_s": data_s, **timings, **scores,
               "ended_by": "early stopping" if timings.get("stopped_early") else "epoch cap",
               "steps_per_epoch": int(np.ceil(timings["train_rows"] / config["batch_size"])),
               "load_average": list(os.getloadavg())}
        rows.append(row)
        log(f"  fit {row['fit_wall_s']:.1f} s, {row['epochs']} epochs ({row['ended_by']}), "
            f"{row['seconds_per_epoch']:.3f} s/epoch, C2ST {row['c2st']:.3f}, load {row['load_average'][0]:.1f}")
    return rows


# ------------------------------------------------------------------------------------- batch size
def batch_size_curve(settings: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Median seconds per epoch (after the compiling first) for each batch size on one store."""
    from benchmarks.common import prepare_task_data

    n = settings["batch_store"]
    existing = work / f"{TASK}-{n}" / "train.zarr"
    store = existing if existing.exists() else prepare_task_data(TASK, n, settings["num_test"], work / f"{TASK}-{n}")["train"]
    rows = []
    for batch in settings["batch_sizes"]:
        config = model_config(settings, settings["batch_epochs"], batch_size=int(batch), early_stopping_patience=None)
        _, timings = _train(store, config)
        epoch = timings["seconds_per_epoch"]
        rows.append({"batch_size": int(batch), "num_simulations": n, "train_rows": timings["train_rows"],
                     "epochs": timings["epochs"], "seconds_per_epoch": epoch, "first_epoch_s": timings["first_epoch_s"],
                     "steps_per_epoch": int(np.ceil(timings["train_rows"] / batch)),
                     "train_samples_per_s": timings["train_rows"] / epoch if epoch else None,
                     "load_average": list(os.getloadavg())})
        log(f"batch size {batch}: {epoch:.3f} s/epoch ({rows[-1]['train_samples_per_s']:.0f} samples/s)")
    return rows


# ----------------------------------------------------------------------------------------- memory
def memory_curve(settings: dict[str, Any], work: Path) -> dict[str, Any]:
    """``bench_input_pipeline.peak_memory_curve`` at the sizes of ``settings['memory_mode']``.

    Its stores stay in its own scratch folder (reused across runs) unless ``work`` is not the
    default scratch folder (a test), in which case they go under ``work``.
    """
    from benchmarks import bench_input_pipeline as pipe

    mode = settings["memory_mode"]
    if work.resolve() != WORK.resolve():
        pipe.WORK = work / "input-pipeline"
    pipe.WORK.mkdir(parents=True, exist_ok=True)
    rows = pipe.peak_memory_curve(pipe.SETTINGS[mode])
    peaks = [r["peak_minus_baseline_rss_bytes"] for r in rows]
    return {"mode": mode, "settings": pipe.SETTINGS[mode], "rows": rows,
            "store_size_ratio": rows[-1]["store_bytes_train"] / rows[0]["store_bytes_train"],
            "peak_growth_largest_over_smallest": peaks[-1] / max(peaks[0], 1), "load_average": list(os.getloadavg())}


# --------------------------------------------------------------------------------------- pipeline
def pipeline_throughput(settings: dict[str, Any], work: Path) -> dict[str, Any]:
    """Training throughput fed from a Zarr store larger than the memory budget vs from memory
    (``bench_input_pipeline.train_throughput`` at the sizes of ``settings['memory_mode']``;
    target: streaming within 10% of in-memory)."""
    from benchmarks import bench_input_pipeline as pipe

    mode = settings["memory_mode"]
    if work.resolve() != WORK.resolve():
        pipe.WORK = work / "input-pipeline"
    pipe.WORK.mkdir(parents=True, exist_ok=True)
    n = int(pipe.SETTINGS[mode]["n_train_store"] / 0.8)
    out = pipe.train_throughput(pipe.make_store(pipe.WORK / f"throughput-{n}.zarr", n).path, pipe.SETTINGS[mode])
    return {"mode": mode, "settings": pipe.SETTINGS[mode], **out, "load_average": list(os.getloadavg())}


# ------------------------------------------------------------------------------------------ plots
def plot(results: dict[str, Any], plot_dir: Path, suffix: str = "") -> list[str]:
    """PNG plots of the curves present in ``results``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    loads = [r["load_average"][0] for part in ("simulations", "batch_size") for r in results.get(part) or []]
    loads += [results["memory"]["load_average"][0]] if results.get("memory") else []
    title = (f"(1-min load average {min(loads):.1f}-{max(loads):.1f} on {results['machine'].get('cpu_count')} shared cores)"
             if loads else "")
    sims = results.get("simulations")
    if sims:
        n = [r["num_simulations"] for r in sims]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(n, [r["fit_wall_s"] for r in sims], "o-", color="C0", label="fit() wall (s)")
        ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel("simulations"), ax.set_ylabel("fit() wall (s)", color="C0")
        for r in sims:
            ax.annotate(f"{r['epochs']} ep", (r["num_simulations"], r["fit_wall_s"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)
        ax2 = ax.twinx()
        ax2.plot(n, [r["c2st"] for r in sims], "s--", color="C1")
        ax2.axhline(0.55, color="C1", lw=0.5, ls=":")
        ax2.set_ylabel("C2ST (0.5 = perfect)", color="C1")
        ax.set_title(f"{TASK}: training time and C2ST vs simulations\n{title}", fontsize=9)
        written.append(_save(fig, plot_dir / f"scaling-simulations{suffix}.png"))
    batch = results.get("batch_size")
    if batch:
        b = [r["batch_size"] for r in batch]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(b, [r["seconds_per_epoch"] for r in batch], "o-", color="C0")
        ax.set_xscale("log", base=2), ax.set_yscale("log"), ax.set_xlabel("batch size")
        ax.set_ylabel("seconds per epoch (median)", color="C0")
        ax2 = ax.twinx()
        ax2.plot(b, [r["train_samples_per_s"] for r in batch], "s--", color="C1")
        ax2.set_ylabel("training samples / s", color="C1")
        ax.set_title(f"{TASK}, {batch[0]['train_rows']} training rows: epoch time vs batch size\n{title}", fontsize=9)
        written.append(_save(fig, plot_dir / f"scaling-batch-size{suffix}.png"))
    mem = results.get("memory")
    if mem and mem.get("rows"):
        rows = mem["rows"]
        size = [r["store_bytes_train"] / 2**20 for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(size, [r["peak_minus_baseline_rss_bytes"] / 2**20 for r in rows], "o-", label="peak RSS above baseline")
        ax.plot(size, size, ":", color="grey", label="store size (what loading it would cost)")
        ax.axhline(rows[0]["memory_budget_bytes"] / 2**20, color="C3", ls="--", label="memory budget")
        ax.set_xscale("log", base=2), ax.set_yscale("log", base=2)
        ax.set_xlabel("training split size (MiB)"), ax.set_ylabel("MiB"), ax.legend(fontsize=7)
        ax.set_title(f"streaming one epoch: peak memory vs store size\n{title}", fontsize=9)
        written.append(_save(fig, plot_dir / f"scaling-memory{suffix}.png"))
    return written


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ------------------------------------------------------------------------------------------ report
def _loads(values: Any) -> str:
    """A load-average triple as ``1.2 / 3.4 / 5.6`` (1, 5, 15 minutes)."""
    return " / ".join(f"{float(v):.1f}" for v in values) if values else "n/a"


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{float(value):.{digits}g}" if abs(float(value)) < 1000 else f"{float(value):,.0f}"


def markdown_lines(results: dict[str, Any], heading: str = "#") -> list[str]:
    """The tables of ``results`` (used by ``benchmarks/report.py`` too)."""
    lines = [f"{heading} Scaling curves (issue 8, item 3)", ""]
    if results.get("settings", {}).get("quick"):
        lines += ["> **--quick run**: tiny sizes to smoke-test the harness. These numbers mean nothing.", ""]
    if "error" in results:
        return lines + [f"failed: `{results['error']}`", ""]
    m = results.get("machine", {})
    lines += [f"- machine: {m.get('cpu_count')} cores; load average at start {_loads(m.get('load_average_at_start'))}, "
              f"at end {_loads(m.get('load_average_at_end'))}; plots: {', '.join(Path(p).name for p in results.get('plots', []))}", ""]
    if results.get("previous_run_machine"):
        prev = results["previous_run_machine"]
        lines += [f"- parts not rerun come from an earlier run (commit {str(prev.get('git_commit'))[:7]}, load average "
                  f"at start {_loads(prev.get('load_average_at_start'))}); every row carries its own load average", ""]
    sims = results.get("simulations")
    if sims:
        lines += [f"Training time and C2ST vs simulations ({TASK}; recipe of the posterior suites, spline flow; "
                  f"C2ST on {results['settings'].get('c2st_observations')} test observations x "
                  f"{results['settings'].get('c2st_samples')} draws; epochs capped per size, schedule fitted to the cap):", "",
                  "| simulations | epoch cap | epochs run | ended by | steps/epoch | s/epoch | first epoch (s, compiles) "
                  "| fit() wall (s) | C2ST | load avg |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sims:
            lines.append(f"| {_f(r['num_simulations'])} | {r['epoch_cap']} | {r['epochs']} | {r['ended_by']} | "
                         f"{_f(r['steps_per_epoch'])} | {_f(r['seconds_per_epoch'])} | {_f(r.get('first_epoch_s'))} | "
                         f"{_f(r['fit_wall_s'])} | "
                         f"{_f(r['c2st'])} | {_f(r['load_average'][0])} |")
        first = sims[0]
        lines += ["", f"- at {_f(first['num_simulations'])} simulations the first epoch (compilation) is "
                      f"{_f(first.get('first_epoch_s'))} of {_f(first['fit_wall_s'])} s; rows ended by the epoch cap "
                      "show what that budget buys, not the converged C2ST", ""]
    batch = results.get("batch_size")
    if batch:
        lines += [f"Time per epoch vs batch size ({_f(batch[0]['train_rows'])} training rows, "
                  f"{batch[0]['epochs']} epochs each, median after the compiling first):", "",
                  "| batch size | steps/epoch | s/epoch | training samples/s | first epoch (s, compiles) | load avg |",
                  "|---|---|---|---|---|---|"]
        for r in batch:
            lines.append(f"| {r['batch_size']} | {_f(r['steps_per_epoch'])} | {_f(r['seconds_per_epoch'])} | "
                         f"{_f(r['train_samples_per_s'])} | {_f(r['first_epoch_s'])} | {_f(r['load_average'][0])} |")
        epochs = [r["seconds_per_epoch"] for r in batch]
        lines += ["", f"- seconds per epoch span {_f(min(epochs))}-{_f(max(epochs))} s over a {batch[-1]['batch_size'] // batch[0]['batch_size']}x "
                      "range of batch sizes: an epoch is one compiled scan, so its cost follows the number of samples, "
                      "not of steps; on a loaded machine the differences between rows are within run-to-run noise "
                      "(no trend claimed unless the load average is below the core count)", ""]
    pipe = results.get("pipeline")
    if pipe and "in_memory" in pipe:
        ratio = pipe["streaming_over_in_memory_throughput"]
        lines += [f"Training throughput, Zarr store vs memory ({_f(pipe['n_train'])} training rows, "
                  f"{_f(pipe['train_split_bytes'] / 2**20)} MiB, streamed with a "
                  f"{_f(pipe['memory_budget_bytes_streaming'] / 2**20)} MiB budget; "
                  "`bench_input_pipeline.train_throughput`; target: streaming within 10% of in-memory):", "",
                  "| source | s/epoch (median after the compiling first) | training samples/s |", "|---|---|---|"]
        for name in ("in_memory", "zarr_streaming"):
            lines.append(f"| {name} | {_f(pipe[name]['median_epoch_s'])} | {_f(pipe[name]['train_samples_per_s'])} |")
        lines += ["", f"- streaming / in-memory throughput {_f(ratio)}: target "
                      f"{'**met**' if ratio >= 0.9 else '**not met**'}; load average {_f(pipe['load_average'][0])}", ""]
    mem = results.get("memory")
    if mem and mem.get("rows"):
        budget = mem["rows"][0]["memory_budget_bytes"] / 2**20
        lines += [f"Peak memory vs store size, streaming with a {budget:g} MiB budget "
                  f"(`bench_input_pipeline.peak_memory_curve`, its `{mem['mode']}` sizes; target: flat):", "",
                  "| training split (MiB) | streamed | peak RSS above baseline (MiB) | peak RSS (MiB) |", "|---|---|---|---|"]
        for r in mem["rows"]:
            lines.append(f"| {_f(r['store_bytes_train'] / 2**20)} | {r['streamed']} | "
                         f"{_f(r['peak_minus_baseline_rss_bytes'] / 2**20)} | {_f(r['peak_rss_bytes'] / 2**20)} |")
        first, last = mem["rows"][0], mem["rows"][-1]
        lines += ["", f"- store grew {_f(mem['store_size_ratio'])}x, peak above baseline grew "
                      f"{_f(mem['peak_growth_largest_over_smallest'])}x "
                      f"({_f(first['peak_minus_baseline_rss_bytes'] / 2**20)} -> {_f(last['peak_minus_baseline_rss_bytes'] / 2**20)} MiB "
                      f"with a {budget:g} MiB budget): bounded by the budget plus the prefetched batches, "
                      "not by the store", ""]
    return lines


def render(results: dict[str, Any]) -> str:
    return "\n".join(markdown_lines(results)) + "\n"


# -------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, numbers mean nothing")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="override the numbers of simulations")
    parser.add_argument("--memory-mode", default=None, help="bench_input_pipeline mode for the memory curve")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--plot-dir", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args(argv)
    from benchmarks.common import machine_info

    settings = {**(QUICK if args.quick else FULL), "quick": args.quick, "parts": args.parts}
    if args.sizes:
        settings["sizes"] = args.sizes
    if args.memory_mode:
        settings["memory_mode"] = args.memory_mode
    output = args.output or (RESULTS_JSON.with_name("results-scaling-quick.json") if args.quick else RESULTS_JSON)
    plot_dir = args.plot_dir or output.parent
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"settings": settings, "machine": machine_info()}
    if set(args.parts) != set(PARTS) and output.exists():
        # A partial rerun keeps the other parts of the previous results (each row has its load).
        previous = json.loads(output.read_text())
        if previous.get("settings", {}).get("quick") == args.quick:
            results.update({part: previous[part] for part in PARTS if part in previous and part not in args.parts})
            results["previous_run_machine"] = previous.get("machine")
    start = time.perf_counter()

    def write() -> None:
        results["wall_s"] = time.perf_counter() - start
        results["machine"]["load_average_at_end"] = list(os.getloadavg())
        results["plots"] = plot(results, plot_dir, "-quick" if args.quick else "")
        output.write_text(json.dumps(results, indent=2, default=str))
        output.with_suffix(".md").write_text(render(results))

    steps = {"simulations": lambda: simulations_curve(settings, args.work),
             "batch_size": lambda: batch_size_curve(settings, args.work),
             "pipeline": lambda: pipeline_throughput(settings, args.work), "memory": lambda: memory_curve(settings, args.work)}
    for part in args.parts:
        results[part] = steps[part]()
        write()
    log(f"wrote {output} in {results['wall_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
