"""Numpy views of the declared priors: payload checks, support and CDF for the validator.

The validator must judge raw payloads (it reports an unknown kind or a bad bound instead of
crashing), and it streams millions of values, so it works on numpy. When ``sbi_core.priors`` is
importable, its ``prior_from_payload`` is the authority on which payloads are valid (the message
it raises names the bad field); the numpy support/CDF below implement the same formulas as the
DESIGN.md prior kinds and are cross-checked against it in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

PRIOR_FIELDS: Mapping[str, tuple[str, str]] = {
    "uniform": ("low", "high"),
    "log_uniform": ("low", "high"),
    "normal": ("loc", "scale"),
}


@dataclass(frozen=True)
class PriorView:
    """Support and CDF of one scalar prior, elementwise on numpy arrays."""

    kind: str
    support: tuple[float, float]
    cdf: Callable[[np.ndarray], np.ndarray]


def _number(payload: Mapping[str, Any], key: str) -> float:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"field {key!r} must be a finite number, got {value!r}")
    return float(value)


def _uniform(low: float, high: float) -> PriorView:
    if not low < high:
        raise ValueError(f"'low' ({low}) must be < 'high' ({high})")
    return PriorView("uniform", (low, high),
                     lambda x: np.clip((np.asarray(x, np.float64) - low) / (high - low), 0.0, 1.0))


def _log_uniform(low: float, high: float) -> PriorView:
    if not 0 < low < high:
        raise ValueError(f"need 0 < 'low' ({low}) < 'high' ({high})")
    span = math.log(high) - math.log(low)

    def cdf(x: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(x, np.float64), low, high)
        return np.clip((np.log(x) - math.log(low)) / span, 0.0, 1.0)

    return PriorView("log_uniform", (low, high), cdf)


def _normal(loc: float, scale: float) -> PriorView:
    if not scale > 0:
        raise ValueError(f"'scale' ({scale}) must be > 0")
    return PriorView("normal", (-math.inf, math.inf),
                     lambda x: special.ndtr((np.asarray(x, np.float64) - loc) / scale))


_BUILDERS = {"uniform": _uniform, "log_uniform": _log_uniform, "normal": _normal}


def prior_view(payload: Any) -> PriorView:
    """Build the numpy view of a DESIGN.md prior payload.

    Raises:
        ValueError: naming the bad field (not a mapping, unknown kind, missing or bad bound).
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"prior must be a JSON object, got {type(payload).__name__}")
    kind = payload.get("kind")
    if kind not in _BUILDERS:
        raise ValueError(f"field 'kind': unknown prior kind {kind!r}; expected one of "
                         f"{sorted(_BUILDERS)}")
    first, second = PRIOR_FIELDS[kind]
    view = _BUILDERS[kind](_number(payload, first), _number(payload, second))
    _cross_check_with_sbi_core(payload)
    return view


def _cross_check_with_sbi_core(payload: Mapping[str, Any]) -> None:
    # The library's own parser is the authority once it exists: a payload it refuses would make
    # `open_store` fail later, so the validator refuses it now, with the library's message.
    try:
        from sbi_core.priors import prior_from_payload
    except Exception:  # noqa: BLE001 - not landed or broken: the numpy checks above still apply
        return
    prior_from_payload(dict(payload))
