"""The ``sbi_store`` group attribute: parse, validate, normalise and build it.

Normalising matters because the fingerprint hashes the canonical JSON of the manifest: ``0`` and
``0.0`` in a prior bound must hash alike, and so must two writers that order keys differently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from sbi_core.dataset.errors import StoreFormatError
from sbi_core.dataset.layout import FORMAT_VERSION, MANIFEST_ATTR, MODALITIES

_PRIOR_FIELDS = {"uniform": ("low", "high"), "log_uniform": ("low", "high"), "normal": ("loc", "scale")}


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _field(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise StoreFormatError(f"{where}: expected a JSON object, got {type(mapping).__name__}")
    if key not in mapping:
        raise StoreFormatError(f"{where}.{key}: missing (expected by store format {FORMAT_VERSION})")
    return mapping[key]


def _string(mapping: Any, key: str, where: str) -> str:
    value = _field(mapping, key, where)
    if not isinstance(value, str) or not value:
        raise StoreFormatError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def _number(mapping: Any, key: str, where: str) -> float:
    value = _field(mapping, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StoreFormatError(f"{where}.{key}: expected a finite number, got {value!r}")
    return float(value)


def _positive_int(mapping: Any, key: str, where: str) -> int:
    value = _field(mapping, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise StoreFormatError(f"{where}.{key}: expected a positive integer, got {value!r}")
    return int(value)


def normalize_prior(prior: Any, where: str) -> dict[str, Any]:
    """Validate one prior payload (``{"kind": ..., ...}``) and return it with float fields."""
    kind = _string(prior, "kind", where)
    if kind not in _PRIOR_FIELDS:
        raise StoreFormatError(f"{where}.kind: unknown prior {kind!r}; expected one of {sorted(_PRIOR_FIELDS)}")
    out = dict(prior)
    out.update({k: _number(prior, k, where) for k in _PRIOR_FIELDS[kind]})
    if kind != "normal" and not out["low"] < out["high"]:
        raise StoreFormatError(f"{where}: expected low < high, got low={out['low']} high={out['high']}")
    if kind == "log_uniform" and out["low"] <= 0:
        raise StoreFormatError(f"{where}.low: log_uniform needs low > 0, got {out['low']}")
    if kind == "normal" and out["scale"] <= 0:
        raise StoreFormatError(f"{where}.scale: expected > 0, got {out['scale']}")
    return out


def _normalize_parameters(params: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(params, list) or not params:
        raise StoreFormatError(f"{where}: expected a non-empty list of parameter objects, got {params!r}")
    out = []
    for i, p in enumerate(params):
        w = f"{where}[{i}]"
        _field(p, "name", w)
        entry = dict(p)
        entry["name"] = _string(p, "name", w)
        unit = _field(p, "unit", w)
        if not isinstance(unit, str):
            raise StoreFormatError(f"{w}.unit: expected a string (may be empty), got {unit!r}")
        entry["prior"] = normalize_prior(_field(p, "prior", w), f"{w}.prior")
        out.append(entry)
    _unique([p["name"] for p in out], where)
    return out


def _normalize_blocks(blocks: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(blocks, list) or not blocks:
        raise StoreFormatError(f"{where}: expected a non-empty list of block objects, got {blocks!r}")
    out = []
    for i, b in enumerate(blocks):
        w = f"{where}[{i}]"
        _field(b, "name", w)
        entry = dict(b)
        entry["name"] = _string(b, "name", w)
        if "/" in entry["name"] or entry["name"].startswith("."):
            raise StoreFormatError(f"{w}.name: {entry['name']!r} cannot be an array path component")
        modality = _field(b, "modality", w)
        modality = getattr(modality, "value", modality)
        if modality not in MODALITIES:
            raise StoreFormatError(f"{w}.modality: {modality!r}, expected one of {list(MODALITIES)}")
        entry["modality"] = modality
        entry["length"] = _positive_int(b, "length", w)
        if not isinstance(_field(b, "has_uncertainties", w), bool):
            raise StoreFormatError(f"{w}.has_uncertainties: expected true or false, got {b['has_uncertainties']!r}")
        out.append(entry)
    _unique([b["name"] for b in out], where)
    return out


def _unique(names: list[str], where: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise StoreFormatError(f"{where}: duplicate names {dupes}")


def parse_manifest(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalise the ``sbi_store`` attribute of a store's root group.

    Raises:
        StoreFormatError: naming the field and what was expected.
    """
    if MANIFEST_ATTR not in attributes:
        raise StoreFormatError(f"root group: missing attribute {MANIFEST_ATTR!r} (not a simulation store?)")
    raw, where = attributes[MANIFEST_ATTR], MANIFEST_ATTR
    version = _field(raw, "format_version", where)
    if version != FORMAT_VERSION:
        raise StoreFormatError(f"{where}.format_version: {version!r}, this reader supports {FORMAT_VERSION!r}")
    task = _field(raw, "task", where)
    manifest = dict(raw)
    manifest["task"] = {**task, "name": _string(task, "name", f"{where}.task"), "version": _string(task, "version", f"{where}.task")}
    manifest["parameters"] = _normalize_parameters(_field(raw, "parameters", where), f"{where}.parameters")
    manifest["blocks"] = _normalize_blocks(_field(raw, "blocks", where), f"{where}.blocks")
    noise = raw.get("noise_model")
    if noise is not None and not isinstance(noise, Mapping):
        raise StoreFormatError(f"{where}.noise_model: expected an object or null, got {noise!r}")
    manifest["noise_model"] = None if noise is None else dict(noise)
    manifest["n_samples"] = _positive_int(raw, "n_samples", where)
    return manifest


def manifest_from_task_payload(task_payload: Mapping[str, Any], n_samples: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Build a manifest from ``SBITask.to_payload()`` (or a hand-made dict of that shape).

    Block ``coordinates`` in the payload become arrays, not manifest fields.

    Returns:
        ``(manifest, {block: coordinates})``.

    Raises:
        StoreFormatError: naming the bad payload field.
    """
    blocks, coordinates = [], {}
    for i, b in enumerate(_field(task_payload, "blocks", "task_payload") or []):
        entry = dict(b) if isinstance(b, Mapping) else b
        if isinstance(entry, dict) and entry.get("coordinates") is not None:
            coordinates[str(entry.get("name"))] = np.asarray(entry["coordinates"], dtype=np.float64)
        if isinstance(entry, dict):
            entry.pop("coordinates", None)
        blocks.append(entry)
    raw = {
        "format_version": FORMAT_VERSION,
        "task": {"name": _field(task_payload, "name", "task_payload"), "version": _field(task_payload, "version", "task_payload")},
        "parameters": _field(task_payload, "parameters", "task_payload"),
        "blocks": blocks,
        "noise_model": task_payload.get("noise_model"),
        "n_samples": n_samples,
    }
    try:
        plain = json.loads(canonical_json(_jsonable(raw)))
    except (TypeError, ValueError) as exc:
        raise StoreFormatError(f"task_payload: not JSON-serialisable ({exc})") from None
    manifest = parse_manifest({MANIFEST_ATTR: plain})
    return manifest, coordinates


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and enums inside a payload to plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "value") and isinstance(getattr(obj, "value"), str):
        return obj.value
    return obj
