"""A throwaway PostgreSQL cluster on a loopback port (Debian's ``postgresql`` binaries).

For development and tests only: trust authentication on 127.0.0.1, data in a temp dir. Usable as
a script::

    python deployments/postgres/throwaway_pg.py start /tmp/sbi-pg --databases mlflow prefect
    # prints   postgresql://sbi@127.0.0.1:<port>/<db>   for each database
    python deployments/postgres/throwaway_pg.py stop /tmp/sbi-pg

or from Python (the integration test does)::

    with ThrowawayPostgres(databases=("mlflow", "prefect")) as pg:
        pg.url("mlflow")                  # postgresql://sbi@127.0.0.1:PORT/mlflow

``initdb``/``pg_ctl`` refuse to run as root; as root the cluster runs as the ``postgres`` user (or
``nobody``) via ``runuser``, with its directory chowned to that user.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUPERUSER = "sbi"


def find_pg_bin() -> Path | None:
    """Directory of ``initdb``/``pg_ctl``: ``$PG_BIN``, then PATH, then the newest Debian install."""
    if os.environ.get("PG_BIN"):  # an explicit choice: used as given, or nothing
        given = Path(os.environ["PG_BIN"])
        return given if (given / "initdb").is_file() and (given / "pg_ctl").is_file() else None
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    """The unprivileged user to run the cluster as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists; initdb refuses root")


class ThrowawayPostgres:
    """Start a private cluster in ``directory`` (a new temp dir by default); stop and delete it on exit."""

    def __init__(self, directory: str | os.PathLike | None = None, *, port: int | None = None,
                 databases: tuple[str, ...] = (), pg_bin: Path | None = None, keep: bool = False) -> None:
        self.pg_bin = pg_bin or find_pg_bin()
        if self.pg_bin is None:
            raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install -y postgresql, or set PG_BIN")
        self.owned_dir = directory is None
        # Not under pytest's tmp dirs: those are 0700 root, which the cluster's user cannot enter.
        self.directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="sbi-pg-"))
        self.port = port or free_port()
        self.databases = databases
        self.keep = keep
        self.user = _run_as()

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres", driver: str = "postgresql") -> str:
        """``driver://sbi@127.0.0.1:PORT/database`` (``postgresql+asyncpg`` for Prefect)."""
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.user, "--"] if self.user else []) + list(args)

    def _call(self, *args: str) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=180, cwd="/")
        if proc.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")

    def start(self) -> ThrowawayPostgres:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.directory, user=self.user)
            os.chmod(self.directory, 0o700)
        bin_ = self.pg_bin
        if not (self.data / "PG_VERSION").exists():
            self._call(str(bin_ / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._call(str(bin_ / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.directory / "server.log"), "-w", "-t", "120", "start")
        for name in self.databases:
            self._call(str(bin_ / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        (self.directory / "cluster.json").write_text(json.dumps({"port": self.port, "user": self.user}))
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._cmd(str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
                           capture_output=True, timeout=120, cwd="/")
        if self.owned_dir and not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200 (raises with the reason after ``timeout_s``)."""
    import urllib.request

    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except OSError as err:
            last = str(err)
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s ({last})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("directory")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--databases", nargs="*", default=["mlflow", "prefect"])
    args = parser.parse_args(argv)
    if args.action == "start":
        pg = ThrowawayPostgres(args.directory, port=args.port, databases=tuple(args.databases), keep=True).start()
        for name in args.databases:
            print(pg.url(name))
        return 0
    info = json.loads((Path(args.directory) / "cluster.json").read_text())
    ThrowawayPostgres(args.directory, port=info["port"], keep=True).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
