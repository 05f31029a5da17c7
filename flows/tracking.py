"""One MLflow service object that owns the tracking and registry URIs.

Embedded default (no setup): ``sqlite:///<data_dir>/mlflow.db`` for runs and the registry, and
``<data_dir>/mlartifacts/<experiment>`` for artifacts. The experiment is always created with an
explicit ``artifact_location``; without it MLflow writes to ``./mlruns`` of whatever the current
working directory happens to be. A tracking server (``http://...``) replaces both at once.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.options import DEFAULT_EXPERIMENT, default_data_dir


def _quiet_sqlalchemy() -> None:
    # SQLAlchemy 2.1 deprecation noise from MLflow's own store code; nothing we can act on.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sqlalchemy\..*")
    warnings.filterwarnings("ignore", message=r".*SQLAlchemy.*", category=DeprecationWarning)


@dataclass(frozen=True)
class MlflowService:
    """Tracking/registry URIs, the artifact root and the experiment, in one place.

    Attributes:
        tracking_uri: MLflow tracking URI (``sqlite:///...`` or ``http(s)://...``).
        registry_uri: Model registry URI (defaults to the tracking URI).
        artifact_root: Local artifact root used when the experiment is created here.
        experiment: Experiment name.
    """

    tracking_uri: str
    registry_uri: str
    artifact_root: Path
    experiment: str = DEFAULT_EXPERIMENT

    @classmethod
    def create(cls, tracking_uri: str | None = None, data_dir: Path | None = None,
               experiment: str = DEFAULT_EXPERIMENT) -> MlflowService:
        """Build the service: the embedded sqlite default unless ``tracking_uri`` is given.

        Args:
            tracking_uri: Explicit tracking URI; None uses ``sqlite:///<data_dir>/mlflow.db``.
            data_dir: Project data folder (default: ``$SBI_OPS_DATA_DIR`` or ``./data``).
            experiment: Experiment name.
        """
        data = (Path(data_dir).expanduser().resolve() if data_dir else default_data_dir())
        data.mkdir(parents=True, exist_ok=True)
        uri = tracking_uri or f"sqlite:///{data / 'mlflow.db'}"
        return cls(tracking_uri=uri, registry_uri=uri, artifact_root=data / "mlartifacts",
                   experiment=experiment)

    def activate(self) -> MlflowService:
        """Point the ``mlflow`` module-level API at this service (needed by ``log_model``)."""
        import mlflow

        _quiet_sqlalchemy()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        return self

    def client(self) -> Any:
        """An ``MlflowClient`` bound to this service's URIs."""
        from mlflow import MlflowClient

        _quiet_sqlalchemy()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def experiment_id(self) -> str:
        """Id of the experiment, created with an explicit artifact location if missing."""
        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = (self.artifact_root / self.experiment).as_uri()
        try:
            return client.create_experiment(self.experiment, artifact_location=location)
        except Exception:  # noqa: BLE001 - a concurrent retrain may have created it first
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def start_run(self, run_name: str, tags: Mapping[str, str] | None = None) -> str:
        """Create a run (not made active) and return its id."""
        run = self.client().create_run(self.experiment_id(), run_name=run_name, tags=dict(tags or {}))
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Terminate a run with ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client().set_terminated(run_id, status=status)

    @contextmanager
    def active_run(self, run_id: str) -> Iterator[Any]:
        """Make ``run_id`` the active run of the fluent API for the duration (no status change)."""
        import mlflow

        self.activate()
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None) as run:
            yield run

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log flattened parameters (values stringified, truncated to MLflow's limit)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client().log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Log finite numeric metrics at ``step`` (non-numbers and non-finite values skipped)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if _finite_number(v)]
        if items:
            self.client().log_batch(run_id, metrics=items)

    def log_history(self, run_id: str, history: Mapping[str, list[float]]) -> None:
        """Log per-epoch curves (``train_loss``, ``validation_loss``, ``learning_rate``, ...)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(v), now, epoch) for key, values in history.items() if key != "epoch"
                 for epoch, v in enumerate(values, start=1) if _finite_number(v)]
        for i in range(0, len(items), 1000):
            self.client().log_batch(run_id, metrics=items[i:i + 1000])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload one file or a directory's files."""
        path = Path(path)
        if path.is_dir():
            self.client().log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client().log_artifact(run_id, str(path), artifact_path)

    def log_dict(self, run_id: str, payload: Mapping[str, Any], name: str) -> None:
        """Store a JSON document as an artifact."""
        self.client().log_text(run_id, json.dumps(payload, indent=2, default=str), name)


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys (``diagnostics.thresholds.sbc_alpha``)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
