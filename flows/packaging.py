"""Log or save a saved posterior directory as an MLflow pyfunc model (models from code).

The signature is explicit (MLflow cannot infer list-valued columns from a posterior): one
``Array(double)`` column per block and per uncertainty block, a ParamSchema with ``num_samples``
and ``seed``, and a ``double`` column per parameter plus ``observation_index`` on the output.
Pip requirements are explicit too: MLflow's inference misses jax and the other libraries the
posterior needs at load time.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from flows.pyfunc_io import BlockColumn, block_columns, example_frame

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
_RUNTIME_PACKAGES = ("jax", "jaxlib", "equinox", "optax", "numpy", "scipy", "pandas", "zarr",
                     "orbax-checkpoint", "jaxtyping", "pyyaml", "mlflow")


def pip_requirements() -> list[str]:
    """Pinned requirements of the serving environment (the installed versions)."""
    out = []
    for name in _RUNTIME_PACKAGES:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def load_columns(posterior_dir: str | Path) -> tuple[list[BlockColumn], tuple[str, ...]]:
    """Block columns and parameter names of a saved posterior (loaded with its checksums)."""
    from sbi_core.posterior_base import PersistentPosteriorEstimator
    from sbi_core.posterior_metadata import observation_schema_from_payload

    posterior = PersistentPosteriorEstimator.load(str(posterior_dir))
    schema = observation_schema_from_payload(posterior.observation_schema)
    return block_columns(schema), tuple(posterior.parameter_names)


def model_signature(columns: list[BlockColumn], parameter_names: tuple[str, ...]) -> Any:
    """The explicit ``ModelSignature`` (inputs, outputs, params)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    inputs = []
    for col in columns:
        inputs.append(ColSpec(Array(DataType.double), col.name))
        if col.has_uncertainties:
            inputs.append(ColSpec(Array(DataType.double), col.uncertainty_column))
    outputs = [ColSpec("double", name) for name in parameter_names] + [ColSpec("long", "observation_index")]
    # Defaults are None on purpose: the server fills in schema defaults before predict sees the
    # params, and the real defaults depend on the serving environment (min(1000, the cap); the
    # model's own seed).
    params = ParamSchema([ParamSpec("num_samples", "long", None), ParamSpec("seed", "long", None)])
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs), params=params)


def _model_kwargs(posterior_dir: Path) -> dict[str, Any]:
    columns, names = load_columns(posterior_dir)
    return {"python_model": str(MODEL_CODE), "artifacts": {"posterior": str(posterior_dir)},
            "signature": model_signature(columns, names), "input_example": example_frame(columns),
            "pip_requirements": pip_requirements()}


def log_pyfunc(posterior_dir: str | Path, name: str = "model",
               registered_model_name: str | None = None) -> Any:
    """Log the pyfunc model into the active run; returns MLflow's ``ModelInfo``."""
    import mlflow

    return mlflow.pyfunc.log_model(name=name, registered_model_name=registered_model_name,
                                   **_model_kwargs(Path(posterior_dir).resolve()))


def save_pyfunc(posterior_dir: str | Path, path: str | Path) -> Path:
    """Write the pyfunc model to ``path`` (a fresh directory) without any tracking server."""
    import mlflow

    mlflow.pyfunc.save_model(path=str(path), **_model_kwargs(Path(posterior_dir).resolve()))
    return Path(path)
