"""``prefect deploy`` of deployments/prefect.yaml against a real ``prefect server start`` on loopback.

Checks that the nightly deployment is registered with its cron schedule and that emitting
``sbi.dataset.updated`` creates a flow run of the triggered deployment with the store from the
event payload. No worker runs here: creating the run is the server's part, executing it is the
worker's (covered by the retrain tests).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

QUERY = r"""
import asyncio, json, sys
from prefect.client.orchestration import get_client

async def main():
    async with get_client() as client:
        out = {"deployments": {}, "runs": []}
        for dep in await client.read_deployments():
            out["deployments"][dep.name] = {
                "id": str(dep.id), "work_pool": dep.work_pool_name,
                "crons": [getattr(s.schedule, "cron", None) for s in (dep.schedules or [])]}
        for run in await client.read_flow_runs():
            out["runs"].append({"deployment_id": str(run.deployment_id), "parameters": run.parameters})
        print(json.dumps(out, default=str))

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """``prefect server start`` on a free loopback port with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "true", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(api + "/health", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"prefect server did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(1)
        yield {**env, "PREFECT_API_URL": api}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _state(env: dict[str, str]) -> dict:
    return json.loads(_run([sys.executable, "-c", QUERY], env).strip().splitlines()[-1])


def test_deploy_registers_cron_and_event_trigger_starts_a_run(prefect_server, tiny_store):
    env = {**prefect_server, "SBI_OPS_HOME": str(REPO), "SBI_OPS_STORE": str(tiny_store)}
    _run([str(BIN / "prefect"), "work-pool", "create", "sbi-process", "--type", "process"], env)
    _run([str(BIN / "prefect"), "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"], env)
    state = _state(env)
    nightly = state["deployments"]["nightly"]
    assert nightly["crons"] == ["0 3 * * *"] and nightly["work_pool"] == "sbi-process"
    triggered = state["deployments"]["on-dataset-updated"]

    new_store = "/srv/sbi/stores/new.zarr"
    _run([str(BIN / "prefect"), "event", "emit", "sbi.dataset.updated", "--resource-id", "sbi.store.test",
          "--payload", json.dumps({"store": new_store, "fingerprint": "0" * 64})], env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = [r for r in _state(env)["runs"] if r["deployment_id"] == triggered["id"]]
        if runs:
            break
        time.sleep(3)
    assert runs, "the sbi.dataset.updated event did not create a flow run of on-dataset-updated"
    assert runs[0]["parameters"]["options"]["store"] == new_store
