"""Small stores and observations for the posterior tests (numpy only: no simulator compiles)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sbi_core.dataset import create_store
from sbi_core.observation import ObservationBlock

UNIFORM_NORMAL_PRIORS = [
    {"name": "a", "unit": "m", "prior": {"kind": "uniform", "low": -1.0, "high": 2.0}},
    {"name": "b", "unit": "", "prior": {"kind": "normal", "loc": 0.5, "scale": 0.3}},
]


def _payload(parameters: list[dict], blocks: list[dict], name: str = "toy") -> dict[str, Any]:
    return {"name": name, "version": "1", "parameters": parameters, "blocks": blocks, "noise_model": None}


def write_store(path: str | os.PathLike, theta: np.ndarray, blocks: dict[str, dict[str, np.ndarray]],
                block_specs: list[dict], parameters: list[dict], name: str = "toy") -> Any:
    """Write ``theta`` and block arrays to a store (one chunk) and open it."""
    n = theta.shape[0]
    writer = create_store(str(path), task_payload=_payload(parameters, block_specs, name), n_samples=n, chunk_size=n)
    writer.write_chunk(0, theta, blocks)
    return writer.finalize()


def toy_store(path: str | os.PathLike, n: int = 200, seed: int = 0, with_spectrum: bool = False) -> Any:
    """2 parameters (uniform, normal prior); an auxiliary block ``x`` = theta + noise.

    With ``with_spectrum`` also a length-12 spectrum block with uncertainties.
    """
    rng = np.random.default_rng(seed)
    theta = np.stack([rng.uniform(-1.0, 2.0, n), rng.normal(0.5, 0.3, n)], axis=1)
    x = theta + 0.1 * rng.standard_normal((n, 2))
    blocks = {"x": {"values": x}}
    specs = [{"name": "x", "modality": "auxiliary", "length": 2, "has_uncertainties": False}]
    if with_spectrum:
        grid = np.linspace(0.0, 1.0, 12)
        spec = theta[:, :1] * np.sin(3 * grid) + theta[:, 1:] * grid + 0.05 * rng.standard_normal((n, 12))
        blocks["spectrum"] = {"values": spec, "uncertainties": np.full((n, 12), 0.05)}
        specs.append({"name": "spectrum", "modality": "spectrum", "length": 12, "has_uncertainties": True})
    return write_store(path, theta, blocks, specs, UNIFORM_NORMAL_PRIORS)


def gaussian_linear_store(path: str | os.PathLike, n: int = 400, dim: int = 2, seed: int = 0) -> Any:
    """The ``gaussian_linear`` task (prior and noise variance 0.1), simulated with numpy."""
    from sbi_core.simulators import get_task

    task = get_task("gaussian_linear", dim=dim)
    payload = task.to_payload()
    rng = np.random.default_rng(seed)
    theta = np.sqrt(0.1) * rng.standard_normal((n, dim))
    x = theta + np.sqrt(0.1) * rng.standard_normal((n, dim))
    writer = create_store(str(path), task_payload=payload, n_samples=n, chunk_size=n)
    writer.write_chunk(0, theta, {"x": {"values": x}})
    return writer.finalize()


def blocks_of(store: Any, split: str = "test", row: int = 0) -> list[ObservationBlock]:
    """Observation blocks of one stored row."""
    _, obs = store.read(split)
    out = []
    for spec in store.observation_schema.blocks:
        unc = obs.uncertainties.get(spec.name)
        out.append(ObservationBlock(name=spec.name, modality=spec.modality, values=obs.values[spec.name][row],
                                    uncertainties=None if unc is None else unc[row]))
    return out
