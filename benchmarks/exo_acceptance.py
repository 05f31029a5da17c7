"""Issue 6 acceptance run on ``exo_transmission`` (see ``issues show 6``, "Done means", bullet 2).

Stages (each skips when its output already exists under ``benchmarks/.work/exo-acceptance``):

1. ``simulate``: ``sbi-ops simulate --task exo_transmission -n 60000`` (default hash split:
   ~80% train / 10% validation / 10% test);
2. ``train``: ``sbi-ops train`` with :data:`RECIPE` (spline flow, unconstrained space, early stopping);
3. ``diagnose``: ``sbi-ops diagnose --split test --num-observations 1000 --max-calibration-error 0.02``;
4. ``references``: dynesty nested-sampling references for the first 3 test observations
   (``sbi_core.benchmark.task_reference``, bounded by ``maxcall``);
5. ``compare``: amortized posterior vs references (JSD per marginal, C2ST, IoU, wall-time ratio),
   i.e. ``benchmark_posterior`` split in two so the references can be bounded and cached;
6. ``report``: ``benchmarks/results-exo-acceptance.{json,md}`` and PNGs in ``benchmarks/exo-acceptance/``.

Usage: ``nice -n 5 .venv/bin/python benchmarks/exo_acceptance.py [--stage NAME ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "exo-acceptance"
STORE = WORK / "exo60k.zarr"
MODEL = WORK / "model"
DIAG = WORK / "diagnose"
REFS = WORK / "references.pkl"
COMPARE = WORK / "compare"
PLOTS = ROOT / "benchmarks" / "exo-acceptance"
RESULTS_JSON = ROOT / "benchmarks" / "results-exo-acceptance.json"
RESULTS_MD = ROOT / "benchmarks" / "results-exo-acceptance.md"
TIMES = WORK / "stage_times.json"
TRAIN_LOG, DIAG_LOG = WORK / "train.log", WORK / "diagnose.log"
RUN_STARTED = "2026-11-25 22:31 UTC"
SBI_OPS = str(ROOT / ".venv" / "bin" / "sbi-ops")

NUM_SIMULATIONS = 60_000
SIM_SEED = 2026
#: ``sbi-ops train --set`` options (ConditionalFlowPosterior constructor keywords).
RECIPE: dict[str, object] = {
    "flow_family": "spline", "parameter_space": "unconstrained",
    "num_coupling_layers": 4, "num_spline_bins": 8, "hidden_dim": 64, "embedding_dim": 32,
    "spectrum_encoder_type": "conv1d",
    "batch_size": 256, "learning_rate": 1e-3, "use_cosine_schedule": True, "warmup_epochs": 0.5,
    "num_epochs": 20, "lr_schedule_total_epochs": 20.0,
    "early_stopping_patience": 10, "gradient_clip_norm": 5.0, "seed": 0,
}
#: Why so small: on this shared 2-core machine (load ~9) a first attempt with 5 layers of width 128,
#: embedding 64, batch 512 and 30 epochs ran at >= 170 s/epoch (first epoch 206 s with compilation):
#: ~90 minutes, past the deadline; it was stopped after one epoch and replaced by this recipe
#: (~30-45 s/epoch here). An 8-epoch run of this recipe was trained first as a fallback
#: (``model-8ep``, reported as preliminary); the acceptance model uses 20 epochs.
FIRST_ATTEMPT = {"recipe_changes": {"num_coupling_layers": 5, "num_spline_bins": 10, "hidden_dim": 128,
                                    "embedding_dim": 64, "batch_size": 512, "num_epochs": 30,
                                    "lr_schedule_total_epochs": 30.0, "warmup_epochs": 1.0},
                 "observed": "epoch 1: 205.8 s (incl. compilation); epoch 2 unfinished after 170 s; killed"}
#: ``--variant centred``: the run after spectrum level centring became the default (preprocessing
#: payload v2) and the conv1d encoder was rewritten; the mlp spectrum encoder and observation-noise
#: injection as in the demo (``sbi_ops/demo_config.yaml``: without it the centred model is
#: overconfident at small budgets). Outputs go beside the first run's, which stay as they were.
CENTRED_RECIPE: dict[str, object] = {
    "flow_family": "spline", "parameter_space": "unconstrained",
    "num_coupling_layers": 4, "num_spline_bins": 8, "hidden_dim": 64, "embedding_dim": 64,
    "spectrum_encoder_type": "mlp", "embedding_noise_std": 1.0,
    "batch_size": 256, "learning_rate": 1e-3, "use_cosine_schedule": True, "warmup_epochs": 0.5,
    "num_epochs": 40, "lr_schedule_total_epochs": 40.0,
    "early_stopping_patience": 8, "gradient_clip_norm": 5.0, "seed": 0,
}
#: ``--variant converged``: the centred recipe trained to early stopping (the centred run hit its
#: 40-epoch cap with the validation loss still falling) and with half the injected noise: at 1.0 the
#: centred model was under-confident (coverage above nominal by up to 0.09 at the 50% level, HPD
#: calibration error 0.049), while the uncentred run without noise injection was slightly
#: over-confident (0.022). References: nautilus (batched likelihood), see REFERENCE_SETTINGS.
CONVERGED_RECIPE: dict[str, object] = {
    **CENTRED_RECIPE, "embedding_noise_std": 0.5, "num_epochs": 120, "lr_schedule_total_epochs": 120.0,
    "early_stopping_patience": 12,
}
#: ``--variant converged-ema``: the converged run came out over-confident (HPD calibration error
#: 0.084, coverage below nominal at every level, while SBC, TARP and the z-scores passed): more
#: injected noise (0.8) and a weight average (``parameter_average_decay``) to select less noisy
#: weights. Same paths pattern (``*-converged-ema``), same nautilus references.
CONVERGED_EMA_RECIPE: dict[str, object] = {
    **CONVERGED_RECIPE, "embedding_noise_std": 0.8, "parameter_average_decay": 0.999,
}
NUM_DIAG_OBSERVATIONS = 1000
NUM_DIAG_SAMPLES = 1000
MAX_CALIBRATION_ERROR = 0.02
NUM_CASES = 3
NLIVE = 400
MAXCALL = 200_000
NUM_AMORTIZED_SAMPLES = 5000
#: Which reference sampler the references/compare/report stages use ("nautilus": converged variant).
REFERENCE_SAMPLER = "dynesty"
MACHINE_NOTE = "shared with a test-suite run and other engineers (heavy stages under `nice -n 5`)"
#: nautilus settings: its default live set, an effective sample size of 10,000, and a 2-hour cap
#: per case (a run stopped by the cap is reported as unconverged).
NAUTILUS_OPTIONS: dict[str, object] = {"nlive": 2000, "n_eff": 10_000, "f_live": 0.01, "timeout_s": 7200.0}


def _record(stage: str, seconds: float, **extra) -> None:
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times[stage] = {"wall_s": seconds, "load_average_at_start": extra.pop("load", None), **extra}
    TIMES.write_text(json.dumps(times, indent=2))


def _run(cmd: list[str], log: Path) -> int:
    with open(log, "w") as fh:
        return subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)


def stage_simulate() -> None:
    if (STORE / "zarr.json").exists() and not (STORE / "_sbi_writer_progress").exists():
        return
    load, start = os.getloadavg(), time.perf_counter()
    rc = _run([SBI_OPS, "simulate", "--task", "exo_transmission", "-n", str(NUM_SIMULATIONS),
               "-o", str(STORE), "--seed", str(SIM_SEED), "--no-progress"], WORK / "simulate.log")
    _record("simulate", time.perf_counter() - start, load=load, rc=rc)


def stage_train() -> None:
    if (MODEL / "metadata.json").exists():
        return
    load, start = os.getloadavg(), time.perf_counter()
    sets = [a for k, v in RECIPE.items() for a in ("--set", f"{k}={v}")]
    rc = _run([SBI_OPS, "train", str(STORE), "-o", str(MODEL), *sets], TRAIN_LOG)
    _record("train", time.perf_counter() - start, load=load, rc=rc)


def _store_and_task():
    from sbi_core.dataset import open_store
    from sbi_core.simulators import get_task

    return open_store(str(STORE)), get_task("exo_transmission")


def _load_references() -> dict:
    """Case name -> cached reference: nautilus ``.npz`` files (converged variant) or the dynesty
    runs' ``references.pkl`` and per-case ``references-<case>.pkl`` (first and centred variants)."""
    if REFERENCE_SAMPLER == "nautilus":
        from benchmarks.exo_references import load_references

        return load_references(WORK, "nautilus")
    done = {}
    for path in sorted(WORK.glob("references*.pkl")):
        done.update(pickle.loads(path.read_bytes()))
    return done


def stage_references(only_case: int | None = None) -> None:
    """One dynesty retrieval per case (``only_case``: just that index, so cases can run in
    parallel processes), each cached in ``references-<case>.pkl`` as soon as it finishes."""
    from sbi_core.benchmark.posterior_benchmark import cases_from_store
    from sbi_core.benchmark.reference import task_reference

    store, task = _store_and_task()
    done = _load_references()
    for i, case in enumerate(cases_from_store(store, split="test", num_cases=NUM_CASES)):
        if case.name in done or (only_case is not None and i != only_case):
            continue
        load = os.getloadavg()
        if REFERENCE_SAMPLER == "nautilus":
            from benchmarks.exo_references import reference_path, save_reference

            ref = task_reference(task, case.observation, sampler="nautilus", seed=0, **NAUTILUS_OPTIONS)
            save_reference(reference_path(WORK, "nautilus", case.name), ref, load)
            print(f"{case.name}: {ref.wall_time_s:.0f} s, {ref.num_likelihood_calls} calls, lnZ "
                  f"{ref.log_evidence:.2f}, ESS {ref.metadata['effective_sample_size']:.0f}, "
                  f"converged {ref.metadata['converged']}", flush=True)
            continue
        ref = task_reference(task, case.observation, nlive=NLIVE, seed=0, maxcall=MAXCALL)
        entry = {"reference": ref, "load_average_at_start": load,
                 "bounded_by_maxcall": ref.num_likelihood_calls >= MAXCALL}
        (WORK / f"references-{case.name}.pkl").write_bytes(pickle.dumps({case.name: entry}))
        print(f"{case.name}: {ref.wall_time_s:.0f} s, {ref.num_likelihood_calls} calls, "
              f"lnZ {ref.log_evidence:.2f} +- {ref.log_evidence_error:.2f}", flush=True)


def stage_diagnose() -> None:
    if (DIAG / "report.json").exists():
        return
    load, start = os.getloadavg(), time.perf_counter()
    rc = _run([SBI_OPS, "diagnose", str(MODEL), str(STORE), "--split", "test",
               "--num-observations", str(NUM_DIAG_OBSERVATIONS), "--num-samples", str(NUM_DIAG_SAMPLES),
               "--max-calibration-error", str(MAX_CALIBRATION_ERROR), "--output", str(DIAG)],
              DIAG_LOG)
    # exit code 1 = a threshold failed (a result, reported), 2 = usage/input error
    _record("diagnose", time.perf_counter() - start, load=load, rc=rc)


def stage_compare() -> None:
    """``benchmark_posterior``'s comparison, fed with the cached (bounded) references."""
    from dataclasses import replace

    import numpy as np

    from sbi_core.benchmark.posterior_benchmark import amortized_sampler, cases_from_store
    from sbi_core.benchmark.suite import RetrievalBenchmarkSuite
    from sbi_core.plotting import plot_corner
    from sbi_ops.commands.diagnose import load_posterior

    refs = _load_references()
    if (COMPARE / "benchmark.json").exists() or not refs:
        return
    store, _ = _store_and_task()
    cases = tuple(replace(c, reference=refs[c.name]["reference"])
                  for c in cases_from_store(store, split="test", num_cases=NUM_CASES) if c.name in refs)
    if not cases:
        return
    load, start = os.getloadavg(), time.perf_counter()
    posterior = load_posterior(MODEL)
    suite = RetrievalBenchmarkSuite(tuple(store.parameter_names), cases, seed=0)
    sampler = amortized_sampler(posterior, store, num_samples=NUM_AMORTIZED_SAMPLES, seed=0)
    sampler(suite.cases[0])  # warm-up: compile outside the timed calls
    draws, seconds = {}, {}
    for case in suite.cases:
        t0 = time.perf_counter()
        draws[case.name] = sampler(case)
        seconds[case.name] = time.perf_counter() - t0
    COMPARE.mkdir(parents=True, exist_ok=True)
    for name, d in draws.items():
        np.save(COMPARE / f"amortized_{name}.npy", d)
    try:
        comparison = suite.compare(draws, seconds)
    except np.linalg.LinAlgError as exc:
        # sbi_core.benchmark.metrics.jensen_shannon_millinats (KDE) failed; see the report
        import traceback

        (COMPARE / "kde_failure.txt").write_text(traceback.format_exc())
        print(f"KDE JSD failed ({exc}); retrying with method='histogram'", flush=True)
        comparison = _compare_histogram(suite, draws, seconds)
    (COMPARE / "benchmark.json").write_text(comparison.to_json(indent=2))
    (COMPARE / "benchmark.md").write_text(comparison.table() + "\n")
    for case in suite.cases:
        plot_corner(draws[case.name], case.reference.samples, suite.parameter_names,
                    COMPARE / f"corner_{case.name}.png", truth=case.true_parameters,
                    title=f"{case.name}: amortized vs nested sampling")
    _record("compare", time.perf_counter() - start, load=load)


def _compare_histogram(suite, draws, seconds):
    """``suite.compare`` with the histogram JSD (used only when the KDE JSD raises)."""
    from unittest import mock

    from sbi_core.benchmark import metrics, suite as suite_module

    def jsd_hist(a, b, **kw):
        return metrics.jensen_shannon_millinats(a, b, method="histogram")

    with mock.patch.object(suite_module, "jensen_shannon_millinats", jsd_hist):
        comparison = suite.compare(draws, seconds)
    from dataclasses import replace
    return replace(comparison, metadata={**comparison.metadata, "jsd_method": "histogram (128 bins; "
                                         "KDE raised LinAlgError, see kde_failure.txt)"})


def _copy_plots() -> list[str]:
    PLOTS.mkdir(parents=True, exist_ok=True)
    copied = []
    for src in sorted([*DIAG.glob("*.png"), *COMPARE.glob("*.png")]):
        dst = PLOTS / src.name
        if src.stat().st_size <= 300_000:
            shutil.copy(src, dst)
        else:  # corner plots: downscale + 256-colour palette to keep the repository small
            from PIL import Image

            with Image.open(src) as im:
                im = im.convert("RGB")
                im.thumbnail((1100, 1100))
                im.quantize(colors=256).save(dst, optimize=True)
        copied.append(str(dst.relative_to(ROOT)))
    return copied


def _load_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _training_summary(model: Path | None = None, log_path: Path | None = None, num_epochs=None) -> dict | None:
    model, log_path = model or MODEL, log_path or TRAIN_LOG  # resolved at call time (--variant)
    meta = _load_json(model / "metadata.json")
    if meta is None:
        return None
    log = log_path.read_text().splitlines() if log_path.exists() else []
    out = {"cli_summary": [l for l in log if l.startswith(("trained", "epochs:", "wall time", "stability"))]}

    def find(d, keys, found):
        if isinstance(d, dict):
            for k, v in d.items():
                if k in keys and not isinstance(v, (dict, list)):
                    found.setdefault(k, v)
                find(v, keys, found)
        return found

    out.update(find(meta, {"epochs_run", "best_epoch", "stopped_early", "validation_loss",
                           "best_validation_loss", "train_loss", "wall_time_s", "training_time_s",
                           "num_train", "num_validation", "store_fingerprint"}, {}))
    history = (meta.get("training_artifacts") or {}).get("history") or {}
    out["history"] = {k: v for k, v in history.items() if k in ("epoch", "train_loss", "validation_loss")}
    if "epochs_run" in out:
        out["hit_epoch_cap"] = (int(out["epochs_run"]) >= int(num_epochs or RECIPE["num_epochs"])
                                and not out.get("stopped_early"))
    return out


def _diagnose_summary(diag: Path | None = None) -> dict | None:
    diag = diag or DIAG  # resolved at call time (--variant)
    report = _load_json(diag / "report.json")
    if report is None:
        return None
    cov, sbc, tarp, pp, thr = (report["coverage"], report["sbc"], report["tarp"], report["pp"],
                               report["thresholds"])
    names = report["parameter_names"]
    n_tests = 2 * len(names)
    out = {
        "passed": report["passed"], "failures": report["failures"],
        "num_observations": report["num_observations"], "num_samples": report["num_samples"],
        "calibration_error": cov["calibration_error"],
        "calibration_error_floor": cov["calibration_error_floor"],
        "calibration_error_target": MAX_CALIBRATION_ERROR,
        "calibration_error_meets_target": cov["calibration_error"] <= MAX_CALIBRATION_ERROR,
        "hpd_density_source": cov.get("density_source"),
        "sbc_ks_p_value": dict(zip(names, sbc["ks_p_value"])),
        "sbc_chi2_p_value": dict(zip(names, sbc["chi2_p_value"])),
        "sbc_bonferroni_threshold": thr["sbc_alpha"] / n_tests,
        "tarp_atc": tarp["atc"], "tarp_ks_p_value": tarp["ks_p_value"],
        "tarp_thresholds": {"alpha": thr["tarp_alpha"], "max_abs_atc": thr["max_abs_tarp_atc"]},
        "z_score_mean": dict(zip(names, pp["z_score_mean"])),
        "z_score_std": dict(zip(names, pp["z_score_std"])),
        "contraction": dict(zip(names, pp["contraction"])),
    }
    out["sbc_passed"] = not any(f.startswith("sbc") for f in report["failures"])
    out["tarp_passed"] = not any(f.startswith("tarp") for f in report["failures"])
    out["coverage_passed"] = not any(f.startswith("coverage") for f in report["failures"])
    predictive = _load_json(diag / "predictive.json")
    if predictive is not None:
        import numpy as np
        out["posterior_predictive"] = {
            "block": predictive.get("block_name"), "num_observations": predictive.get("num_observations"),
            "fraction_in_68": predictive.get("fraction_in_68"), "fraction_in_95": predictive.get("fraction_in_95"),
            "median_reduced_chi2": float(np.median(predictive["reduced_chi2"])) if predictive.get("reduced_chi2") else None}
    return out


def _references_summary() -> dict | None:
    import numpy as np

    refs = _load_references()
    if not refs:
        return None
    return {name: {"wall_time_s": r["reference"].wall_time_s,
                   "num_likelihood_calls": r["reference"].num_likelihood_calls,
                   "bounded_by_maxcall": r["bounded_by_maxcall"],
                   "log_evidence": r["reference"].log_evidence,
                   "log_evidence_error": r["reference"].log_evidence_error,
                   "num_samples": int(r["reference"].samples.shape[0]),
                   "num_unique_samples": int(len(np.unique(r["reference"].samples, axis=0))),
                   "sample_std": r["reference"].samples.std(axis=0).tolist(),
                   "nlive": r["reference"].nlive, "metadata": r["reference"].metadata,
                   "load_average_at_start": list(r["load_average_at_start"])}
            for name, r in refs.items()}


def stage_report() -> None:
    import platform

    import jax

    load_start = (WORK.parent / "load_start.txt")
    train_time = (_load_json(TIMES) or {}).get("train", {})
    results = {
        "results_json": RESULTS_JSON.name,
        "issue": 6,
        "task": "exo_transmission",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "jax": jax.__version__,
                    # The nautilus variants: the load when their training stage started.
                    "load_average_at_run_start": (train_time.get("load_average_at_start")
                                                  if REFERENCE_SAMPLER == "nautilus" else
                                                  [float(x) for x in load_start.read_text().splitlines()[1].split()[:3]]
                                                  if load_start.exists() else None),
                    "run_started": RUN_STARTED,
                    "load_average_at_report": list(os.getloadavg()),
                    "note": MACHINE_NOTE},
        "settings": {"num_simulations": NUM_SIMULATIONS, "simulation_seed": SIM_SEED, "recipe": RECIPE,
                     "abandoned_first_training_attempt": FIRST_ATTEMPT,
                     "diagnose": {"split": "test", "num_observations": NUM_DIAG_OBSERVATIONS,
                                  "num_samples": NUM_DIAG_SAMPLES,
                                  "max_calibration_error": MAX_CALIBRATION_ERROR},
                     "references": _reference_settings()},
        "stage_times": _load_json(TIMES),
        "training": _training_summary(),
        "calibration": _diagnose_summary(),
        "references": _references_summary(),
        "comparison": _load_json(COMPARE / "benchmark.json"),
        "preliminary_8_epoch_model": None if REFERENCE_SAMPLER == "nautilus" else {
            "note": ("same recipe with num_epochs=8, lr_schedule_total_epochs=8 (trained first as a "
                     "fallback against the deadline; under-trained); diagnosed with the same command"),
            "training": _training_summary(WORK / "model-8ep", WORK / "train-8ep.log", 8),
            "calibration": _diagnose_summary(WORK / "diagnose-8ep"),
        },
    }
    from benchmarks.exo_acceptance_report import render_markdown

    results["plots"] = _copy_plots()
    RESULTS_JSON.write_text(json.dumps(results, indent=2, default=str) + "\n")
    RESULTS_MD.write_text(render_markdown(results))


def _reference_settings() -> dict:
    common = {"num_cases": NUM_CASES, "num_amortized_samples": NUM_AMORTIZED_SAMPLES}
    if REFERENCE_SAMPLER == "nautilus":
        opts = NAUTILUS_OPTIONS
        return {**common, "sampler": "nautilus.Sampler (vectorized likelihood)", "nlive": opts["nlive"],
                "stopping": f"n_eff={opts['n_eff']:,}, f_live={opts['f_live']}, timeout {opts['timeout_s']:.0f} s"}
    return {**common, "sampler": "dynesty.NestedSampler (static, bound=multi, sample=auto)", "nlive": NLIVE,
            "maxcall": MAXCALL, "stopping": f"dlogz=0.1, maxcall={MAXCALL:,}"}


STAGES = {"simulate": stage_simulate, "train": stage_train, "diagnose": stage_diagnose,
          "references": stage_references, "compare": stage_compare, "report": stage_report}


def _use_centred_variant() -> None:
    """Point the stages at the centred run's recipe and output paths (the store and references are shared)."""
    global RECIPE, MODEL, DIAG, COMPARE, PLOTS, RESULTS_JSON, RESULTS_MD, TIMES, TRAIN_LOG, DIAG_LOG, RUN_STARTED
    RECIPE = CENTRED_RECIPE
    TIMES = WORK / "stage_times-centred.json"
    TRAIN_LOG, DIAG_LOG = WORK / "train-centred.log", WORK / "diagnose-centred.log"
    RUN_STARTED = "2026-11-26 01:27 UTC"
    MODEL, DIAG, COMPARE = WORK / "model-centred", WORK / "diagnose-centred", WORK / "compare-centred"
    PLOTS = ROOT / "benchmarks" / "exo-acceptance-centred"
    RESULTS_JSON = ROOT / "benchmarks" / "results-exo-acceptance-centred.json"
    RESULTS_MD = ROOT / "benchmarks" / "results-exo-acceptance-centred.md"


def _use_converged_variant(name: str = "converged") -> None:
    """Like the centred variant, with CONVERGED_RECIPE (``converged``) or CONVERGED_EMA_RECIPE
    (``converged-ema``), ``*-<name>`` paths and nautilus references."""
    global RECIPE, MODEL, DIAG, COMPARE, PLOTS, RESULTS_JSON, RESULTS_MD, TIMES, TRAIN_LOG, DIAG_LOG, RUN_STARTED
    global REFERENCE_SAMPLER, MACHINE_NOTE
    RECIPE = CONVERGED_EMA_RECIPE if name == "converged-ema" else CONVERGED_RECIPE
    REFERENCE_SAMPLER = "nautilus"
    MACHINE_NOTE = ("every stage under `nice -n 19` beside the one-run `make bench` (which had priority); "
                    "wall times include that contention") if name == "converged" else (
        "stages under `nice` beside the nautilus references and test runs; wall times include that contention")
    TIMES = WORK / f"stage_times-{name}.json"
    TRAIN_LOG, DIAG_LOG = WORK / f"train-{name}.log", WORK / f"diagnose-{name}.log"
    RUN_STARTED = "2026-11-26 02:38 UTC" if name == "converged" else "2026-11-26 03:35 UTC"
    MODEL, DIAG, COMPARE = WORK / f"model-{name}", WORK / f"diagnose-{name}", WORK / f"compare-{name}"
    PLOTS = ROOT / "benchmarks" / f"exo-acceptance-{name}"
    RESULTS_JSON = ROOT / "benchmarks" / f"results-exo-acceptance-{name}.json"
    RESULTS_MD = ROOT / "benchmarks" / f"results-exo-acceptance-{name}.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", action="append", choices=list(STAGES),
                        help="Run only these stages (repeatable; default: all, in order).")
    parser.add_argument("--case", type=int, default=None,
                        help="With --stage references: only this case index (for parallel processes).")
    parser.add_argument("--variant", choices=("first", "centred", "converged", "converged-ema"), default="first",
                        help="'centred': CENTRED_RECIPE, outputs under model-centred/, "
                             "results-exo-acceptance-centred.* (references shared).")
    args = parser.parse_args(argv)
    if args.variant == "centred":
        _use_centred_variant()
    elif args.variant in ("converged", "converged-ema"):
        _use_converged_variant(args.variant)
    WORK.mkdir(parents=True, exist_ok=True)
    for name in args.stage or list(STAGES):
        print(f"[{time.strftime('%H:%M:%S')}] stage {name}", flush=True)
        if name == "references":
            stage_references(args.case)
        else:
            STAGES[name]()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
