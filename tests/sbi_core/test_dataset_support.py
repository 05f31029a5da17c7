"""Shared helpers for the store tests: small hand-made task payloads and a fake JAX task."""

from __future__ import annotations

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np

PARAMETERS = [
    {"name": "radius", "unit": "R_jup", "prior": {"kind": "uniform", "low": 0.5, "high": 2}},
    {"name": "log_x", "unit": "", "prior": {"kind": "normal", "loc": -3, "scale": 1}},
    {"name": "temperature", "unit": "K", "prior": {"kind": "log_uniform", "low": 300, "high": 3000}},
]


def all_modalities_payload() -> dict:
    """A payload with one block per modality, covering uncertainties and coordinates."""
    return {
        "name": "toy",
        "version": "0.1",
        "parameters": PARAMETERS,
        "blocks": [
            {"name": "spectrum", "modality": "spectrum", "length": 7, "has_uncertainties": True, "coordinates": np.linspace(0.5, 5.0, 7).tolist()},
            {"name": "photometry", "modality": "photometry", "length": 3, "has_uncertainties": True},
            {"name": "light_curve", "modality": "time_series", "length": 5, "has_uncertainties": False, "coordinates": [0.0, 0.1, 0.2, 0.4, 0.8]},
            {"name": "context", "modality": "auxiliary", "length": 2, "has_uncertainties": False},
        ],
        "noise_model": {"mode": "observational", "parameters": {"scale": 1.0}, "seed": None},
    }


def random_chunk(rng: np.random.Generator, n: int, payload: dict, mask_blocks=()) -> tuple[np.ndarray, dict]:
    """Random rows matching ``payload`` (positive uncertainties; masks with some False)."""
    params = rng.normal(size=(n, len(payload["parameters"])))
    blocks = {}
    for b in payload["blocks"]:
        entry = {"values": rng.normal(size=(n, b["length"]))}
        if b["has_uncertainties"]:
            entry["uncertainties"] = rng.uniform(0.1, 1.0, size=(n, b["length"]))
        if b["name"] in mask_blocks:
            entry["mask"] = rng.uniform(size=(n, b["length"])) > 0.2
        blocks[b["name"]] = entry
    return params, blocks


class FakeTask:
    """Minimal task (contract duck type): 2 parameters, a 6-bin spectrum with errors, 1 aux."""

    name = "fake"
    version = "1"

    def to_payload(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "parameters": [
                {"name": "a", "unit": "", "prior": {"kind": "uniform", "low": 0.0, "high": 1.0}},
                {"name": "b", "unit": "", "prior": {"kind": "uniform", "low": -1.0, "high": 1.0}},
            ],
            "blocks": [
                {"name": "spectrum", "modality": "spectrum", "length": 6, "has_uncertainties": True, "coordinates": [1, 2, 3, 4, 5, 6]},
                {"name": "aux", "modality": "auxiliary", "length": 1, "has_uncertainties": False},
            ],
            "noise_model": None,
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_payload(), sort_keys=True).encode()).hexdigest()

    def sample_prior(self, key, n):
        u = jax.random.uniform(key, (n, 2))
        return jnp.stack([u[:, 0], 2 * u[:, 1] - 1], axis=1)

    def simulate(self, key, theta):
        n = theta.shape[0]
        values = theta[:, :1] * jnp.arange(6.0) + theta[:, 1:] + 0.1 * jax.random.normal(key, (n, 6))
        return {"spectrum": {"values": values, "uncertainties": jnp.full((n, 6), 0.1)}, "aux": {"values": theta[:, 1:] ** 2}}
