"""``sbi-ops serve models:/<name>@champion`` on a loopback port: good and bad requests over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.flows.conftest import MODEL

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: str | bytes) -> tuple[int, str]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"server did not come up in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(first_run, service, data_dir, tmp_path_factory):
    """The champion served by ``sbi-ops serve`` (its own process group, ended by pid)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "SBI_OPS_MAX_NUM_SAMPLES": "500"}
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sbi_ops.cli", "serve", f"models:/{MODEL}@champion", "--port", str(port),
             "--tracking-uri", service.tracking_uri, "--data-dir", str(data_dir)],
            stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, proc, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _predictions(body: str) -> list[dict]:
    return json.loads(body)["predictions"]


def test_dataframe_split_and_inputs(server):
    split = {"dataframe_split": {"columns": ["x"], "data": [[[0.1, -0.2]], [[0.0, 0.3]]]},
             "params": {"num_samples": 5, "seed": 3}}
    status, body = _post(server + "/invocations", json.dumps(split))
    assert status == 200, body
    rows = _predictions(body)
    assert len(rows) == 10 and set(rows[0]) == {"theta_0", "theta_1", "observation_index"}
    assert sorted({r["observation_index"] for r in rows}) == [0, 1]
    # `inputs` with this column schema: a list of records, one per observation.
    status, body = _post(server + "/invocations", json.dumps({"inputs": [{"x": [0.1, -0.2]}],
                                                               "params": {"num_samples": 4}}))
    assert status == 200, body
    assert len(_predictions(body)) == 4


@pytest.mark.parametrize("body, expected", [
    ("{not json", "json"),
    (json.dumps({"dataframe_split": {"columns": ["x"], "data": [[[0.1]]]}}), "expected 2 values"),
    ('{"inputs": [{"x": [NaN, 0.0]}]}', "non-finite"),
    ('{"dataframe_split": {"columns": ["x"], "data": [[[0.1, Infinity]]]}}', "non-finite"),
    (json.dumps({"inputs": [{"x": [0.1, 0.2]}], "params": {"num_samples": 10**9}}), "num_samples"),
    (json.dumps({"inputs": [{"x": [0.1, 0.2]}], "params": {"seed": -5}}), "seed"),
    (json.dumps({"inputs": [{"y": [0.1, 0.2]}]}), "x"),
    (json.dumps({"inputs": {"x": [[0.1, 0.2]]}}), "invalid"),
])
def test_bad_requests_get_a_readable_4xx_and_the_server_stays_up(server, body, expected):
    status, text = _post(server + "/invocations", body)
    assert 400 <= status < 500, (status, text)
    assert expected.lower() in text.lower(), text
    status, text = _post(server + "/invocations", json.dumps({"inputs": [{"x": [0.0, 0.0]}],
                                                               "params": {"num_samples": 2}}))
    assert status == 200, text


def test_eight_concurrent_clients(server):
    """8 loopback clients x 10 requests: no failures, latency percentiles, bounded server memory."""
    import concurrent.futures

    import numpy as np
    import psutil

    port = int(server.rsplit(":", 1)[1])
    serving = [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
               and c.status == psutil.CONN_LISTEN and c.pid]
    process = psutil.Process(serving[0].pid) if serving else None
    body = json.dumps({"inputs": [{"x": [0.1, -0.2]}, {"x": [0.0, 0.4]}], "params": {"num_samples": 100}})
    _post(server + "/invocations", body)  # compile this request's shapes once

    def client(i: int) -> list[tuple[int, float]]:
        out = []
        for _ in range(10):
            start = time.perf_counter()
            status, _ = _post(server + "/invocations", body)
            out.append((status, time.perf_counter() - start))
        return out

    rss_before = process.memory_info().rss if process else None
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = [r for chunk in pool.map(client, range(8)) for r in chunk]
    statuses = [s for s, _ in results]
    latencies = np.array([t for _, t in results]) * 1000
    print(f"\n80 requests, 8 clients: p50 {np.percentile(latencies, 50):.0f} ms, "
          f"p95 {np.percentile(latencies, 95):.0f} ms, p99 {np.percentile(latencies, 99):.0f} ms")
    assert statuses.count(200) == 80, statuses
    if process is not None:
        growth = process.memory_info().rss - rss_before
        print(f"server RSS growth over the run: {growth / 2**20:.1f} MiB")
        assert growth < 200 * 2**20


def test_a_saved_posterior_directory_is_wrapped_once(first_run, data_dir):
    from sbi_ops.commands.serve import resolve_model, server_command

    model_dir = Path(first_run["model_dir"])
    wrapped = resolve_model(str(model_dir), data_dir)
    assert (Path(wrapped) / "MLmodel").is_file() and resolve_model(str(model_dir), data_dir) == wrapped
    assert resolve_model(f"models:/{MODEL}@champion", data_dir) == f"models:/{MODEL}@champion"
    argv, env = server_command(wrapped, "127.0.0.1", 5005)
    assert argv[1:4] == ["models", "serve", "-m"] and "--env-manager" in argv
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert argv[argv.index("--workers") + 1] == "1"
    argv, _ = server_command(wrapped, "127.0.0.1", 5005, workers=3)
    assert argv[argv.index("--workers") + 1] == "3"
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            server_command(wrapped, "127.0.0.1", 5005, workers=bad)
