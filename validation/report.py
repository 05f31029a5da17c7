"""Validation reports: one record per failure, JSON, a human summary and Prefect table rows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from validation.policy import ValidationPolicy

REPORT_SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class Failure:
    """One finding of one check.

    Attributes:
        check: check name from ``validation.policy.CHECKS``.
        severity: ``"error"`` or ``"warning"``.
        location: the array path (``blocks/spectrum/values``) or manifest field
            (``sbi_store.parameters[1].prior.low``) at fault, or ``<store>``.
        message: one readable sentence naming location, sample indices and expectation.
        expected: what the check expected, as text.
        found: what it found (the first offending value for per-sample checks), as text.
        sample_indices: the first few offending sample (or feature, see ``index_kind``) indices.
        count: how many samples (or features) fail in total; 0 when not per-sample.
        index_kind: ``"sample"``, ``"feature"`` or ``""``.
    """

    check: str
    severity: str
    location: str
    message: str
    expected: str = ""
    found: str = ""
    sample_indices: tuple[int, ...] = ()
    count: int = 0
    index_kind: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (indices as a list)."""
        data = asdict(self)
        data["sample_indices"] = list(self.sample_indices)
        return data


@dataclass
class ValidationReport:
    """The outcome of ``validate_store``.

    Attributes:
        store: the validated path.
        failures: every error and warning, in the order the checks ran.
        n_samples: the sample count the manifest declares (None if unreadable).
        format_version: the declared format version (None if unreadable).
        fingerprint: the store's dataset fingerprint (None when the store is invalid or it
            could not be computed).
        statistics: per-check numbers (KS statistics and p-values, duplicate counts, ...).
        checks_run: the check stages that ran (structure, content, statistics).
        elapsed_s: wall time of the validation.
    """

    store: str
    failures: list[Failure] = field(default_factory=list)
    n_samples: int | None = None
    format_version: str | None = None
    fingerprint: str | None = None
    statistics: dict[str, Any] = field(default_factory=dict)
    checks_run: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def errors(self) -> list[Failure]:
        """Failures with severity ``error``."""
        return [f for f in self.failures if f.severity == "error"]

    @property
    def warnings(self) -> list[Failure]:
        """Failures with severity ``warning``."""
        return [f for f in self.failures if f.severity == "warning"]

    @property
    def valid(self) -> bool:
        """True when no check failed with severity ``error``."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the whole report."""
        return {
            "report_schema_version": REPORT_SCHEMA_VERSION,
            "store": self.store,
            "valid": self.valid,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "n_samples": self.n_samples,
            "format_version": self.format_version,
            "fingerprint": self.fingerprint,
            "checks_run": list(self.checks_run),
            "elapsed_s": round(self.elapsed_s, 3),
            "statistics": self.statistics,
            "failures": [f.to_dict() for f in self.failures],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    def write_json(self, path: str | Path) -> Path:
        """Write the JSON report to ``path`` and return it."""
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    def table_rows(self) -> list[dict[str, Any]]:
        """One flat dict per failure: ``prefect.artifacts.create_table_artifact(table=rows)``."""
        return [
            {
                "severity": f.severity,
                "check": f.check,
                "location": f.location,
                "samples": _format_indices(f.sample_indices, f.count),
                "count": f.count,
                "expected": f.expected,
                "found": f.found,
                "message": f.message,
            }
            for f in self.failures
        ]

    def summary(self, max_lines: int = 20) -> str:
        """A short human summary: verdict, counts, then the first failures."""
        verdict = "VALID" if self.valid else "INVALID"
        head = (
            f"{verdict}: {self.store} ({self.n_samples if self.n_samples is not None else '?'} "
            f"samples) - {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        )
        lines = [head]
        ordered = self.errors + self.warnings
        lines += [f"  {f.severity.upper():7s} [{f.check}] {f.message}" for f in ordered[:max_lines]]
        if len(ordered) > max_lines:
            lines.append(f"  ... {len(ordered) - max_lines} more (see the JSON report)")
        if self.fingerprint:
            lines.append(f"  fingerprint: {self.fingerprint}")
        return "\n".join(lines)


def _json_default(value: Any) -> Any:
    # numpy scalars sneak into statistics; make them plain JSON numbers.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _format_indices(indices: Iterable[int], count: int) -> str:
    indices = list(indices)
    if not indices:
        return ""
    text = ", ".join(str(i) for i in indices)
    return text + (f" (+{count - len(indices)} more)" if count > len(indices) else "")


@dataclass
class _Pending:
    """Per-sample findings of one (check, location) accumulated across chunks."""

    description: str
    expected: str
    found: str
    index_kind: str
    indices: list[int] = field(default_factory=list)
    count: int = 0


class FailureCollector:
    """Collects failures under a policy; per-sample findings are merged across chunks."""

    def __init__(self, policy: ValidationPolicy) -> None:
        self.policy = policy
        self._failures: list[Failure | tuple[str, str, str]] = []
        self._pending: dict[tuple[str, str, str], _Pending] = {}

    def add(self, check: str, location: str, message: str, *, expected: str = "",
            found: str = "") -> None:
        """Record a one-off failure (structure and manifest checks)."""
        severity = self.policy.severity(check)
        if severity != "ignore":
            self._failures.append(
                Failure(check, severity, location, f"{location}: {message}", expected, found)
            )

    def add_indexed(self, check: str, location: str, description: str, indices: Iterable[int], *,
                    expected: str = "", found: str = "", index_kind: str = "sample") -> None:
        """Record offending sample (or feature) indices; repeated calls for the same
        (check, location, description) merge into one report entry listing the first few and the count."""
        indices = [int(i) for i in indices]
        if not indices or self.policy.severity(check) == "ignore":
            return
        key = (check, location, description)
        if key not in self._pending:
            self._pending[key] = _Pending(description, expected, found, index_kind)
            self._failures.append(key)
        pending = self._pending[key]
        room = self.policy.max_sample_indices - len(pending.indices)
        pending.indices.extend(indices[: max(room, 0)])
        pending.count += len(indices)

    def has_errors(self) -> bool:
        """True if any error-severity failure was recorded so far."""
        return any(f.severity == "error" for f in self.failures())

    def failures(self) -> list[Failure]:
        """All failures in recording order."""
        return [f if isinstance(f, Failure) else self._finish(f) for f in self._failures]

    def _finish(self, key: tuple[str, str, str]) -> Failure:
        check, location, _ = key
        p = self._pending[key]
        noun = p.index_kind if p.count == 1 else p.index_kind + "s"
        listed = _format_indices(p.indices, p.count)
        message = f"{location}: {p.description} at {p.count} {noun} ({p.index_kind} {listed})"
        if p.expected:
            message += f"; expected {p.expected}"
        if p.found:
            message += f", found {p.found}"
        return Failure(check, self.policy.severity(check), location, message, p.expected, p.found,
                       tuple(p.indices), p.count, p.index_kind)
