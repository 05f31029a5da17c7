"""The registration scenario of the registry crash test, and the consistency checks after a kill.

A data folder (``MlflowService`` default: ``sqlite:///<data>/mlflow.db`` + ``<data>/mlartifacts``)
starts with model ``crashy`` version 1 as champion (trained on data ``a``, held-out NLL 1.0). The
scenario registers a better model trained on data ``b`` (NLL 0.5) with the production code path,
:func:`flows.registry.register_and_promote`: log the model artifacts into a run, register a
version, apply the promotion rule. Uninterrupted, version 2 becomes champion and challenger.

The model artifacts are a pyfunc directory built once (``flows.packaging.save_pyfunc``) and
logged as run artifacts: the same files ``log_pyfunc`` writes, without loading the posterior in
every killed process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

NAME = "crashy"
EXPERIMENT = "registry-crash"
CONFIG = "c" * 64
MODELS = {
    "old": ("a" * 64, {"heldout_nll": 1.0, "calibration_error": 0.05}),
    "new": ("b" * 64, {"heldout_nll": 0.5, "calibration_error": 0.05}),
}


def service_of(data_dir: Path) -> Any:
    from flows.tracking import MlflowService

    return MlflowService.create(None, Path(data_dir), EXPERIMENT)


def build_template(data_dir: Path, pyfunc_dir: Path) -> None:
    """Migrated registry with version 1 (data ``a``) as champion; its source is ``pyfunc_dir``."""
    from flows.options import PromotionRule
    from flows.registry import promote, version_tags

    service = service_of(data_dir)
    client = service.client()
    fingerprint, metrics = MODELS["old"]
    client.create_registered_model(NAME)
    # No experiment here: its artifact location would point into the template from every copy.
    version = client.create_model_version(NAME, source=Path(pyfunc_dir).as_uri(),
                                          tags=version_tags(fingerprint, CONFIG, metrics))
    promote(service, NAME, str(version.version), metrics, PromotionRule(), Path(data_dir) / "locks")


def register(data_dir: Path, pyfunc_dir: Path) -> Any:
    """Register and promote the ``new`` model: the code path of ``flows.retrain`` (its skip check
    for a finished registration of the same data and config, then ``register_posterior``).

    Returns:
        None when a finished registration exists, else the :class:`flows.registry.Registration`.
    """
    from flows.options import PromotionRule
    from flows.registry import find_version, register_and_promote, version_tags

    service = service_of(data_dir)
    fingerprint, metrics = MODELS["new"]
    if find_version(service, NAME, fingerprint, CONFIG) is not None:
        return None

    def log_model() -> str:
        run_id = service.start_run("register")
        service.log_artifact(run_id, Path(pyfunc_dir), "model")
        service.end_run(run_id)
        return f"runs:/{run_id}/model"

    return register_and_promote(service, NAME, version_tags(fingerprint, CONFIG, metrics), metrics,
                                PromotionRule(), Path(data_dir) / "locks", log_model)


# -- checks ----------------------------------------------------------------------------------------

def artifact_problems(version: Any) -> list[str]:
    """Why the version's model artifacts are not a complete pyfunc + verified posterior (or [])."""
    from sbi_core.persistence import PosteriorLoadError, read_posterior_metadata
    from sbi_core.posterior_base import POSTERIOR_METADATA_SCHEMA_VERSION

    root = Path(unquote(urlparse(version.source).path))
    if not (root / "MLmodel").is_file() or not (root / "pyfunc_model.py").is_file():
        return [f"v{version.version}: {root} lacks MLmodel or pyfunc_model.py (the model code)"]
    posteriors = [p.parent for p in root.rglob("metadata.json")]
    if len(posteriors) != 1:
        return [f"v{version.version}: expected one posterior directory under {root}, found {posteriors}"]
    try:
        read_posterior_metadata(posteriors[0], (POSTERIOR_METADATA_SCHEMA_VERSION,))
    except PosteriorLoadError as exc:
        return [f"v{version.version}: {exc}"]
    return []


def version_problems(version: Any) -> list[str]:
    """Why an aliased version is not complete: status, registration tags, reason, artifacts."""
    from flows.registry import CALIBRATION_TAG, CONFIG_TAG, FINGERPRINT_TAG, NLL_TAG, REASON_TAG

    problems = [] if version.status == "READY" else [f"v{version.version}: status {version.status}"]
    missing = [t for t in (FINGERPRINT_TAG, CONFIG_TAG, NLL_TAG, CALIBRATION_TAG, REASON_TAG)
               if t not in version.tags]
    if missing:
        problems.append(f"v{version.version}: aliased but lacks tags {missing}")
    return problems + artifact_problems(version)


def registry_state(data_dir: Path) -> dict[str, Any]:
    """Versions (number -> tags) and aliases (name -> version number) of ``crashy``."""
    from flows.registry import CHALLENGER, CHAMPION, alias_version

    client = service_of(data_dir).client()
    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{NAME}'")}
    aliases = {}
    for alias in (CHAMPION, CHALLENGER):
        found = alias_version(client, NAME, alias)
        aliases[alias] = None if found is None else int(found.version)
    return {"versions": versions, "aliases": aliases,
            "problems": [p for n in set(aliases.values()) if n is not None
                         for p in version_problems(client.get_model_version(NAME, str(n)))]}
