"""Helpers that read training-data metadata for posteriors (duck-typed over store readers).

A ``SimulationStore`` (``sbi_core.dataset.open_store``) exposes the task name/version, the
dataset fingerprint, the parameter specs (name, unit, prior) and the observation schema. Any
reader with the same attributes works; missing attributes are simply not cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BlockSpecView",
    "SchemaView",
    "coordinate_problems",
    "dataset_metadata",
    "observation_schema_from_payload",
    "parameter_transform_from_payloads",
    "schema_payload",
]


@dataclass(frozen=True)
class BlockSpecView:
    """Minimal ``ObservationBlockSpec`` stand-in rebuilt from a saved schema payload."""

    name: str
    modality: str
    length: int
    has_uncertainties: bool
    coordinates: Any = None


@dataclass(frozen=True)
class SchemaView:
    """Minimal ``ObservationSchema`` stand-in (``blocks`` + ``block(name)``)."""

    blocks: tuple[BlockSpecView, ...]

    def block(self, name: str) -> BlockSpecView:
        """Return the block spec called ``name`` (KeyError listing the known names)."""
        for spec in self.blocks:
            if spec.name == name:
                return spec
        raise KeyError(f"no block {name!r} in the schema (blocks: {[b.name for b in self.blocks]})")


def _modality_value(modality: Any) -> str:
    return str(getattr(modality, "value", modality))


def schema_payload(schema: Any) -> dict[str, Any]:
    """Return a JSON payload ``{"blocks": [...]}`` for an ``ObservationSchema`` (or a payload)."""
    if isinstance(schema, Mapping):
        return json.loads(json.dumps(dict(schema), default=_json_default))
    if hasattr(schema, "to_payload"):
        return json.loads(json.dumps(schema.to_payload(), default=_json_default))
    blocks = []
    for spec in schema.blocks:
        coords = getattr(spec, "coordinates", None)
        blocks.append({
            "name": spec.name,
            "modality": _modality_value(spec.modality),
            "length": int(spec.length),
            "has_uncertainties": bool(spec.has_uncertainties),
            "coordinates": None if coords is None else [float(c) for c in coords],
        })
    return {"blocks": blocks}


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "value"):
        return obj.value
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def observation_schema_from_payload(payload: Mapping[str, Any]) -> Any:
    """Rebuild a schema object: ``sbi_core.task.ObservationSchema`` when available, else a view."""
    try:
        from sbi_core.task import ObservationSchema

        return ObservationSchema.from_payload(payload)
    except Exception:  # noqa: BLE001 - fall back to the minimal view on any mismatch
        blocks = payload.get("blocks") or []
        return SchemaView(tuple(
            BlockSpecView(
                name=str(b["name"]),
                modality=_modality_value(b["modality"]),
                length=int(b["length"]),
                has_uncertainties=bool(b.get("has_uncertainties", False)),
                coordinates=None if b.get("coordinates") is None else tuple(b["coordinates"]),
            )
            for b in blocks
        ))


def parameter_transform_from_payloads(priors: Sequence[Mapping[str, Any]]) -> Any:
    """Build a ``ParameterTransform`` from DESIGN.md prior payloads."""
    from sbi_core.priors import prior_from_payload
    from sbi_core.spaces import ParameterTransform

    return ParameterTransform([prior_from_payload(p) for p in priors])


def _prior_payload(prior: Any) -> dict[str, Any]:
    return dict(prior) if isinstance(prior, Mapping) else dict(prior.to_payload())


def _parameter_info(dataset: Any) -> dict[str, Any]:
    specs = getattr(dataset, "parameter_specs", None)
    manifest = getattr(dataset, "manifest", None) or {}
    if specs is None and isinstance(manifest, Mapping):
        specs = manifest.get("parameters")
    if not specs:
        names = getattr(dataset, "parameter_names", None)
        return {"parameter_names": list(names)} if names else {}
    names, units, priors = [], [], []
    for spec in specs:
        get = spec.get if isinstance(spec, Mapping) else (lambda k, s=spec: getattr(s, k, None))
        names.append(str(get("name")))
        units.append(str(get("unit") or ""))
        prior = get("prior")
        if prior is not None:
            priors.append(_prior_payload(prior))
    return {
        "parameter_names": names,
        "parameter_units": units,
        "parameter_priors": priors if len(priors) == len(names) else [],
    }


def _task_fingerprint(dataset: Any, manifest: Mapping[str, Any]) -> str | None:
    explicit = getattr(dataset, "task_fingerprint", None)
    if isinstance(explicit, str):
        return explicit
    if not manifest:
        return None
    canonical = {k: manifest.get(k) for k in ("task", "parameters", "blocks", "noise_model")}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dataset_metadata(dataset: Any) -> dict[str, Any]:
    """Collect task, fingerprint, schema and parameter metadata from a store-like reader.

    Returns:
        Keys ``task_name``, ``task_version``, ``task_fingerprint`` (SHA-256 over the canonical
        task part of the manifest: task, parameters, blocks, noise model), ``dataset_fingerprint``
        (the store fingerprint over metadata and contents), ``observation_schema`` (payload),
        ``parameter_names``, ``parameter_units``, ``parameter_priors`` -- each only when available.
    """
    manifest = getattr(dataset, "manifest", None)
    manifest = manifest if isinstance(manifest, Mapping) else {}
    task = manifest.get("task") or {}
    info: dict[str, Any] = {
        "task_name": getattr(dataset, "task_name", None) or task.get("name"),
        "task_version": getattr(dataset, "task_version", None) or task.get("version"),
        "task_fingerprint": _task_fingerprint(dataset, manifest),
    }
    fingerprint = getattr(dataset, "fingerprint", None)
    info["dataset_fingerprint"] = fingerprint if isinstance(fingerprint, str) else None
    schema = getattr(dataset, "observation_schema", None)
    if schema is None and manifest.get("blocks"):
        schema = {"blocks": manifest["blocks"]}
    if schema is not None:
        info["observation_schema"] = schema_payload(schema)
    info.update(_parameter_info(dataset))
    return info


def coordinate_problems(blocks: Sequence[Any], schema: Any) -> list[str]:
    """Blocks whose coordinates (when both sides have them) differ from the schema's."""
    problems = []
    specs = {spec.name: spec for spec in schema.blocks}
    for block in blocks:
        spec = specs.get(getattr(block, "name", None))
        mine = getattr(block, "coordinates", None)
        theirs = None if spec is None else getattr(spec, "coordinates", None)
        if mine is None or theirs is None:
            continue
        mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
        if mine.shape != theirs.shape:
            continue  # the length check reports this
        if not np.allclose(mine, theirs, rtol=1e-6, atol=0.0):
            worst = int(np.argmax(np.abs(mine - theirs)))
            problems.append(
                f"block {block.name!r}: coordinates differ from the schema's (element {worst}: "
                f"{mine[worst]!r}, expected {theirs[worst]!r})"
            )
    return problems
