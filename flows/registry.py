"""Model registration, the ``challenger``/``champion`` aliases and the promotion rule.

Every model that passes the gates is registered and gets alias ``challenger``. It becomes
``champion`` by :func:`decide_promotion` (documented in docs/operations.md): no champion yet, or
it beats the champion's held-out negative log-probability and does not worsen the calibration
error by more than a tolerance. The compare-and-set of ``champion`` runs under an exclusive file
lock, so two retrains finishing together cannot both read the old champion and overwrite each
other's decision (the lock covers processes on one machine sharing the data folder; with a
remote registry, run retrains through one Prefect work pool with a concurrency limit of 1).

Crash safety (a process killed at any point, tests/reliability/test_crash_registry.py):

- a version is created only after its model artifacts are fully logged, and MLflow creates the
  version row and all its tags (data, config, metrics) in one database transaction, so a
  version is never visible half-tagged or pointing at half-written artifacts;
- :func:`promote` writes ``promotion.reason``/``promotion.compared_to``, then the aliases, and
  ``promotion.decision`` last: that tag marks the registration *finished*. An alias therefore
  only ever points at a version whose reason is recorded;
- a version without ``promotion.decision`` is an interrupted registration. The skip check
  (:func:`find_version`) ignores it, and the next registration of the same data and
  configuration *resumes* it (:func:`register_and_promote`) instead of adding a duplicate;
  :func:`promote` is idempotent, so resuming a promotion that had already moved the aliases
  changes nothing but the missing tags.
"""

from __future__ import annotations

import fcntl
import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.options import PromotionRule
from flows.tracking import MlflowService

CHAMPION, CHALLENGER = "champion", "challenger"
NLL_TAG, CALIBRATION_TAG = "metric.heldout_nll", "metric.calibration_error"
FINGERPRINT_TAG, CONFIG_TAG = "dataset_fingerprint", "config_hash"
DECISION_TAG = "promotion.decision"
REASON_TAG, COMPARED_TAG = "promotion.reason", "promotion.compared_to"


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of the promotion rule.

    Attributes:
        promote: Whether the candidate becomes champion.
        reason: One sentence with the numbers compared.
        champion_version: The champion compared against (None when there was none).
    """

    promote: bool
    reason: str
    champion_version: str | None = None


def decide_promotion(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
                     rule: PromotionRule, champion_version: str | None = None) -> PromotionDecision:
    """Apply the promotion rule (pure function).

    Args:
        candidate: ``heldout_nll`` and ``calibration_error`` of the new version.
        champion: The same metrics of the current champion, or None when there is none.
        rule: Thresholds.
        champion_version: Used in the reason only.

    Returns:
        The decision with a reason that quotes the compared numbers.
    """
    nll, cal = float(candidate["heldout_nll"]), float(candidate["calibration_error"])
    if not (math.isfinite(nll) and math.isfinite(cal)):
        return PromotionDecision(False, f"candidate metrics are not finite (NLL {nll}, calibration "
                                 f"error {cal})", champion_version)
    if champion is None:
        return PromotionDecision(True, "no champion yet", None)
    old_nll, old_cal = champion.get("heldout_nll"), champion.get("calibration_error")
    if old_nll is None or old_cal is None:
        return PromotionDecision(False, f"champion v{champion_version} has no recorded metrics to "
                                 "compare with; promote manually", champion_version)
    versus = f"champion v{champion_version}" if champion_version else "champion"
    if not nll < old_nll - rule.min_nll_improvement:
        return PromotionDecision(False, f"held-out NLL {nll:.4f} does not beat {versus}'s "
                                 f"{old_nll:.4f} by more than {rule.min_nll_improvement}", champion_version)
    if cal > old_cal + rule.calibration_tolerance:
        return PromotionDecision(False, f"calibration error {cal:.4f} exceeds {versus}'s "
                                 f"{old_cal:.4f} + tolerance {rule.calibration_tolerance}", champion_version)
    return PromotionDecision(True, f"held-out NLL {nll:.4f} < {versus}'s {old_nll:.4f}; calibration "
                             f"error {cal:.4f} <= {old_cal:.4f} + {rule.calibration_tolerance}",
                             champion_version)


@contextmanager
def registry_lock(lock_dir: Path, model_name: str) -> Iterator[None]:
    """Exclusive, blocking file lock for one registered model (released on exit or crash)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"registry-{re.sub(r'[^A-Za-z0-9_.-]', '_', model_name)}.lock"
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _version_metrics(version: Any) -> dict[str, float]:
    out = {}
    for key, tag in (("heldout_nll", NLL_TAG), ("calibration_error", CALIBRATION_TAG)):
        if tag in version.tags:
            out[key] = float(version.tags[tag])
    return out


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The model version behind ``alias`` (None when the model or alias does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _versions_of(service: MlflowService, name: str, fingerprint: str, config: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        versions = service.client().search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    return [v for v in versions
            if v.tags.get(FINGERPRINT_TAG) == fingerprint and v.tags.get(CONFIG_TAG) == config]


def find_version(service: MlflowService, name: str, fingerprint: str, config: str) -> Any | None:
    """The newest finished registration trained on ``fingerprint`` with config ``config``."""
    # Only finished registrations count: a version whose promotion never completed (a crash
    # between register and promote) must not make later retrains skip its data forever.
    matches = [v for v in _versions_of(service, name, fingerprint, config) if DECISION_TAG in v.tags]
    return max(matches, key=lambda v: int(v.version)) if matches else None


def unfinished_version(service: MlflowService, name: str, fingerprint: str, config: str) -> Any | None:
    """The newest version of this data and config whose registration was interrupted (or None)."""
    matches = [v for v in _versions_of(service, name, fingerprint, config) if DECISION_TAG not in v.tags]
    return max(matches, key=lambda v: int(v.version)) if matches else None


def register_version(service: MlflowService, model_uri: str, name: str,
                     tags: Mapping[str, str]) -> Any:
    """Register ``model_uri`` as a new version of ``name`` with ``tags``."""
    import mlflow

    service.activate()
    return mlflow.register_model(model_uri, name, tags=dict(tags))


def _already_champion(client: Any, name: str, version: str) -> PromotionDecision | None:
    """The recorded decision when ``version`` already is champion (a resumed promotion), else None."""
    champion = alias_version(client, name, CHAMPION)
    if champion is None or str(champion.version) != str(version):
        return None
    # Killed after moving ``champion``: the reason was written before the aliases. Comparing the
    # version with itself instead would demote it.
    compared = champion.tags.get(COMPARED_TAG, "none")
    return PromotionDecision(True, champion.tags.get(REASON_TAG, "already champion"),
                             None if compared == "none" else compared)


def _decide(client: Any, name: str, metrics: Mapping[str, float], rule: PromotionRule) -> PromotionDecision:
    champion = alias_version(client, name, CHAMPION)
    return decide_promotion(metrics, None if champion is None else _version_metrics(champion), rule,
                            None if champion is None else str(champion.version))


def _set_challenger(client: Any, name: str, version: str) -> None:
    # ``challenger`` names the newest candidate: a resumed (older) registration or a slower
    # concurrent promotion does not take it back from a newer version.
    current = alias_version(client, name, CHALLENGER)
    if current is None or int(current.version) <= int(version):
        client.set_registered_model_alias(name, CHALLENGER, version)


def promote(service: MlflowService, name: str, version: str, metrics: Mapping[str, float],
            rule: PromotionRule, lock_dir: Path) -> PromotionDecision:
    """Set ``challenger`` to ``version`` and apply the promotion rule under the registry lock.

    Writes ``promotion.reason`` and ``promotion.compared_to``, then the aliases, then
    ``promotion.decision`` (the marker of a finished registration; see the module docstring).
    Idempotent: promoting the same version again leaves the same aliases and tags.
    """
    client = service.client()
    with registry_lock(lock_dir, name):
        decision = _already_champion(client, name, version)
        if decision is None:
            decision = _decide(client, name, metrics, rule)
            client.set_model_version_tag(name, version, REASON_TAG, decision.reason)
            client.set_model_version_tag(name, version, COMPARED_TAG, decision.champion_version or "none")
            _set_challenger(client, name, version)
            if decision.promote:
                client.set_registered_model_alias(name, CHAMPION, version)
        client.set_model_version_tag(name, version, DECISION_TAG,
                                     "champion" if decision.promote else "challenger")
    return decision


@dataclass(frozen=True)
class Registration:
    """Outcome of :func:`register_and_promote`: the version, the decision, whether it was resumed."""

    version: Any
    decision: PromotionDecision
    resumed: bool


def register_and_promote(service: MlflowService, name: str, tags: Mapping[str, str],
                         metrics: Mapping[str, float], rule: PromotionRule, lock_dir: Path,
                         log_model: Callable[[], str]) -> Registration:
    """Register a model and apply the promotion rule, resuming an interrupted registration.

    Args:
        service: The MLflow service.
        name: Registered model name.
        tags: Version tags (:func:`version_tags`; must hold the fingerprint and config hash).
        metrics: ``heldout_nll`` and ``calibration_error`` of the model.
        rule: Promotion thresholds.
        lock_dir: Folder of the registry lock.
        log_model: Logs the model artifacts and returns their URI; called only when no
            interrupted registration of the same data and configuration exists.

    Returns:
        The version, the promotion decision, and whether an interrupted version was resumed.
    """
    version = unfinished_version(service, name, tags[FINGERPRINT_TAG], tags[CONFIG_TAG])
    resumed = version is not None
    if not resumed:
        version = register_version(service, log_model(), name, tags)
    decision = promote(service, name, str(version.version), metrics, rule, lock_dir)
    return Registration(version, decision, resumed)


def version_tags(fingerprint: str, config: str, metrics: Mapping[str, float],
                 extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags recorded on every registered version: data, config and the compared metrics."""
    tags = {FINGERPRINT_TAG: fingerprint, CONFIG_TAG: config, **dict(extra or {})}
    for key, value in metrics.items():
        tags[f"metric.{key}"] = repr(float(value))
    return tags
