"""Estimators by name and the one option vocabulary shared by ``sbi-ops train`` and pipelines.

The vocabulary is the chosen estimator's constructor keywords plus ``estimator``
(``conditional_flow`` | ``flow_matching``). ``parameter_dim`` is always taken from the store.
:data:`TRAINING_DEFAULTS` are the command-line defaults, which (unlike the class defaults of
the reference API) train to convergence with early stopping on the validation split.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = [
    "ESTIMATORS",
    "TRAINING_DEFAULTS",
    "EstimatorOptionsError",
    "estimator_class",
    "estimator_keywords",
    "parse_set_options",
    "resolve_estimator_options",
    "FIT_OPTIONS",
    "split_fit_options",
]

#: Estimator name -> (module, class name); imported lazily.
ESTIMATORS: dict[str, tuple[str, str]] = {
    "conditional_flow": ("sbi_core.flow_posterior", "ConditionalFlowPosterior"),
    "flow_matching": ("sbi_core.flow_matching_posterior", "FlowMatchingPosterior"),
}

#: Command-line defaults (applied when the estimator accepts the keyword): train to convergence.
#: Early stopping selects a weight average (``parameter_average_decay``): at lr 1e-3 the raw
#: weights' validation loss jumps between epochs, so the best raw epoch is a lucky one (two_moons
#: C2ST 0.568 raw vs 0.535 averaged; the demo's calibration error 0.017 raw vs 0.009 averaged).
TRAINING_DEFAULTS: dict[str, Any] = {
    "num_epochs": 200,
    "batch_size": 256,
    "learning_rate": 1e-3,
    "early_stopping_patience": 15,
    "early_stopping_min_delta": 0.0,
    "use_cosine_schedule": True,
    "warmup_fraction": 0.02,
    "parameter_average_decay": 0.999,
}


#: Options of ``fit`` (not of the constructor) that a config may set; both estimators take them.
FIT_OPTIONS: tuple[str, ...] = ("center_spectrum_levels", "parameter_average_decay")


class EstimatorOptionsError(ValueError):
    """An unknown estimator or option, or a value that cannot be parsed."""


def estimator_class(name: str) -> type:
    """The estimator class registered as ``name``."""
    if name not in ESTIMATORS:
        raise EstimatorOptionsError(f"unknown estimator {name!r}; allowed: {sorted(ESTIMATORS)}")
    module, cls_name = ESTIMATORS[name]
    try:
        return getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as exc:
        raise EstimatorOptionsError(f"estimator {name!r} is not available ({exc})") from None


def estimator_keywords(cls: type) -> tuple[str, ...]:
    """Constructor keywords of ``cls`` that users may set (all but ``parameter_dim``)."""
    params = inspect.signature(cls.__init__).parameters
    return tuple(n for n, p in params.items() if n not in ("self", "parameter_dim")
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def _parse_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EstimatorOptionsError(f"cannot parse value {text!r} ({exc})") from None
    if isinstance(value, str):
        if value in ("None", "none"):
            return None
        try:
            return float(value) if any(c in value.lower() for c in ".e") or value.lower() in ("inf", "nan") else value
        except ValueError:
            return value
    return value


def parse_set_options(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings (values as YAML scalars: ``1e-3``, ``true``, ``null``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EstimatorOptionsError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out


def resolve_estimator_options(
    config: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> tuple[type, dict[str, Any]]:
    """Merge defaults < config file < overrides and check every key.

    Returns:
        ``(estimator class, constructor keywords without parameter_dim)``.

    Raises:
        EstimatorOptionsError: On an unknown estimator or key (naming the allowed ones).
    """
    merged = {**dict(config or {}), **dict(overrides or {})}
    name = merged.pop("estimator", "conditional_flow")
    cls = estimator_class(str(name))
    allowed = (*estimator_keywords(cls), *FIT_OPTIONS)
    if "parameter_dim" in merged:
        raise EstimatorOptionsError("parameter_dim is taken from the store; do not set it")
    unknown = sorted(set(merged) - set(allowed))
    if unknown:
        raise EstimatorOptionsError(
            f"unknown option(s) {unknown} for estimator {name!r}; allowed: estimator, {', '.join(allowed)}"
        )
    options = {k: v for k, v in TRAINING_DEFAULTS.items() if k in allowed}
    options.update(merged)
    return cls, options


def split_fit_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(constructor keywords, fit keywords)`` of resolved options (see :data:`FIT_OPTIONS`).

    Raises:
        EstimatorOptionsError: When ``center_spectrum_levels`` is not a bool or
            ``parameter_average_decay`` is not a number in (0, 1) (or null).
    """
    constructor = {k: v for k, v in options.items() if k not in FIT_OPTIONS}
    fit = {k: v for k, v in options.items() if k in FIT_OPTIONS}
    value = fit.get("center_spectrum_levels", True)
    if not isinstance(value, bool):
        raise EstimatorOptionsError(f"center_spectrum_levels must be true or false, got {value!r}")
    decay = fit.get("parameter_average_decay")
    if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1):
        raise EstimatorOptionsError(f"parameter_average_decay must be a number in (0, 1) or null, got {decay!r}")
    return constructor, fit
