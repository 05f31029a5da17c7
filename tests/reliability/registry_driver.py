"""Fork server of the registry crash test: import MLflow once, fork one child per kill point.

    python -m tests.reliability.registry_driver SPEC.json      (prints one JSON line)

Importing MLflow costs several seconds on the shared CPU; a forked child starts in milliseconds.
The parent never opens a database, so every child creates its own engine on its own copy of the
template data folder. Kill points are the scenario's mutations: every SQL write statement and
every commit of a transaction that wrote (SQLAlchemy engine events), and every file-system
mutation under the data folder (:mod:`tests.reliability.faults`: artifact copies, the registry
lock). At mutation ``kill_at`` the child sends itself SIGKILL; a kill point past the end of a run
lands after its last mutation.

Spec keys: ``template`` and ``pyfunc`` (directories), ``workdir`` (trial copies go there),
``seeds`` (one kill point per seed, uniform over ``[1, events]`` of the counting run) and
``always_from`` (a log entry, e.g. ``"sql INSERT INTO model_versions"``: every mutation from its
first occurrence on is a kill point too).
Output: ``{"reference": trial, "trials": [trial, ...]}`` with trial = ``{"kill_at", "dir",
"killed", "exit", "seconds", "log"}``; the reference is the uninterrupted counting run, and
``log`` (the mutations made, in order) is present for runs that were not killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path


def _install_sql_hook() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from tests.reliability import faults

    def before_execute(conn, cursor, statement, parameters, context, executemany):
        words = statement.split()
        if words and words[0].upper() in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
            conn.info["wrote"] = True
            faults.event("sql " + " ".join(words[:3]))

    def before_commit(conn):
        if conn.info.pop("wrote", False):  # read-only sessions commit too: not a kill point
            faults.event("sql COMMIT")

    event.listen(Engine, "before_cursor_execute", before_execute)
    event.listen(Engine, "commit", before_commit)
    event.listen(Engine, "rollback", lambda conn: conn.info.pop("wrote", None))


def _child(data_dir: Path, pyfunc: Path, kill_at: int, report: Path) -> None:
    from tests.reliability import faults, registry_scenario

    log: list[str] = []
    faults.install(str(data_dir), kill_at, log)
    _install_sql_hook()
    registry_scenario.register(data_dir, pyfunc)
    count = faults.count()
    report.write_text(json.dumps(log))  # outside the data folder: not a mutation
    if 0 < count < kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def _run(spec: dict, kill_at: int) -> dict:
    data_dir = Path(spec["workdir"]) / f"k{kill_at}"
    shutil.copytree(spec["template"], data_dir)
    report = Path(spec["workdir"]) / f"k{kill_at}.log.json"
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _child(data_dir, Path(spec["pyfunc"]), kill_at, report)
        except BaseException as exc:  # noqa: BLE001 - reported to the test through the exit code
            print(f"kill point {kill_at}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    seconds = round(time.monotonic() - start, 2)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    trial = {"kill_at": kill_at, "dir": str(data_dir), "killed": killed, "seconds": seconds,
             "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
    if report.is_file():
        trial["log"] = json.loads(report.read_text())
    return trial


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    import mlflow  # noqa: F401 - imported before forking: the point of this server
    import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    import flows.registry  # noqa: F401
    import sbi_core.persistence  # noqa: F401

    from tests.reliability.helpers import kill_points

    reference = _run(spec, 0)
    log = reference.get("log") or []
    always = spec.get("always_from")
    first = next((i + 1 for i, entry in enumerate(log) if always and entry.startswith(always)), len(log) + 1)
    points = kill_points(len(log), spec["seeds"], always=range(first, len(log) + 1)) if log else []
    trials = [_run(spec, k) for k in points]
    print(json.dumps({"reference": reference, "trials": trials}), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.exit(main(sys.argv[1:]))
