"""A small valid store written with plain zarr (no simulator), and helpers to break it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

N_SAMPLES = 64
CHUNK = 32
SPECTRUM_LENGTH = 16
PHOTOMETRY_LENGTH = 4


def manifest(n_samples: int = N_SAMPLES) -> dict[str, Any]:
    """The manifest of the reference store."""
    return {
        "format_version": "1.0",
        "task": {"name": "toy_transmission", "version": "0.1"},
        "parameters": [
            {"name": "temperature", "unit": "K",
             "prior": {"kind": "uniform", "low": 500.0, "high": 2500.0}},
            {"name": "log_metallicity", "unit": "dex",
             "prior": {"kind": "normal", "loc": 0.0, "scale": 1.0}},
            {"name": "radius", "unit": "R_jup",
             "prior": {"kind": "log_uniform", "low": 0.5, "high": 2.0}},
        ],
        "blocks": [
            {"name": "spectrum", "modality": "spectrum", "length": SPECTRUM_LENGTH,
             "has_uncertainties": True,
             "constraint": {"min_value": 0.0, "max_value": 1.0, "min_inclusive": True,
                            "max_inclusive": True}},
            {"name": "photometry", "modality": "photometry", "length": PHOTOMETRY_LENGTH,
             "has_uncertainties": False},
        ],
        "noise_model": {"mode": "observational", "parameters": {}, "seed": 0},
        "n_samples": n_samples,
    }


def sample_parameters(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draws from the manifest's priors, float32 (n, 3)."""
    return np.stack([
        rng.uniform(500.0, 2500.0, n),
        rng.normal(0.0, 1.0, n),
        np.exp(rng.uniform(np.log(0.5), np.log(2.0), n)),
    ], axis=1).astype(np.float32)


def write_valid_store(path: Path, seed: int = 0, n: int = N_SAMPLES,
                      chunk: int = CHUNK) -> Path:
    """Write the reference store (directory) at ``path`` and return it."""
    rng = np.random.default_rng(seed)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["sbi_store"] = manifest(n)
    group.create_array("parameters", data=sample_parameters(rng, n), chunks=(chunk, 3))
    spec = group.require_group("blocks").require_group("spectrum")
    spec.create_array("values", data=rng.uniform(0.01, 0.99, (n, SPECTRUM_LENGTH)),
                      chunks=(chunk, SPECTRUM_LENGTH))
    spec.create_array("uncertainties", chunks=(chunk, SPECTRUM_LENGTH),
                      data=rng.uniform(0.01, 0.05, (n, SPECTRUM_LENGTH)).astype(np.float32))
    spec.create_array("coordinates", data=np.linspace(0.6, 5.0, SPECTRUM_LENGTH))
    spec.create_array("mask", data=np.ones((n, SPECTRUM_LENGTH), dtype=bool),
                      chunks=(chunk, SPECTRUM_LENGTH))
    phot = group["blocks"].require_group("photometry")
    phot.create_array("values", data=rng.normal(10.0, 1.0, (n, PHOTOMETRY_LENGTH)),
                      chunks=(chunk, PHOTOMETRY_LENGTH))
    splits = group.require_group("splits")
    order = np.arange(n, dtype=np.int64)
    n_train, n_val = int(0.75 * n), int(0.125 * n)
    splits.create_array("train", data=order[:n_train])
    splits.create_array("validation", data=order[n_train:n_train + n_val])
    splits.create_array("test", data=order[n_train + n_val:])
    return path


def tree_digest(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (or of ``path`` itself), plus its mtime."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path) if p != path else p.name):
            hashlib.sha256(p.read_bytes()).hexdigest() + f"@{os.stat(p).st_mtime_ns}"
            for p in files}
