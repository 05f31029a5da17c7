"""MLflow tracking server and Prefect server backed by PostgreSQL (``deployments/postgres``).

Runs when PostgreSQL server binaries are installed (Debian's ``postgresql``: ``initdb``/``pg_ctl``
under ``/usr/lib/postgresql/*/bin``, on PATH, or ``$PG_BIN``); skips with the reason otherwise. A
throwaway cluster is started on a loopback port (as the ``postgres``/``nobody`` user when we are
root), with one database for MLflow and one for Prefect; both servers start at once and each
test checks that what it wrote landed in PostgreSQL tables.

- MLflow: ``mlflow server --backend-store-uri postgresql+psycopg://...``; a run with a param,
  a metric and an artifact, a registered model version with an alias. Needs a PostgreSQL driver
  for SQLAlchemy in the environment (``psycopg`` 3; skipped with the reason without it).
- Prefect: ``prefect server start`` with ``PREFECT_API_DATABASE_CONNECTION_URL=
  postgresql+asyncpg://...`` (asyncpg ships with prefect); ``/api/health`` answers and a flow
  run from another process is recorded in the ``flow_run`` table.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deployments" / "postgres"))
from throwaway_pg import ThrowawayPostgres, find_pg_bin, free_port, wait_for_http  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_pg_bin() is None, reason="no PostgreSQL server binaries (initdb/pg_ctl): apt-get install -y postgresql, or set PG_BIN"),
]
STARTUP_TIMEOUT_S = 420  # both servers migrate their schema on first start; slow on a busy 2-core box
HAS_PSYCOPG = importlib.util.find_spec("psycopg") is not None
NO_DRIVER = "MLflow's SQLAlchemy store needs a PostgreSQL driver: psycopg (psycopg[binary]) is not installed in this environment"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "MLFLOW_TRACKING_"))}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
                "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_UI_ENABLED": "false"}, **extra)
    return env


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:  # the child keeps its own descriptor
        return subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own session: it and its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A throwaway cluster plus an MLflow and a Prefect server on it, started concurrently."""
    work = tmp_path_factory.mktemp("pg-servers")
    with ThrowawayPostgres(databases=("mlflow", "prefect")) as pg:
        bin_dir = Path(sys.executable).parent
        out = {"pg": pg, "work": work}
        prefect_port = free_port()
        out["prefect"] = (_spawn([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                                 _env(work / "prefect-home", PREFECT_API_DATABASE_CONNECTION_URL=pg.url("prefect", "postgresql+asyncpg")),
                                 work / "prefect.log"), prefect_port)
        if HAS_PSYCOPG:
            mlflow_port = free_port()
            out["mlflow"] = (_spawn([str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
                                     "--backend-store-uri", pg.url("mlflow", "postgresql+psycopg"),
                                     "--artifacts-destination", str(work / "mlartifacts")],
                                    _env(work / "prefect-home"), work / "mlflow.log"), mlflow_port)
        try:
            yield out
        finally:
            for name in ("mlflow", "prefect"):
                if name in out:
                    _stop(out[name][0])


def _wait(servers, name: str, path: str) -> str:
    proc, port = servers[name]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + path, STARTUP_TIMEOUT_S, proc)
    except (RuntimeError, TimeoutError) as err:
        log = (servers["work"] / f"{name}.log").read_text()[-3000:]
        pytest.fail(f"{name} server on PostgreSQL did not start: {err}\n{log}")
    return base


def _psql(pg: ThrowawayPostgres, database: str, sql: str) -> list[tuple]:
    import asyncpg  # a prefect dependency

    async def query():
        conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user="sbi", database=database)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(query())


@pytest.mark.skipif(not HAS_PSYCOPG, reason=NO_DRIVER)
def test_mlflow_tracking_server_on_postgres_logs_runs_and_registers_models(servers, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=_wait(servers, "mlflow", "/health"))
    experiment = client.create_experiment("sbi-pg")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "flow_family", "affine")
    client.log_metric(run.info.run_id, "validation_loss", 1.25, step=3)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "metadata.json").write_text(json.dumps({"schema_version": "0.2.0"}))
    client.log_artifacts(run.info.run_id, str(model_dir), artifact_path="model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("sbi-pg-model")
    version = client.create_model_version("sbi-pg-model", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("sbi-pg-model", "champion", version.version)

    assert client.get_model_version_by_alias("sbi-pg-model", "champion").run_id == run.info.run_id
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/metadata.json"]
    assert client.get_run(run.info.run_id).data.metrics == {"validation_loss": 1.25}
    # ... and it is PostgreSQL that holds them.
    pg = servers["pg"]
    assert _psql(pg, "mlflow", "SELECT key, value FROM params") == [("flow_family", "affine")]
    assert _psql(pg, "mlflow", "SELECT name, alias FROM registered_model_aliases") == [("sbi-pg-model", "champion")]
    assert _psql(pg, "mlflow", "SELECT status FROM runs") == [("FINISHED",)]


def test_prefect_server_on_postgres_answers_health_and_records_flow_runs(servers):
    base = _wait(servers, "prefect", "/api/health")
    with urllib.request.urlopen(base + "/api/health", timeout=10) as resp:
        assert json.loads(resp.read()) is True
    script = "from prefect import flow\n@flow(name='pg-hello')\ndef hello():\n    return 42\nprint('RESULT', hello())\n"
    proc = subprocess.run([sys.executable, "-c", script], env=_env(servers["work"] / "client-home", PREFECT_API_URL=base + "/api"),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and "RESULT 42" in proc.stdout, proc.stderr[-3000:]
    rows = _psql(servers["pg"], "prefect", "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id")
    assert rows == [("pg-hello", "COMPLETED")]
