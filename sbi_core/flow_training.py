"""Training plumbing of the conditional-flow posterior: data preparation, standardisation,
trainer adapters, the stability gate and diagnostic plots.

The fast path: when a split fits in memory it is read once, mapped to flow space and
preprocessed once, and handed to :class:`sbi_core.training.SBITrainer` as ``InMemoryData`` so a
whole epoch runs inside one compiled ``lax.scan``. Larger splits stream (``StreamingData``) with
the same ``prepare`` function applied per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.batch import PosteriorBatch
from sbi_core.flow_losses import stability_diagnostics
from sbi_core.training import InMemoryData, StreamingData

__all__ = [
    "make_prepare",
    "standardization_from",
    "build_data",
    "typical_uncertainties",
    "trainer_loss",
    "trainer_eval",
    "make_diagnostics_fn",
    "DiagnosticsPlotter",
]

DIAGNOSTIC_ROWS = 256
DIAGNOSTIC_DRAWS = 8
_STD_FLOOR = 1e-6


def make_prepare(transform: Any, flow_space: str, preprocessor: Any | None) -> Callable:
    """Raw ``(physical parameters, observations)`` -> ``(flow-space float32, observations)``.

    ``preprocessor=None`` keeps raw observations (the ELBO objective preprocesses in-graph so its
    likelihood sees raw data).
    """

    def prepare(parameters: np.ndarray, observations: Any) -> tuple[np.ndarray, Any]:
        x = np.asarray(parameters, np.float64)
        if flow_space != "physical":
            if transform is None:
                raise ValueError(
                    "the store has no parameter priors, so parameters cannot be mapped to "
                    f"{flow_space!r} space; use parameter_space='physical'"
                )
            x = np.asarray(transform.transform(x, "physical", flow_space), np.float64)
        obs = observations if preprocessor is None else preprocessor.apply(observations)
        obs = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a), obs)
        return x.astype(np.float32), obs

    return prepare


def standardization_from(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-dimension mean and std (floored) of flow-space training targets, as float tuples."""
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{bad} training parameter row(s) are non-finite in flow space (outside the prior support?)")
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), _STD_FLOOR)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _streamed_flow_targets(dataset: Any, prepare: Callable) -> np.ndarray:
    parts = []
    for _, params, obs in dataset.iter_chunks("train"):
        parts.append(prepare(params, obs)[0])
    return np.concatenate(parts)


def build_data(dataset: Any, prepare: Callable) -> tuple[Any, Any, np.ndarray, dict[str, Any]]:
    """Train/validation data sources plus the flow-space training targets.

    Returns:
        ``(train_data, validation_data, train_targets, info)`` where ``info`` records the path
        taken (``in_memory``) and the split sizes.
    """
    fits = getattr(dataset, "fits_in_memory", lambda split: True)
    info: dict[str, Any] = {}
    if fits("train"):
        train = InMemoryData.from_store(dataset, "train", prepare)
        targets = np.asarray(train.parameters)
        info["in_memory"] = True
    else:
        train = StreamingData(dataset, "train", prepare)
        targets = _streamed_flow_targets(dataset, prepare)
        info["in_memory"] = False
    validation = (InMemoryData.from_store(dataset, "validation", prepare) if fits("validation")
                  else StreamingData(dataset, "validation", prepare))
    info["num_train"] = int(targets.shape[0])
    info["num_validation"] = (validation.num_samples if isinstance(validation, InMemoryData)
                              else len(dataset.split_indices("validation")))
    return train, validation, targets, info


def typical_uncertainties(train: Any) -> dict[str, float] | None:
    """Median preprocessed uncertainty per block (in-memory data only; else None)."""
    if not isinstance(train, InMemoryData):
        return None
    obs = train.observations
    return {name: float(np.median(np.asarray(u))) for name, u in obs.uncertainties.items()}


def trainer_loss(loss: Callable, preprocessor: Any | None = None) -> Callable:
    """Adapt ``loss(model, PosteriorBatch)`` to the trainer's ``(model, params, obs, key)``.

    With a ``preprocessor`` the observations arrive raw: they are preprocessed in-graph and the
    raw ones are passed on as ``metadata['raw_observations']`` (ELBO likelihoods need them).
    """

    def adapted(model, parameters, observations, key):
        meta = {"key": key}
        if preprocessor is not None:
            meta["raw_observations"] = observations
            observations = preprocessor.apply(observations)
        return loss(model, PosteriorBatch(parameters, observations, meta))

    return adapted


def trainer_eval(loss: Callable, preprocessor: Any | None = None) -> Callable:
    """Adapt an evaluation ``loss(model, PosteriorBatch)`` to ``(model, params, obs)``."""
    adapted = trainer_loss(loss, preprocessor)
    return lambda model, parameters, observations: adapted(model, parameters, observations, jax.random.PRNGKey(0))


LOW_OPTIMIZATION_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class LowOptimizationJit:
    """Like ``eqx.filter_jit`` but compiled without XLA's expensive passes, once per structure.

    For small kernels that run a few times per fit (the per-epoch stability diagnostics): they
    compile ~2x faster and run a little slower, which is a net win at tens of epochs.
    """

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self._cache: dict[Any, Any] = {}

    def __call__(self, *args: Any) -> Any:
        dynamic, static = eqx.partition(args, eqx.is_array)
        leaves, dyn_def = jax.tree_util.tree_flatten(dynamic)
        static_leaves, static_def = jax.tree_util.tree_flatten(static)
        key = (dyn_def, static_def, tuple(static_leaves), tuple((leaf.shape, leaf.dtype) for leaf in leaves))
        compiled = self._cache.get(key)
        if compiled is None:
            lowered = jax.jit(lambda d: self.fn(*eqx.combine(d, static))).lower(dynamic)
            try:
                compiled = lowered.compile(compiler_options=LOW_OPTIMIZATION_COMPILER_OPTIONS)
            except Exception:  # noqa: BLE001 - backend without these options
                compiled = lowered.compile()
            self._cache[key] = compiled
        return compiled(dynamic)


_diagnostics_kernel = LowOptimizationJit(stability_diagnostics)


def make_diagnostics_fn(seed: int, preprocessor: Any | None = None) -> Callable:
    """Validation diagnostics for the trainer: first :data:`DIAGNOSTIC_ROWS` rows, jitted once."""
    key = jax.random.PRNGKey(seed + 1)

    def diagnostics(model, parameters, observations) -> dict[str, float]:
        n = min(DIAGNOSTIC_ROWS, int(np.shape(parameters)[0]))
        obs = jax.tree_util.tree_map(lambda a: a[:n], observations)
        if preprocessor is not None:
            obs = preprocessor.apply(obs)
        values = _diagnostics_kernel(model, jnp.asarray(parameters[:n]), obs, key, DIAGNOSTIC_DRAWS)
        return {k: float(v) for k, v in values.items()}

    return diagnostics


class DiagnosticsPlotter:
    """Epoch callback writing loss and stability plots every ``interval`` epochs."""

    def __init__(self, directory: str, interval: int, thresholds: Mapping[str, float | None]) -> None:
        self.directory = Path(directory)
        self.interval = interval
        self.thresholds = dict(thresholds)
        self.history: dict[str, list[float]] = {}

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))
        if epoch % self.interval == 0:
            self.plot(epoch)

    def plot(self, epoch: int) -> Path:
        """Write ``epoch_XXXX.png`` (losses and stability diagnostics vs epoch)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.directory.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        epochs = self.history.get("epoch", list(range(1, epoch + 1)))
        for key in ("train_loss", "validation_loss"):
            if key in self.history:
                axes[0].plot(epochs, self.history[key], label=key)
        axes[0].set(xlabel="epoch", ylabel="loss", title="losses")
        axes[0].legend()
        for key, threshold in self.thresholds.items():
            if key in self.history:
                line = axes[1].semilogy(epochs, np.maximum(self.history[key], 1e-12), label=key)[0]
                if threshold:
                    axes[1].axhline(threshold, color=line.get_color(), linestyle="--")
        axes[1].set(xlabel="epoch", title="stability diagnostics (dashed: thresholds)")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        path = self.directory / f"epoch_{epoch:04d}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path


def timed(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Run ``fn`` and return ``(result, seconds)``."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
