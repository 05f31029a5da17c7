"""Task-model objects (parameter specs, observation schema) rebuilt from a store's manifest.

Imported lazily: ``sbi_core.task`` imports the observation module, and a store must stay
readable (as plain dicts) even where the task model cannot be imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sbi_core.dataset.errors import StoreFormatError


def parameter_specs_from_manifest(manifest: Mapping[str, Any]) -> tuple[Any, ...]:
    """``ParameterSpec`` per manifest parameter, in column order."""
    from sbi_core.priors import prior_from_payload
    from sbi_core.task import ParameterSpec

    specs = []
    for i, p in enumerate(manifest["parameters"]):
        try:
            prior = prior_from_payload(p["prior"])
        except ValueError as exc:
            raise StoreFormatError(f"sbi_store.parameters[{i}].prior: {exc}") from None
        specs.append(ParameterSpec(name=p["name"], unit=p["unit"], prior=prior))
    return tuple(specs)


def observation_schema_from_manifest(manifest: Mapping[str, Any], coordinates: Mapping[str, np.ndarray]) -> Any:
    """``ObservationSchema`` of the store's blocks, with coordinates where the store has them."""
    from sbi_core.task import ObservationSchema

    blocks = [{**b, "coordinates": coordinates.get(b["name"])} for b in manifest["blocks"]]
    try:
        return ObservationSchema.from_payload({"blocks": blocks})
    except ValueError as exc:
        raise StoreFormatError(f"sbi_store.blocks: {exc}") from None
