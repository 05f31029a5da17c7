"""Fixtures of the flows tests: one session-scoped Prefect test harness, tiny stores and configs."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest

#: A network small enough to train in seconds (2 epochs): tests check plumbing, not accuracy.
TINY_CONFIG = {"flow_family": "affine", "embedding_dim": 8, "hidden_dim": 8, "num_coupling_layers": 2,
               "photometry_embedding_dim": 8, "num_epochs": 2, "batch_size": 64,
               "early_stopping_patience": None}
#: Calibration on 20 observations is noisy; the integration tests only need the gate to run.
LOOSE_DIAGNOSTICS = {"num_observations": 20, "num_samples": 50,
                     "thresholds": {"max_calibration_error_excess": 1.0, "sbc_alpha": 0.0,
                                    "tarp_alpha": 0.0, "max_abs_tarp_atc": 1.0}}


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sqlalchemy\..*")
    warnings.filterwarnings("ignore", message=r".*type hint.*", category=UserWarning)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """Prefect's test harness with its own PREFECT_HOME (results, cache records, the API DB)."""
    home = tmp_path_factory.mktemp("prefect-home")
    saved = {k: os.environ.get(k) for k in ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH")}
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(home / "storage")
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    _quiet()
    try:
        with temporary_settings({PREFECT_HOME: str(home), PREFECT_LOCAL_STORAGE_PATH: str(home / "storage")}):
            # 2 shared cores: the temporary server needs far more than the default 30 s to start.
            with prefect_test_harness(server_startup_timeout=240):
                yield home
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """A 300-sample gaussian_linear store (numpy-simulated: no simulator compile)."""
    from tests.sbi_core.posterior_helpers import gaussian_linear_store

    return Path(gaussian_linear_store(tmp_path_factory.mktemp("stores") / "gl.zarr", n=300).path)


@pytest.fixture(scope="session")
def broken_store(tiny_store, tmp_path_factory) -> Path:
    """The tiny store with a NaN observation (validation must refuse it)."""
    import numpy as np

    from tests.validation.mutations import set_value

    path = tmp_path_factory.mktemp("broken") / "broken.zarr"
    shutil.copytree(tiny_store, path)
    set_value("blocks/x/values", (5, 0), np.nan)(path)
    return path


MODEL = "tiny-gl"


def retrain_options(store: Path, data: Path, **overrides):
    """``RetrainOptions`` of the tiny test model (overrides win)."""
    from flows.options import RetrainOptions

    fields = {"store": store, "data_dir": data, "model_name": MODEL, "estimator_config": TINY_CONFIG,
              "diagnostics": LOOSE_DIAGNOSTICS}
    fields.update(overrides)
    return RetrainOptions(**fields)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The project data folder of the integration tests (MLflow DB, artifacts, models)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def first_run(prefect_harness, tiny_store, data_dir):
    """One real retrain of the tiny model (trains once per session; later runs hit the cache)."""
    from flows.retrain import retrain

    return retrain(retrain_options(tiny_store, data_dir))


@pytest.fixture(scope="session")
def service(data_dir):
    """The MLflow service of ``data_dir``."""
    from flows.tracking import MlflowService

    return MlflowService.create(None, data_dir, "sbi-ops-retrain")
