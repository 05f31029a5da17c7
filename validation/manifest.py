"""Parse and check the ``sbi_store`` group attribute (the manifest) field by field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from validation.priors import PriorView, prior_view
from validation.report import FailureCollector

SUPPORTED_FORMAT_VERSIONS: tuple[str, ...] = ("1.0",)
MODALITIES: tuple[str, ...] = ("spectrum", "photometry", "time_series", "auxiliary")
ATTRIBUTE = "sbi_store"


@dataclass(frozen=True)
class ParameterEntry:
    """One manifest parameter whose prior parsed."""

    index: int
    name: str
    prior: PriorView


@dataclass(frozen=True)
class BlockEntry:
    """One manifest block (fields already checked)."""

    name: str
    modality: str
    length: int
    has_uncertainties: bool
    constraint: Mapping[str, Any] | None = None


@dataclass
class Manifest:
    """What the manifest declares; ``complete`` is False if any entry had to be dropped."""

    format_version: str
    n_samples: int | None
    parameters: list[ParameterEntry] = field(default_factory=list)
    blocks: list[BlockEntry] = field(default_factory=list)
    complete: bool = True


def read_manifest(attrs: Mapping[str, Any], out: FailureCollector) -> Manifest | None:
    """Check the manifest; return it, or None when it is too broken to interpret."""
    if ATTRIBUTE not in attrs:
        out.add("manifest_present", ATTRIBUTE, "group attribute is missing",
                expected="a JSON object (store format 1.0)", found="absent")
        return None
    raw = attrs[ATTRIBUTE]
    if isinstance(raw, str):  # a writer that json.dumps'ed the manifest: say which problem it is
        try:
            json.loads(raw)
            problem = "holds JSON text, not a JSON object"
        except json.JSONDecodeError as exc:
            problem = f"is not valid JSON ({exc})"
        out.add("manifest_present", ATTRIBUTE, problem, expected="a JSON object",
                found=repr(raw[:80]))
        return None
    if not isinstance(raw, Mapping):
        out.add("manifest_present", ATTRIBUTE, "is not a JSON object",
                expected="a JSON object", found=type(raw).__name__)
        return None
    version = raw.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        out.add("format_version", f"{ATTRIBUTE}.format_version", "unsupported store format",
                expected=f"one of {list(SUPPORTED_FORMAT_VERSIONS)}", found=repr(version))
        return None
    manifest = Manifest(format_version=version, n_samples=_n_samples(raw, out))
    _check_task(raw, out)
    manifest.parameters, params_ok = _parameters(raw.get("parameters"), out)
    manifest.blocks, blocks_ok = _blocks(raw.get("blocks"), out)
    noise = raw.get("noise_model")
    if noise is not None and not isinstance(noise, Mapping):
        out.add("manifest_field", f"{ATTRIBUTE}.noise_model", "must be a JSON object or absent",
                expected="mapping or null", found=type(noise).__name__)
    manifest.complete = params_ok and blocks_ok and manifest.n_samples is not None
    return manifest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _n_samples(raw: Mapping[str, Any], out: FailureCollector) -> int | None:
    value = raw.get("n_samples")
    if not _is_int(value) or value < 0:
        out.add("manifest_field", f"{ATTRIBUTE}.n_samples", "must be a non-negative integer",
                expected="integer >= 0", found=repr(value))
        return None
    if value == 0:
        out.add("empty_store", f"{ATTRIBUTE}.n_samples", "the store holds no samples",
                expected=">= 1", found="0")
    return value


def _check_task(raw: Mapping[str, Any], out: FailureCollector) -> None:
    task = raw.get("task")
    if not isinstance(task, Mapping):
        out.add("manifest_field", f"{ATTRIBUTE}.task", "must be an object {name, version}",
                expected="{'name': str, 'version': str}", found=repr(task))
        return
    for key in ("name", "version"):
        if not isinstance(task.get(key), str) or not task.get(key):
            out.add("manifest_field", f"{ATTRIBUTE}.task.{key}", "must be a non-empty string",
                    expected="str", found=repr(task.get(key)))


def _parameters(entries: Any, out: FailureCollector) -> tuple[list[ParameterEntry], bool]:
    where = f"{ATTRIBUTE}.parameters"
    if not isinstance(entries, list) or not entries:
        out.add("manifest_field", where, "must be a non-empty list",
                expected="list of {name, unit, prior}", found=repr(entries)[:80])
        return [], False
    parsed, ok, seen = [], True, set()
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            out.add("manifest_field", f"{here}.name", "each parameter needs a string name",
                    expected="str", found=repr(entry)[:80])
            ok = False
            continue
        if entry["name"] in seen:
            out.add("manifest_field", f"{here}.name", f"duplicate parameter name "
                    f"{entry['name']!r}", expected="unique names", found=entry["name"])
            ok = False
        seen.add(entry["name"])
        if not isinstance(entry.get("unit"), str):
            out.add("manifest_field", f"{here}.unit", "must be a string",
                    expected="str", found=repr(entry.get("unit")))
        try:
            parsed.append(ParameterEntry(i, entry["name"], prior_view(entry.get("prior"))))
        except Exception as exc:  # noqa: BLE001 - any parser failure is a bad payload
            out.add("prior_payload", f"{here}.prior", f"invalid prior ({exc})",
                    expected="uniform/log_uniform/normal payload", found=repr(entry.get("prior")))
            ok = False
    return parsed, ok


def _blocks(entries: Any, out: FailureCollector) -> tuple[list[BlockEntry], bool]:
    where = f"{ATTRIBUTE}.blocks"
    if not isinstance(entries, list) or not entries:
        out.add("manifest_field", where, "must be a non-empty list",
                expected="list of {name, modality, length, has_uncertainties}",
                found=repr(entries)[:80])
        return [], False
    parsed, ok, seen = [], True, set()
    for i, entry in enumerate(entries):
        block = _block(entry, f"{where}[{i}]", seen, out)
        if block is None:
            ok = False
        else:
            seen.add(block.name)
            parsed.append(block)
    return parsed, ok


def _block(entry: Any, here: str, seen: set[str], out: FailureCollector) -> BlockEntry | None:
    if not isinstance(entry, Mapping):
        out.add("block_payload", here, "must be a JSON object", found=type(entry).__name__)
        return None
    name, modality = entry.get("name"), entry.get("modality")
    length, has_unc = entry.get("length"), entry.get("has_uncertainties")
    problems = []
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        problems.append(("name", "non-empty string, no '/', not starting with '.'", repr(name)))
    elif name in seen:
        problems.append(("name", "unique block names", f"duplicate {name!r}"))
    if modality not in MODALITIES:
        problems.append(("modality", f"one of {list(MODALITIES)}", repr(modality)))
    if not _is_int(length) or length < 1:
        problems.append(("length", "integer >= 1", repr(length)))
    if not isinstance(has_unc, bool):
        problems.append(("has_uncertainties", "true or false", repr(has_unc)))
    constraint = entry.get("constraint")
    problems += _constraint_problems(constraint)
    for key, expected, found in problems:
        out.add("block_payload", f"{here}.{key}", f"invalid block field ({found})",
                expected=expected, found=found)
    if problems:
        return None
    return BlockEntry(name, modality, length, has_unc, constraint)


def _constraint_problems(constraint: Any) -> list[tuple[str, str, str]]:
    if constraint is None:
        return []
    if not isinstance(constraint, Mapping):
        return [("constraint", "object {min_value, max_value, ...} or absent", repr(constraint))]
    problems = []
    for key in ("min_value", "max_value"):
        value = constraint.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            problems.append((f"constraint.{key}", "number or null", repr(value)))
    for key in ("min_inclusive", "max_inclusive"):
        if not isinstance(constraint.get(key, True), bool):
            problems.append((f"constraint.{key}", "true or false", repr(constraint.get(key))))
    return problems
