"""Artifact metadata and a local, file-based artifact registry.

:class:`ArtifactMetadata` is the small, JSON-serialisable record that identifies one trained
posterior (name, version, estimator family/class, task and dataset fingerprints, parameter names
and space, headline metrics). :class:`ArtifactRegistry` is a directory holding ``index.json``, a
JSON list of such records plus the path each saved posterior directory lives at. It is the
embedded, no-setup registry; the MLflow model registry in ``flows/`` plays the same role at scale.

Writes are atomic (temporary file + ``os.replace``), so a crash never leaves a half-written index.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ArtifactMetadata", "ArtifactRegistry", "ArtifactRegistryError"]

REGISTRY_INDEX_NAME = "index.json"
REGISTRY_FORMAT_VERSION = "1.0"


class ArtifactRegistryError(ValueError):
    """The registry index is unreadable, or a requested entry does not exist."""


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ArtifactMetadata:
    """Identity card of one trained posterior artifact.

    Attributes:
        name: Artifact name (defaults to the task name, or the estimator class).
        version: Artifact version string, e.g. ``"0.1.0"``.
        estimator_family: ``estimator_family`` of the posterior class (``"conditional_flow"``...).
        estimator_class: Class name of the posterior.
        parameter_names: Names of the inferred parameters, in column order.
        parameter_space: Space the posterior models (``physical``, ``cube``, ``unconstrained``).
        task_name: Task the training store was simulated for, when known.
        task_version: Version of that task, when known.
        task_fingerprint: Fingerprint of the training data (store fingerprint), when known.
        metrics: Headline validation metrics (floats).
        created_at: ISO-8601 UTC timestamp.
        tags: Free-form string tags.
    """

    name: str
    version: str
    estimator_family: str
    estimator_class: str
    parameter_names: tuple[str, ...] = ()
    parameter_space: str = "unconstrained"
    task_name: str | None = None
    task_version: str | None = None
    task_fingerprint: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    created_at: str = field(default_factory=_utc_now)
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("name", "version", "estimator_family", "estimator_class"):
            value = getattr(self, attr)
            if not isinstance(value, str) or not value:
                raise ValueError(f"ArtifactMetadata.{attr}: expected a non-empty string, got {value!r}")
        object.__setattr__(self, "parameter_names", tuple(str(n) for n in self.parameter_names))
        object.__setattr__(self, "metrics", {str(k): float(v) for k, v in dict(self.metrics).items()})
        object.__setattr__(self, "tags", {str(k): str(v) for k, v in dict(self.tags).items()})

    def to_payload(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        payload = asdict(self)
        payload["parameter_names"] = list(self.parameter_names)
        payload["metrics"] = dict(self.metrics)
        payload["tags"] = dict(self.tags)
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ArtifactMetadata:
        """Rebuild from :meth:`to_payload` output; unknown keys are ignored (forward compatible)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in dict(payload).items() if k in known})


def _atomic_write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ArtifactRegistry:
    """A local registry: a directory with a JSON index of saved posterior artifacts.

    Args:
        root: Directory of the registry (created on first registration).

    Example:
        >>> registry = ArtifactRegistry("registry")            # doctest: +SKIP
        >>> posterior.save("models/v1", artifact_registry=registry, artifact_version="1.0.0")
        >>> registry.latest("two_moons").path                  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        """Path of the JSON index file."""
        return self.root / REGISTRY_INDEX_NAME

    def _read_index(self) -> list[dict[str, Any]]:
        if not self.index_path.exists():
            return []
        try:
            payload = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactRegistryError(f"{self.index_path}: unreadable registry index ({exc})") from None
        entries = payload.get("entries") if isinstance(payload, dict) else None
        if not isinstance(entries, list):
            raise ArtifactRegistryError(f"{self.index_path}: expected an object with an 'entries' list")
        return entries

    def register(self, metadata: ArtifactMetadata, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Record ``metadata`` for the artifact saved at ``path`` (replacing the same name+version).

        Returns:
            The stored entry: the metadata payload plus ``"path"`` (absolute).
        """
        entry = {**metadata.to_payload(), "path": str(Path(path).resolve())}
        entries = [
            e for e in self._read_index()
            if not (e.get("name") == metadata.name and e.get("version") == metadata.version)
        ]
        entries.append(entry)
        _atomic_write_json(self.index_path, {"format_version": REGISTRY_FORMAT_VERSION, "entries": entries})
        return entry

    def list(self, name: str | None = None) -> list[dict[str, Any]]:
        """Entries in registration order, optionally only those called ``name``."""
        return [e for e in self._read_index() if name is None or e.get("name") == name]

    def get(self, name: str, version: str) -> dict[str, Any]:
        """Return the entry ``name``/``version``.

        Raises:
            ArtifactRegistryError: naming the known versions when absent.
        """
        matches = [e for e in self.list(name) if e.get("version") == version]
        if not matches:
            known = [e.get("version") for e in self.list(name)]
            raise ArtifactRegistryError(f"artifact {name!r} version {version!r} not registered (known: {known})")
        return matches[-1]

    def latest(self, name: str) -> dict[str, Any]:
        """Return the most recently registered entry called ``name``."""
        entries = self.list(name)
        if not entries:
            known = sorted({str(e.get("name")) for e in self.list()})
            raise ArtifactRegistryError(f"no artifact called {name!r} is registered (known: {known})")
        return entries[-1]
