"""The error/warning policy: every check the validator runs, and how serious a failure is.

A store with any *error* is invalid (``sbi-ops validate`` exits 1) and must not be trained on; a
*warning* is reported but does not invalidate the store; ``ignore`` drops the check's findings.
The defaults below are the documented policy (``docs/validation.md`` lists the same table); a
pipeline that knows better (e.g. a store deliberately simulated from a proposal rather than the
prior) passes ``ValidationPolicy(overrides={"prior_ks": "warning"})``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Severity = Literal["error", "warning", "ignore"]
SEVERITIES: tuple[str, ...] = ("error", "warning", "ignore")


@dataclass(frozen=True)
class CheckInfo:
    """One check of the catalogue: its default severity and what it verifies."""

    severity: Severity
    description: str


def _c(severity: Severity, description: str) -> CheckInfo:
    return CheckInfo(severity, description)


# Why these defaults: anything that makes the store unreadable, inconsistent with its manifest or
# numerically unusable (NaN, inf, non-positive uncertainties, parameters the prior gives zero
# density) would corrupt training or crash it, so it is an error. Duplicates are an error because
# they leak samples across the train/validation/test splits. The KS test is an error because at
# alpha = 1e-6 a rejection is not a fluke: the parameters were not drawn from the declared prior,
# and an amortized posterior trained on them targets the wrong prior. Chunk layout, dead features
# and fully masked samples are warnings: training still works, it is only slow or wasteful.
CHECKS: Mapping[str, CheckInfo] = MappingProxyType(
    {
        "store_readable": _c("error", "the path opens as a Zarr v3 group (directory or zip)"),
        "manifest_present": _c("error", "group attribute `sbi_store` exists and is a JSON object"),
        "manifest_field": _c("error", "every manifest field has the documented type and value"),
        "format_version": _c("error", "`format_version` is a supported version (1.0)"),
        "prior_payload": _c("error", "every parameter's prior payload is a known, valid prior"),
        "block_payload": _c("error", "block entries: unique names, known modality, valid length"),
        "empty_store": _c("error", "the store holds at least one sample"),
        "array_missing": _c("error", "every required array exists"),
        "array_unexpected": _c("error", "no block arrays the manifest does not declare"),
        "array_unknown": _c("warning", "no unknown members outside the documented layout"),
        "array_shape": _c("error", "arrays have the declared shape (N, P), (N, L), (L,)"),
        "array_dtype": _c("error", "float values/parameters/coordinates, bool mask, int splits"),
        "n_samples": _c("error", "`n_samples` equals the sample axis of every array"),
        "uncertainties_declared": _c("error", "uncertainties present iff `has_uncertainties`"),
        "coordinates": _c("error", "coordinates finite and strictly increasing"),
        "splits": _c("error", "split indices in range, unique, and disjoint across splits"),
        "split_unknown": _c("warning", "split arrays are only train/validation/test"),
        "chunk_layout": _c("warning", "arrays chunked along the sample axis in a fast layout"),
        "chunk_read": _c("error", "every chunk decodes (no truncated or corrupted files)"),
        "chunk_missing": _c("error", "every chunk of a data array is stored (a missing one would "
                                     "silently read as the fill value)"),
        "parameters_finite": _c("error", "every parameter value is finite"),
        "parameters_in_support": _c("error", "every parameter value lies in its prior's support"),
        "values_finite": _c("error", "every valid (unmasked) observation value is finite"),
        "values_constraint": _c("error", "values satisfy the block's ObservationValueConstraint"),
        "uncertainties_finite": _c("error", "every valid uncertainty is finite"),
        "uncertainties_positive": _c("error", "every valid uncertainty is strictly positive"),
        "fully_masked": _c("warning", "no sample has every element of a block masked"),
        "duplicate_samples": _c("error", "no two samples share parameters and observations"),
        "dead_features": _c("warning", "no feature is constant over all samples"),
        "prior_ks": _c("error", "parameters are plausible draws from the prior (KS test)"),
        "fingerprint": _c("error", "the library reader (open_store) accepts the store and "
                                   "computes its fingerprint"),
        "internal": _c("error", "the validator finished (an exception it raised is reported)"),
    }
)


@dataclass(frozen=True)
class ValidationPolicy:
    """Severity per check: the documented defaults, optionally overridden.

    Args:
        overrides: check name -> ``"error"``, ``"warning"`` or ``"ignore"``.
        warnings_as_errors: escalate every warning to an error (``--strict``).
        max_sample_indices: how many sample indices a report entry lists before it only counts.
    """

    overrides: Mapping[str, str] = field(default_factory=dict)
    warnings_as_errors: bool = False
    max_sample_indices: int = 10

    def __post_init__(self) -> None:
        for name, severity in self.overrides.items():
            if name not in CHECKS:
                raise ValueError(
                    f"ValidationPolicy.overrides: unknown check {name!r}; "
                    f"expected one of {sorted(CHECKS)}"
                )
            if severity not in SEVERITIES:
                raise ValueError(
                    f"ValidationPolicy.overrides[{name!r}]: severity {severity!r}; "
                    f"expected one of {list(SEVERITIES)}"
                )
        if self.max_sample_indices < 1:
            raise ValueError(
                f"ValidationPolicy.max_sample_indices: got {self.max_sample_indices}, expected >= 1"
            )

    def severity(self, check: str) -> Severity:
        """The severity a failure of ``check`` gets under this policy."""
        severity = self.overrides.get(check, CHECKS[check].severity)
        if severity == "warning" and self.warnings_as_errors:
            return "error"
        return severity  # type: ignore[return-value]
