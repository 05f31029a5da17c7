"""Store validation: pandera-checked Zarr simulation stores (see docs/validation.md)."""

from validation.policy import CHECKS, ValidationPolicy
from validation.report import Failure, ValidationReport
from validation.validator import validate_store

__all__ = ["CHECKS", "Failure", "ValidationPolicy", "ValidationReport", "validate_store"]
