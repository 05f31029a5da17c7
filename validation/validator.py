"""``validate_store``: structure, then content, then statistics, into one report."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from validation.access import open_group_readonly
from validation.content import run_content_checks
from validation.manifest import read_manifest
from validation.policy import ValidationPolicy
from validation.report import FailureCollector, ValidationReport
from validation.structure import check_structure


def validate_store(path: str | Path, *, chunk_size: int | None = None, ks_alpha: float = 1e-6,
                   policy: ValidationPolicy | None = None, content: bool = True,
                   fingerprint: bool = True) -> ValidationReport:
    """Validate a simulation store (format 1.0) without modifying it.

    Args:
        path: the store, a Zarr v3 directory or a zip file.
        chunk_size: samples read per step (default: whole chunks, about 8 MiB per step).
        ks_alpha: level of the KS test of each parameter against its prior.
        policy: severities per check (default: the documented policy).
        content: run the streamed content and statistics checks (default True).
        fingerprint: compute the dataset fingerprint with ``sbi_core.dataset.open_store`` when
            the store is valid (a second streamed pass).

    Returns:
        The report; ``report.valid`` is False when any check failed with severity error.
        Never raises for a bad store: every problem, including exceptions from zarr or the
        library reader, becomes a report entry.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size: got {chunk_size}, expected an integer >= 1")
    if not 0 < ks_alpha < 1:
        raise ValueError(f"ks_alpha: got {ks_alpha}, expected 0 < ks_alpha < 1")
    began = time.perf_counter()
    out = FailureCollector(policy or ValidationPolicy())
    report = ValidationReport(store=str(path))
    try:
        _validate(Path(path), out, report, chunk_size, ks_alpha, content)
    except Exception as exc:  # noqa: BLE001 - a bad store must never crash the validator
        out.add("internal", "<store>", f"validation stopped: {type(exc).__name__}: {exc}")
    report.failures = out.failures()
    if fingerprint and report.valid:
        report.fingerprint = _fingerprint(Path(path), out, report)
        report.failures = out.failures()
    report.elapsed_s = time.perf_counter() - began
    return report


def _validate(path: Path, out: FailureCollector, report: ValidationReport,
              chunk_size: int | None, ks_alpha: float, content: bool) -> None:
    with ExitStack() as stack:
        try:
            group = stack.enter_context(open_group_readonly(path))
        except Exception as exc:  # noqa: BLE001 - zarr/zipfile raise many types
            out.add("store_readable", str(path), f"not a readable Zarr v3 store "
                    f"({type(exc).__name__}: {exc})",
                    expected="a Zarr v3 group (directory or zip)")
            return
        _validate_group(group, out, report, chunk_size, ks_alpha, content)


def _validate_group(group: Any, out: FailureCollector, report: ValidationReport,
                    chunk_size: int | None, ks_alpha: float, content: bool) -> None:
    manifest = read_manifest(dict(group.attrs), out)
    report.checks_run.append("manifest")
    if manifest is None:
        return
    report.format_version, report.n_samples = manifest.format_version, manifest.n_samples
    arrays = check_structure(group, manifest, out)
    report.checks_run.append("structure")
    if not content or out.has_errors() or not manifest.complete or manifest.n_samples < 1:
        # Content checks need a consistent layout; structural errors are reported first.
        return
    report.statistics.update(run_content_checks(arrays, out, step=chunk_size,
                                                ks_alpha=ks_alpha))
    report.checks_run.append("content")


def _fingerprint(path: Path, out: FailureCollector, report: ValidationReport) -> str | None:
    try:
        from sbi_core.dataset import open_store
    except Exception:  # noqa: BLE001 - the reader has not landed (or is broken) here
        report.statistics["fingerprint_note"] = "sbi_core.dataset.open_store unavailable"
        return None
    try:
        return str(open_store(path).fingerprint)
    except Exception as exc:  # noqa: BLE001
        out.add("fingerprint", str(path), f"the library reader rejected a store the validator "
                f"accepts ({type(exc).__name__}: {exc})", expected="open_store(path) succeeds")
        return None
