"""Render ``benchmarks/results.md`` from the results dictionary of :mod:`benchmarks.run_all`."""

from __future__ import annotations

import math
from typing import Any

C2ST_TARGET = 0.55
SPEED_TARGET = 10.0
#: "Equal or better" accuracy allows this much C2ST above the peer's (C2ST's own scatter).
C2ST_TOLERANCE = 0.01


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def _ratio(peer: Any, ours: Any) -> float | None:
    try:
        return float(peer) / float(ours) if float(ours) > 0 else None
    except (TypeError, ValueError):
        return None


def _met(flag: bool | None) -> str:
    return "n/a" if flag is None else ("**met**" if flag else "**not met**")


def header(results: dict[str, Any]) -> list[str]:
    m, s = results["machine"], results["settings"]
    lines = ["# Benchmark results", ""]
    if s.get("quick"):
        lines += ["> **--quick run**: tiny sizes to smoke-test the harness. These numbers mean nothing.", ""]
    lines += [f"- machine: {m.get('cpu_count')} cores ({m.get('cpu_model')}), {m.get('memory_total_gb')} GB; "
              f"load average at start {m.get('load_average_at_start')}, at end {m.get('load_average_at_end')}",
              f"- commit {m.get('git_commit')}, started {m.get('started_at')}, total {_f(results.get('total_wall_s'), 4)} s",
              f"- versions: {m.get('versions')}",
              f"- settings: {s}",
              f"- our training recipe (per-task/per-family overrides in each row's config): {results.get('recipe')}",
              "- Timings are medians over repeats after one warm-up call; ours and the peer ran in the same "
              "run on the same files. Ratios are peer / ours (> 1: ours faster).",
              "- Where a target reads **not met**, its measured cause (profiles, ablations) is in "
              "`benchmarks/NOTES.md`, section \"Gaps against the targets\".", ""]
    rerun = [name for name, suite in results.get("suites", {}).items() if isinstance(suite, dict) and suite.get("note")]
    if rerun:
        lines[-1:-1] = [f"- re-run after this run (their sections say when and why): {', '.join(rerun)}"]
    return lines


def accuracy_table(suites: dict[str, Any]) -> list[str]:
    if not any("rows" in suites.get(name, {}) for name in ("gaussian_linear", "two_moons")):
        return []
    lines = ["## Accuracy (issue 3): C2ST against the exact / reference posterior", "",
             f"Target: C2ST <= {C2ST_TARGET} (sbibm's NPE: 0.552 on gaussian_linear at 10,000 simulations).", "",
             "| task | simulations | estimator | C2ST | target | epochs | fit wall (s) | lr / batch |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("gaussian_linear", "two_moons"):
        suite = suites.get(name, {})
        for est, row in suite.get("rows", {}).items():
            c, cell = row.get("c2st"), _f(row.get("c2st"))
            if "c2st_seed_mean" in row:
                # Several training seeds: the target is judged on their mean (seed 0 is the timed run).
                c = row["c2st_seed_mean"]
                cell = f"{_f(c)} (mean of seeds {row['training_seeds']}: {', '.join(_f(v) for v in row['c2st_seeds'])})"
            lines.append(f"| {name} | {suite['num_simulations']} | {est} | {cell} | "
                         f"{_met(None if c is None else c <= C2ST_TARGET)} | {row.get('epochs')} | {_f(row.get('fit_wall_s'))} | "
                         f"{_lr_batch(row.get('config'))} |")
    return lines + [""]


def _lr_batch(config: dict[str, Any] | None) -> str:
    """The learning rate and batch size a row of ours trained with ("sbi default" for the peer)."""
    if not config:
        return "sbi default"
    text = f"{config.get('learning_rate')} / {config.get('batch_size')}"
    decay = config.get("parameter_average_decay")
    return f"{text}, weight average {decay}" if decay else text


SPEED_ROWS = (
    ("fit() wall to early-stopping convergence (s)", "fit_wall_s"),
    ("process wall: launch to trained, incl. imports and compile (s)", "process_wall_s"),
    ("process wall, warm compilation cache (a retrain of the same architecture) (s)", "process_wall_warm_cache_s"),
    ("epochs run", "epochs"),
    ("seconds per epoch (median; ours excludes the compiling first epoch)", "seconds_per_epoch"),
    ("sampling, 1 observation x n draws (s)", "sample_single_seconds"),
    ("sampling, batched (s)", "sample_batched_seconds"),
    ("log_prob of n draws, 1 observation (s)", "log_prob_seconds"),
    ("peak RSS of the process (MiB)", "peak_rss_mb"),
)


def _cell(row: dict[str, Any], key: str) -> str:
    """The value; sampling and log_prob times also as throughput (draws or evaluations per s)."""
    value = row.get(key)
    count = {"sample_single_seconds": row.get("num_samples"), "log_prob_seconds": row.get("num_samples"),
             "sample_batched_seconds": (row.get("num_samples") or 0) * (row.get("num_batched_observations") or 0)}
    n = count.get(key)
    if n and value:
        return f"{_f(value)} ({_f(n / value)}/s)"
    return _f(value)


def _accuracy_verdict(suite: dict[str, Any], ours: dict[str, Any], peer: dict[str, Any]) -> tuple[str, bool | None]:
    if suite["metric"] == "c2st":
        if "c2st_seed_mean" in ours and "c2st_seed_mean" in peer:
            # Several training seeds each: the verdict compares the means (one seed's C2ST
            # varies more between seeds than the tolerance).
            a, b = ours["c2st_seed_mean"], peer["c2st_seed_mean"]
            ok = a <= b + C2ST_TOLERANCE
            return (f"C2ST, mean over training seeds {ours['training_seeds']}: ours {_f(a)} "
                    f"({', '.join(_f(v) for v in ours['c2st_seeds'])}) vs sbi {_f(b)} "
                    f"({', '.join(_f(v) for v in peer['c2st_seeds'])}) (equal or better = within "
                    f"+{C2ST_TOLERANCE}): {_met(ok)}"), ok
        a, b = ours.get("c2st"), peer.get("c2st")
        ok = None if a is None or b is None else a <= b + C2ST_TOLERANCE
        return f"C2ST: ours {_f(a)} vs sbi {_f(b)} (equal or better = within +{C2ST_TOLERANCE}): {_met(ok)}", ok
    a, b = ours.get("calibration_error"), peer.get("calibration_error")
    floor = ours.get("calibration_error_floor")
    ok = None if a is None or b is None else a <= b + (floor or 0.0)
    return (f"calibration error: ours {_f(a)} vs sbi {_f(b)}, Monte-Carlo floor {_f(floor)} "
            f"(equal or better = within one floor): {_met(ok)}"), ok


def speed_table(name: str, suite: dict[str, Any]) -> list[str]:
    rows = suite.get("rows", {})
    ours, peer = rows.get("ours/spline"), rows.get("sbi/nsf")
    lines = [f"## {name}: ours (spline flow) vs sbi NPE-NSF, {suite['num_simulations']} simulations", ""]
    if ours is None or peer is None:
        return lines + ["(peer or ours missing in this run)", ""]
    n, b = ours.get("num_samples"), ours.get("num_batched_observations")
    lines += [f"n = {n} draws; batched = n draws for each of {b} observations.", "",
              "| measure | ours | sbi | ratio sbi/ours |", "|---|---|---|---|"]
    for label, key in SPEED_ROWS:
        ratio = "" if key == "epochs" else _f(_ratio(peer.get(key), ours.get(key)))
        lines.append(f"| {label} | {_cell(ours, key)} | {_cell(peer, key)} | {ratio} |")
    text, accurate = _accuracy_verdict(suite, ours, peer)
    fit_r, proc_r = _ratio(peer.get("fit_wall_s"), ours.get("fit_wall_s")), _ratio(peer.get("process_wall_s"), ours.get("process_wall_s"))
    samp_r = _ratio(peer.get("sample_batched_seconds"), ours.get("sample_batched_seconds"))
    single_r = _ratio(peer.get("sample_single_seconds"), ours.get("sample_single_seconds"))
    lines += ["", f"- {text}",
              f"- training >= {SPEED_TARGET:g}x faster at equal or better accuracy: fit() wall {_f(fit_r)}x "
              f"{_met(None if fit_r is None else fit_r >= SPEED_TARGET and bool(accurate))}, process wall {_f(proc_r)}x "
              f"{_met(None if proc_r is None else proc_r >= SPEED_TARGET and bool(accurate))}",
              f"- sampling >= {SPEED_TARGET:g}x faster: batched {_f(samp_r)}x {_met(None if samp_r is None else samp_r >= SPEED_TARGET)}, "
              f"one observation {_f(single_r)}x {_met(None if single_r is None else single_r >= SPEED_TARGET)}", ""]
    if suite["metric"] == "calibration":
        lines += [f"- coverage at nominal levels: ours {ours.get('coverage_at')}, sbi {peer.get('coverage_at')}",
                  f"- calibration (sampling + log-densities of {_f(ours.get('calibration_seconds'))} s ours, "
                  f"{_f(peer.get('calibration_seconds'))} s sbi)", ""]
    return lines


def rerun_note(suite: dict[str, Any], prefix: str = "") -> list[str]:
    """A suite re-run after the rest of the report carries a ``note`` (when and why): quote it."""
    return [f"> {prefix}{suite['note']}", ""] if suite.get("note") else []


def flow_matching_section(suite: dict[str, Any]) -> list[str]:
    lines = ["## Flow matching (issue 4), from `bench_flow_matching.py`", ""]
    lines += rerun_note(suite)
    if "error" in suite:
        return lines + [f"failed: {suite['error']}", ""]
    lines += ["| task | estimator/solver | C2ST (mean) | samples/s (mean) |", "|---|---|---|---|"]
    for task, summary in (suite.get("summary") or {}).items():
        for key, row in (summary or {}).items():
            lines.append(f"| {task} | {key} | {_f(row.get('c2st_mean'))} | {_f(row.get('samples_per_s_mean'))} |")
    lines += ["", f"- training time (s): {suite.get('training_time_s')}",
              f"- exo_transmission importance sampling: {suite.get('exo_importance_sampling')}",
              f"- details: `benchmarks/{suite.get('results_file')}`", ""]
    return lines


def serving_and_scaling_sections(suites: dict[str, Any]) -> list[str]:
    """The tables of ``bench_serving`` and ``bench_scaling`` (failed ones are listed below)."""
    lines: list[str] = []
    if "serving" in suites and "error" not in suites["serving"]:
        from benchmarks.bench_serving import markdown_lines

        lines += markdown_lines(suites["serving"], heading="##")
    if "scaling" in suites and "error" not in suites["scaling"]:
        from benchmarks.bench_scaling import markdown_lines as scaling_lines

        lines += scaling_lines(suites["scaling"], heading="##")
    return lines


def render(results: dict[str, Any]) -> str:
    suites = results.get("suites", {})
    lines = header(results) + accuracy_table(suites)
    for name in ("two_moons", "gaussian_linear", "exo_transmission"):
        if name in suites and "rows" in suites[name]:
            lines += rerun_note(suites[name], f"{name}: ")
            lines += speed_table(name, suites[name])
    if "flow_matching" in suites:
        lines += flow_matching_section(suites["flow_matching"])
    lines += serving_and_scaling_sections(suites)
    errors = {k: v["error"] for k, v in suites.items() if isinstance(v, dict) and "error" in v}
    if errors:
        lines += ["## Failed suites", ""] + [f"- {k}: `{v}`" for k, v in errors.items()] + [""]
    return "\n".join(lines)
