"""Serving: latency and throughput of ``POST /invocations`` (issue 8, item 4).

What users run is measured: a small posterior is trained with the library (``two_moons``, the
benchmark recipe's architecture with a capped epoch budget: accuracy is not the point here),
logged as the MLflow pyfunc model by ``flows.packaging.log_pyfunc`` into a run of a sqlite-backed
tracking store in a temporary directory, registered, and served by ``sbi-ops serve
models:/<name>/1`` (``mlflow models serve --env-manager local``, one uvicorn worker, the venv's
``bin`` first on PATH) on a loopback port.

Load: the request is 1,000 samples of one observation (``{"inputs": [{"x": [...]}], "params":
{"num_samples": 1000}}``). For 1, 4 and 8 concurrent clients (threads of this process, one
keep-alive HTTP connection each), every client first sends ``warmup`` untimed requests, then a
bounded number of timed ones; latency = request sent to the full response body read (not parsed).
Reported per level: p50/p95/p99/mean latency and throughput (timed requests / wall time of the
level, and draws per second).

Where the time goes: the same request is replayed in this process through MLflow's own scoring
function (``mlflow.pyfunc.scoring_server.invocations``) and step by step: JSON request parsing
and schema enforcement, our request parsing (``parse_frame``), encoding, sampling, conversion to
physical units, building the output DataFrame and MLflow's JSON serialisation of the response.
Medians over repeats after warm-up, steps timed round-robin; the HTTP + server overhead is
measured by alternating HTTP requests with in-process ``invocations`` calls (same load for both)
and taking the difference of their medians.

Results: ``benchmarks/results-serving.json`` and ``benchmarks/results-serving.md``
(``--quick``: ``results-serving-quick.*``, tiny sizes whose numbers mean nothing). Scratch
(tracking DB, artifacts, server log) goes to ``benchmarks/.work/serving/``.

    python -m benchmarks.bench_serving [--quick] [--output FILE] [--output-md FILE]
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work" / "serving"
RESULTS_JSON = REPO / "benchmarks" / "results-serving.json"
RESULTS_MD = REPO / "benchmarks" / "results-serving.md"
MODEL_NAME = "bench-serving"
LATENCY_TARGET_MS = 50.0

#: The benchmark recipe's architecture (``bench_posteriors.RECIPE``) with a capped epoch budget.
MODEL_CONFIG = {"flow_family": "spline", "embedding_dim": 32, "hidden_dim": 64, "num_coupling_layers": 5,
                "num_spline_bins": 10, "batch_size": 256, "learning_rate": 1e-3, "num_epochs": 20,
                "early_stopping_patience": None}
FULL = {"num_simulations": 5000, "model_config": MODEL_CONFIG, "num_samples": 1000, "clients": [1, 4, 8],
        "requests_per_client": {"1": 100, "4": 40, "8": 25}, "warmup_per_client": 5, "breakdown_repeats": 30}
QUICK = {"num_simulations": 500, "model_config": {**MODEL_CONFIG, "hidden_dim": 16, "embedding_dim": 8,
                                                  "num_coupling_layers": 2, "num_epochs": 2},
         "num_samples": 1000, "clients": [1, 4, 8], "requests_per_client": {"1": 4, "4": 2, "8": 2},
         "warmup_per_client": 1, "breakdown_repeats": 3}


def log(message: str) -> None:
    print(f"[serving {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------ model
def train_and_log(work: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Train the two_moons posterior, save it, log it as a pyfunc into a sqlite tracking store."""
    from sbi_core.dataset import simulate_to_store
    from sbi_core.posterior import ConditionalFlowPosterior
    from sbi_core.simulators import get_task

    from flows.packaging import log_pyfunc
    from flows.tracking import MlflowService

    task = get_task("two_moons")
    store = simulate_to_store(task, settings["num_simulations"], work / "train.zarr", seed=0, overwrite=True,
                              progress=False)
    posterior = ConditionalFlowPosterior(parameter_dim=store.parameter_dim, **settings["model_config"])
    start = time.perf_counter()
    posterior.fit(store)
    fit_s = time.perf_counter() - start
    model_dir = work / "posterior"
    posterior.save(str(model_dir))
    service = MlflowService.create(None, work / "data", "bench-serving")
    run_id = service.start_run("bench-serving")
    with service.active_run(run_id):
        info = log_pyfunc(model_dir, registered_model_name=MODEL_NAME)
    service.end_run(run_id)
    _, obs = store.read("all")
    observation = [float(v) for v in np.asarray(obs.values["x"][0])]
    return {"fit_s": fit_s, "model_uri": f"models:/{MODEL_NAME}/1", "run_model_uri": info.model_uri,
            "tracking_uri": service.tracking_uri, "data_dir": str(work / "data"), "observation": observation}


def request_body(observation: list[float], num_samples: int) -> bytes:
    """The benchmark request: ``num_samples`` draws for one observation."""
    return json.dumps({"inputs": [{"x": observation}], "params": {"num_samples": num_samples}}).encode()


# ------------------------------------------------------------------------------------------ server
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(model: dict[str, Any], log_path: Path, timeout_s: float = 600) -> Iterator[tuple[str, int, int]]:
    """``sbi-ops serve`` on a free loopback port; yields ``(host, port, server pid)``.

    The server runs in its own session and is ended by its process-group id on exit.
    """
    port = _free_port()
    argv = [sys.executable, "-m", "sbi_ops.cli", "serve", model["model_uri"], "--port", str(port),
            "--tracking-uri", model["tracking_uri"], "--data-dir", model["data_dir"]]
    handle = open(log_path, "w")
    proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not up in {timeout_s} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield "127.0.0.1", port, _listening_pid(port) or proc.pid
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        handle.close()


def _listening_pid(port: int) -> int | None:
    try:
        import psutil

        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return conn.pid
    except Exception:  # noqa: BLE001 - the pid only labels the server's RSS
        return None
    return None


def _post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, int]:
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, len(response.read())


def load_level(host: str, port: int, body: bytes, clients: int, requests: int, warmup: int) -> dict[str, Any]:
    """``clients`` threads, one keep-alive connection each: ``warmup`` untimed, then ``requests`` timed."""
    barrier = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=300)
        try:
            for _ in range(warmup):
                _post(conn, body)
        except Exception as exc:  # noqa: BLE001 - reported
            failures.append(f"warm-up: {exc!r}")
        barrier.wait()
        for _ in range(requests):
            start = time.perf_counter()
            try:
                status, _ = _post(conn, body)
            except Exception as exc:  # noqa: BLE001 - reported, connection reopened
                failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=300)
                continue
            if status != 200:
                failures.append(f"HTTP {status}")
                continue
            latencies[i].append(time.perf_counter() - start)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array([x for per in latencies for x in per]) * 1000.0
    return {**summarise(ms, wall), "clients": clients, "requests_per_client": requests, "warmup_per_client": warmup,
            "failures": failures[:20], "num_failures": len(failures)}


def summarise(ms: np.ndarray, wall_s: float) -> dict[str, Any]:
    """Latency percentiles (ms) and throughput (requests / s) of one load level."""
    if ms.size == 0:
        return {"requests_ok": 0, "wall_s": wall_s}
    return {"requests_ok": int(ms.size), "wall_s": wall_s,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "min_ms": float(ms.min()),
            "max_ms": float(ms.max()), "throughput_rps": float(ms.size / wall_s) if wall_s > 0 else None}


# --------------------------------------------------------------------------------------- breakdown
def breakdown(model: dict[str, Any], body: bytes, repeats: int) -> tuple[dict[str, Any], Any]:
    """Median ms of each step of one request, replayed in this process (no HTTP).

    The steps are timed round-robin (every repeat runs each step once) so that a change of the
    machine's load during the measurement affects all of them alike; the young generation is
    collected (untimed) before each step, so a collection lands in the step whose allocations caused it.
    """
    import mlflow
    from io import StringIO

    from mlflow.pyfunc import scoring_server as ss
    from sbi_core.posterior_base import PosteriorSamples

    from flows.pyfunc_io import bucket, observation_blocks, parse_frame, parse_params, samples_frame

    mlflow.set_tracking_uri(model["tracking_uri"])
    mlflow.set_registry_uri(model["tracking_uri"])
    start = time.perf_counter()
    pyfunc = mlflow.pyfunc.load_model(model["model_uri"])
    load_s = time.perf_counter() - start
    schema = pyfunc.metadata.get_input_schema()
    inner = pyfunc.unwrap_python_model()
    posterior = inner.posterior
    text = body.decode()
    parsed = ss._parse_json_data(text, pyfunc.metadata, schema)
    frame = _enforced_frame(pyfunc, inner, parsed)
    rows = parse_frame(frame, inner.columns)
    num_samples, seed = parse_params(parsed.params, default_seed=int(posterior.seed))
    blocks = [observation_blocks(r, inner.columns) for r in rows]
    # The served model's own row padding (8 before the smallest bucket became 1).
    smallest = getattr(sys.modules.get(type(inner).__module__), "ROW_BUCKET_SMALLEST", 8)
    padded_rows = bucket(len(blocks), smallest=smallest)
    padded = blocks + [blocks[0]] * (padded_rows - len(blocks))
    embeddings = np.stack([np.asarray(e.embedding, np.float32) for e in posterior.batch_encode_observation(padded)])
    n_padded = bucket(num_samples)
    eight = np.repeat(embeddings[:1], 8, axis=0)
    draws = np.asarray(posterior.batch_sample_posterior(embeddings, n_padded, base_seed=seed))
    flat = draws.reshape(-1, draws.shape[-1])

    def physical():
        samples = PosteriorSamples(samples=flat, metadata={"parameter_space": posterior.parameter_space})
        return np.asarray(posterior.to_physical(samples).samples).reshape(draws.shape)

    phys = physical()
    result = inner.predict(None, frame, params=parsed.params)
    steps = {
        "mlflow_invocations_total_ms": lambda: ss.invocations(text, "application/json", pyfunc, schema),
        "mlflow_json_parse_ms": lambda: ss._parse_json_data(text, pyfunc.metadata, schema),
        "mlflow_pyfunc_predict_ms": lambda: pyfunc.predict(parsed.data, params=parsed.params),
        "model_predict_ms": lambda: inner.predict(None, frame, params=parsed.params),
        "parse_frame_ms": lambda: parse_frame(frame, inner.columns),
        "encode_ms": lambda: posterior.batch_encode_observation(padded),
        "sample_ms": lambda: posterior.batch_sample_posterior(embeddings, n_padded, base_seed=seed),
        "sample_8_rows_ms": lambda: posterior.batch_sample_posterior(eight, n_padded, base_seed=seed),
        "to_physical_ms": physical,
        "samples_frame_ms": lambda: samples_frame(phys[:len(rows), :num_samples], posterior.parameter_names),
        "mlflow_json_response_ms": lambda: ss.predictions_to_json(result, StringIO()),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(2):
        for fn in steps.values():
            fn()
    for _ in range(repeats):
        for name, fn in steps.items():
            gc.collect(0)  # untimed: a collection the previous step's garbage triggers is not charged here
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    out: dict[str, Any] = {"model_load_and_warmup_s": load_s}
    out.update({name: 1000.0 * statistics.median(values) for name, values in times.items()})
    buffer = StringIO()
    ss.predictions_to_json(result, buffer)
    out["response_bytes"] = len(buffer.getvalue())
    out["request_bytes"] = len(body)
    out["padded_rows"], out["padded_num_samples"] = padded_rows, n_padded
    out["draws_computed"], out["draws_returned"] = padded_rows * n_padded, len(rows) * num_samples
    return out, steps["mlflow_invocations_total_ms"]


def paired_overhead(host: str, port: int, body: bytes, replay: Any, repeats: int) -> dict[str, Any]:
    """HTTP request and in-process ``invocations`` alternated, so both see the same load.

    The difference of their medians is what HTTP, uvicorn/FastAPI and MLflow's thread hand-off
    add to one request.
    """
    conn = http.client.HTTPConnection(host, port, timeout=300)
    http_ms, local_ms = [], []
    for _ in range(2):
        _post(conn, body)
        replay()
    for _ in range(repeats):
        t0 = time.perf_counter()
        _post(conn, body)
        http_ms.append(1000.0 * (time.perf_counter() - t0))
        gc.collect(0)
        t0 = time.perf_counter()
        replay()
        local_ms.append(1000.0 * (time.perf_counter() - t0))
        gc.collect(0)
    conn.close()
    return {"repeats": repeats, "http_p50_ms": statistics.median(http_ms), "in_process_p50_ms": statistics.median(local_ms),
            "overhead_ms": statistics.median(http_ms) - statistics.median(local_ms),
            "load_average": list(os.getloadavg())}


def _enforced_frame(pyfunc: Any, inner: Any, parsed: Any) -> Any:
    """The DataFrame our ``predict`` receives after MLflow's schema enforcement (captured once)."""
    seen: list[Any] = []
    original = inner.predict

    def capture(context, model_input, params=None):
        seen.append(model_input)
        return original(context, model_input, params=params)

    inner.predict = capture
    try:
        pyfunc.predict(parsed.data, params=parsed.params)
    finally:
        del inner.predict
    return seen[0]


# --------------------------------------------------------------------------------------------- run
def machine() -> dict[str, Any]:
    from benchmarks.common import machine_info

    return machine_info()


def run(settings: dict[str, Any], work: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: dict[str, Any] = {"settings": settings, "machine": machine()}
    log(f"training and logging the model ({settings['num_simulations']} two_moons simulations)")
    model = train_and_log(work, settings)
    results["model"] = {k: v for k, v in model.items() if k != "observation"}
    body = request_body(model["observation"], settings["num_samples"])
    log("in-process breakdown of one request")
    results["breakdown_ms"], replay = breakdown(model, body, settings["breakdown_repeats"])
    log(f"breakdown: {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results['breakdown_ms'].items()})}")
    log("starting the server (sbi-ops serve)")
    start = time.perf_counter()
    with served(model, work / "server.log") as (host, port, pid):
        results["server_start_s"] = time.perf_counter() - start
        levels = []
        for clients in settings["clients"]:
            n = settings["requests_per_client"][str(clients)]
            level = load_level(host, port, body, clients, n, settings["warmup_per_client"])
            level["load_average"] = list(os.getloadavg())
            level["server_rss_mb"] = _rss_mb(pid)
            levels.append(level)
            log(f"{clients} client(s) x {n}: p50 {level.get('p50_ms', float('nan')):.1f} ms, "
                f"p95 {level.get('p95_ms', float('nan')):.1f} ms, p99 {level.get('p99_ms', float('nan')):.1f} ms, "
                f"{level.get('throughput_rps', float('nan')):.1f} req/s, failures {level['num_failures']}")
        results["levels"] = levels
        log("HTTP vs in-process, alternated")
        results["paired"] = paired_overhead(host, port, body, replay, settings["breakdown_repeats"])
        results["http_and_server_overhead_ms"] = results["paired"]["overhead_ms"]
        log(f"paired: {results['paired']}")
    one = next((lv for lv in levels if lv["clients"] == 1), None)
    if one and "p50_ms" in one:
        results["target_p50_ms"] = LATENCY_TARGET_MS
        results["target_met_at_1_client"] = one["p50_ms"] <= LATENCY_TARGET_MS
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["notes"] = findings(results)
    return results


def findings(results: dict[str, Any]) -> list[str]:
    """Where the time goes, in words, from the measured numbers of this run."""
    b = results.get("breakdown_ms") or {}
    total = b.get("mlflow_invocations_total_ms")
    notes = []
    if total:
        parts = {"MLflow's JSON serialisation of the response": b.get("mlflow_json_response_ms"),
                 "sampling": b.get("sample_ms"), "encoding": b.get("encode_ms"),
                 "the rest of MLflow's pyfunc wrapper (schema enforcement) and our request handling":
                     (b.get("mlflow_pyfunc_predict_ms") or 0) - (b.get("sample_ms") or 0) - (b.get("encode_ms") or 0)}
        ranked = sorted(((v, k) for k, v in parts.items() if v is not None), reverse=True)
        notes.append("in process, one request costs " + _f(total) + " ms: " +
                     ", ".join(f"{k} {_f(max(v, 0.0))} ms" for v, k in ranked) + " (medians of separate steps: they "
                     "need not add up exactly)")
        notes.append("the response is 1,000 records; MLflow's scoring server turns the DataFrame into a list of "
                     "dicts and writes it with `json.dump(..., cls=NumpyEncoder)`, i.e. the pure-Python encoder: "
                     "that cost is MLflow's, outside flows/ (a server of our own, or a one-shot C-encoded "
                     "`json.dumps`, would remove most of it)")
    if b.get("sample_8_rows_ms") and b.get("sample_ms"):
        notes.append(f"fixed here: a one-observation request used to be padded to 8 observations, i.e. 8,192 draws "
                     f"computed for 1,000 returned (sampling {_f(b['sample_8_rows_ms'])} ms vs {_f(b['sample_ms'])} ms "
                     "now with rows padded from 1)")
    if results.get("http_and_server_overhead_ms") is not None:
        notes.append(f"HTTP + uvicorn/FastAPI + MLflow's thread hand-off (`asyncio.to_thread`) add about "
                     f"{_f(results['http_and_server_overhead_ms'])} ms at one client (HTTP and in-process requests "
                     "alternated, difference of medians)")
    levels = {lv["clients"]: lv for lv in results.get("levels", [])}
    cores = results.get("machine", {}).get("cpu_count")
    if total and cores and 8 in levels:
        notes.append(f"with 4 and 8 clients the server (one uvicorn worker; MLflow runs each request in a thread, "
                     f"up to {min(32, cores + 4)} at once) is CPU-bound on {cores} cores shared with other work: "
                     f"at ~{_f(total)} ms of CPU per request the ceiling is ~{_f(1000 * cores / total)} requests/s "
                     "on an idle machine, so latency grows with the queue")
    return notes


def _rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001
        return None


def render(results: dict[str, Any]) -> str:
    """The markdown table of ``results``."""
    return "\n".join(markdown_lines(results)) + "\n"


def _loads(values: Any) -> str:
    """A load-average triple as ``1.2 / 3.4 / 5.6`` (1, 5, 15 minutes)."""
    return " / ".join(f"{float(v):.1f}" for v in values) if values else "n/a"


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}g}" if abs(float(value)) < 1000 else f"{float(value):,.0f}"


BREAKDOWN_ROWS = (
    ("MLflow: JSON body -> DataFrame + params (`_parse_json_data`)", "mlflow_json_parse_ms"),
    ("MLflow pyfunc wrapper: schema enforcement + our predict", "mlflow_pyfunc_predict_ms"),
    ("  our predict (all of the rows below)", "model_predict_ms"),
    ("    parse_frame (request checks)", "parse_frame_ms"),
    ("    encode (padded rows)", "encode_ms"),
    ("    sample (padded rows x padded draws)", "sample_ms"),
    ("    (for comparison: sample with one row padded to 8, the padding before this benchmark)", "sample_8_rows_ms"),
    ("    to_physical", "to_physical_ms"),
    ("    output DataFrame", "samples_frame_ms"),
    ("MLflow: response -> JSON (`predictions_to_json`)", "mlflow_json_response_ms"),
    ("MLflow `invocations` end to end, in process", "mlflow_invocations_total_ms"),
)


def markdown_lines(results: dict[str, Any], heading: str = "#") -> list[str]:
    s, m = results.get("settings", {}), results.get("machine", {})
    lines = [f"{heading} Serving: `/invocations` latency and throughput (issue 8, item 4)", ""]
    if s.get("quick"):
        lines += ["> **--quick run**: tiny sizes to smoke-test the harness. These numbers mean nothing.", ""]
    if "error" in results:
        return lines + [f"failed: `{results['error']}`", ""]
    lines += [f"- model: two_moons, {s.get('num_simulations')} simulations, {s.get('model_config')}; "
              f"served by `sbi-ops serve {results.get('model', {}).get('model_uri')}` (mlflow models serve, "
              f"--env-manager local, 1 uvicorn worker)",
              f"- request: {s.get('num_samples')} samples of one observation; clients are threads of the "
              "benchmark process on loopback, one keep-alive connection each, "
              f"{s.get('warmup_per_client')} warm-up request(s) each before timing",
              f"- machine: {m.get('cpu_count')} cores; load average at start {_loads(m.get('load_average_at_start'))}, "
              f"at end {_loads(m.get('load_average_at_end'))}", "",
              f"| clients | timed requests | p50 (ms) | p95 (ms) | p99 (ms) | mean (ms) | throughput (req/s) | "
              "draws/s | failures | load avg (1 min) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for lv in results.get("levels", []):
        rps = lv.get("throughput_rps")
        lines.append(f"| {lv['clients']} | {lv.get('requests_ok')} | {_f(lv.get('p50_ms'))} | {_f(lv.get('p95_ms'))} | "
                     f"{_f(lv.get('p99_ms'))} | {_f(lv.get('mean_ms'))} | {_f(rps)} | "
                     f"{_f(None if rps is None else rps * s.get('num_samples', 0))} | {lv.get('num_failures')} | "
                     f"{_f((lv.get('load_average') or [None])[0])} |")
    one = next((lv for lv in results.get("levels", []) if lv["clients"] == 1), {})
    if "p50_ms" in one:
        met = one["p50_ms"] <= LATENCY_TARGET_MS
        load, cores = (one.get("load_average") or [None])[0], m.get("cpu_count")
        noisy = load is not None and cores and load > cores
        lines += ["", f"- target p50 <= {LATENCY_TARGET_MS:g} ms after warm-up (1 client): {_f(one['p50_ms'])} ms, "
                      f"{'**met**' if met else '**not met**'}"
                      + (f" in this run, but at load average {_f(load)} on {cores} cores: noisy, not a claim"
                         if noisy else "")]
    b = results.get("breakdown_ms")
    if b:
        lines += ["", "Where the time of one request goes (in process, median of "
                      f"{s.get('breakdown_repeats')} after warm-up; ms):", "", "| step | ms |", "|---|---|"]
        lines += [f"| {label} | {_f(b.get(key))} |" for label, key in BREAKDOWN_ROWS]
        pair = results.get("paired")
        if pair:
            lines.append(f"| HTTP + uvicorn/FastAPI + thread hand-off: HTTP p50 {_f(pair['http_p50_ms'])} minus in-process "
                         f"p50 {_f(pair['in_process_p50_ms'])}, alternated ({pair['repeats']} pairs) | "
                         f"{_f(pair['overhead_ms'])} |")
        lines += ["", f"- draws computed {b.get('draws_computed')} for {b.get('draws_returned')} returned "
                      f"(rows padded to {b.get('padded_rows')}, draws to {b.get('padded_num_samples')}); "
                      f"request {b.get('request_bytes')} bytes, response {b.get('response_bytes')} bytes"]
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    return lines + [""]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, numbers mean nothing")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--output-md", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args(argv)
    settings = {**(QUICK if args.quick else FULL), "quick": args.quick}
    out_json = args.output or (RESULTS_JSON.with_name("results-serving-quick.json") if args.quick else RESULTS_JSON)
    out_md = args.output_md or out_json.with_suffix(".md")
    start = time.perf_counter()
    results = run(settings, args.work)
    results["wall_s"] = time.perf_counter() - start
    out_json.write_text(json.dumps(results, indent=2, default=str))
    out_md.write_text(render(results))
    log(f"wrote {out_json} and {out_md} in {results['wall_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
