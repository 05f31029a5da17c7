"""``sbi-ops serve MODEL_URI_OR_DIR``: serve a posterior with ``mlflow models serve``.

MODEL_URI_OR_DIR is an MLflow model URI (``models:/<name>@champion``, ``runs:/...``), an MLflow
model directory (has ``MLmodel``), or a saved posterior directory (has ``metadata.json``), which
is wrapped into a pyfunc model under ``<data>/served/`` first. The server runs with the local
environment (``--env-manager local``); MLflow looks up ``python``/``uvicorn`` on PATH, so the
environment's ``bin`` is put first.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

EXIT_USAGE = 2


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def wrap_posterior_dir(directory: Path, data_dir: Path) -> Path:
    """Pyfunc model directory for a saved posterior (built once per content, then reused)."""
    from flows.packaging import save_pyfunc

    meta = (directory / "metadata.json").read_bytes()
    digest = hashlib.sha256(str(directory.resolve()).encode() + meta).hexdigest()[:16]
    target = data_dir / "served" / f"{directory.name}-{digest}"
    if not (target / "MLmodel").is_file():
        tmp = target.with_name(target.name + ".tmp")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        save_pyfunc(directory, tmp)
        tmp.rename(target)  # atomic: a crash never leaves a half-written model that looks complete
    return target


def resolve_model(model: str, data_dir: Path) -> str:
    """The URI or directory ``mlflow models serve`` gets."""
    path = Path(model)
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return str(path.resolve())
        if (path / "metadata.json").is_file():
            return str(wrap_posterior_dir(path.resolve(), data_dir))
        raise ValueError(f"{model} is neither an MLflow model (MLmodel) nor a saved posterior (metadata.json)")
    if "://" in model or model.startswith(("models:", "runs:")):
        return model
    raise ValueError(f"no such model directory or URI: {model}")


def server_command(model_uri: str, host: str, port: int, workers: int = 1) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow models serve`` argv and environment (the venv's bin first on PATH).

    ``workers`` uvicorn processes each load the model and compile its sampler once; on a
    multi-core host they serve concurrent clients in parallel (one worker is CPU-bound per request).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    for key, value in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("DO_NOT_TRACK", "true")):
        env.setdefault(key, value)
    argv = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
            "--host", host, "--port", str(port), "--workers", str(workers)]
    return argv, env


def serve(
    model: Annotated[str, typer.Argument(help="models:/<name>@champion, an MLflow model dir, or a saved posterior dir.")],
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 5001,
    host: Annotated[str, typer.Option("--host", help="Interface to bind (default loopback only).")] = "127.0.0.1",
    workers: Annotated[int, typer.Option("--workers", "-w", help="Server processes; each loads the model (memory x N). About one per core serves concurrent clients in parallel.")] = 1,
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="Registry for models:/ URIs (default: sqlite under the data folder).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Data folder (default $SBI_OPS_DATA_DIR or ./data).")] = None,
) -> None:
    """Serve a posterior over HTTP (POST /invocations)."""
    if not 0 < port < 65536:
        raise _fail(f"--port must be in 1..65535, got {port}")
    if workers < 1:
        raise _fail(f"--workers must be >= 1, got {workers}")
    from flows.options import default_data_dir
    from flows.tracking import MlflowService

    data = data_dir.expanduser().resolve() if data_dir else default_data_dir()
    try:
        uri = resolve_model(model, data)
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    argv, env = server_command(uri, host, port, workers)
    env.setdefault("MLFLOW_TRACKING_URI", tracking_uri or MlflowService.create(None, data).tracking_uri)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    typer.echo(f"serving {uri} on http://{host}:{port}/invocations", err=True)
    # Replace this process: signals (Ctrl-C, SIGTERM from a supervisor) reach the server directly.
    os.execve(argv[0], argv, env)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``sbi-ops`` application."""
    app.command("serve")(serve)
