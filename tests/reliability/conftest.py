"""Session fixtures shared by the reliability tests (built once: the CPU is shared)."""

from __future__ import annotations

import pytest

from tests.reliability.models import untrained_posterior
from tests.sbi_core.posterior_helpers import gaussian_linear_store


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory) -> dict:
    """A gaussian_linear store and two saved posteriors ``A`` (seed 0) and ``B`` (seed 1)."""
    base = tmp_path_factory.mktemp("saved-models")
    store = gaussian_linear_store(base / "gl.zarr", n=64)
    out = {"base": base, "store": store}
    for name, seed in (("A", 0), ("B", 1)):
        posterior = untrained_posterior(store, seed=seed)
        posterior.save(str(base / name))
        out[name] = base / name
        out[f"{name}_posterior"] = posterior
    return out
