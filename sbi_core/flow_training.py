"""Training plumbing of the conditional-flow posterior: trainer adapters, the stability gate
and diagnostic plots.

Data preparation and the target standardisation are shared with the flow-matching posterior and
live in :mod:`sbi_core.posterior_data` (re-exported here: ``make_prepare``, ``build_data``,
``standardization_from``).
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
from sbi_core.posterior_data import build_data, make_prepare, standardization_from
from sbi_core.training import InMemoryData

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
    ``compiler_options`` are added to :data:`LOW_OPTIMIZATION_COMPILER_OPTIONS`.
    """

    def __init__(self, fn: Callable, compiler_options: Mapping[str, Any] | None = None) -> None:
        self.fn = fn
        self.compiler_options = {**LOW_OPTIMIZATION_COMPILER_OPTIONS, **(compiler_options or {})}
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
                compiled = lowered.compile(compiler_options=self.compiler_options)
            except Exception:  # noqa: BLE001 - backend without these options
                compiled = lowered.compile()
            self._cache[key] = compiled
        return compiled(dynamic)


#: From this many expected calls on, the diagnostics compile with full optimisation. Measured on
#: the two_moons bench model (2 cores): low optimisation compiles in 0.9 s and runs in 18 ms, full
#: optimisation in 1.4 s and 6 ms, so full pays off after ~40 calls (a fit calls it on every
#: epoch that improves the validation loss: nearly every epoch with a weight average).
FULL_OPTIMIZATION_FROM_CALLS = 50

# One kernel per (optimisation, compiler options): shared across fits, so each compiles once.
_DIAGNOSTICS_KERNELS: dict[tuple, Callable] = {}


def _diagnostics_kernel(full_optimization: bool, compiler_options: Mapping[str, Any]) -> Callable:
    key = (full_optimization, tuple(sorted(compiler_options.items())))
    kernel = _DIAGNOSTICS_KERNELS.get(key)
    if kernel is None:
        if full_optimization:
            kernel = eqx.filter_jit(stability_diagnostics, compiler_options=dict(compiler_options) or None)
        else:
            kernel = LowOptimizationJit(stability_diagnostics, compiler_options)
        kernel = _DIAGNOSTICS_KERNELS.setdefault(key, kernel)
    return kernel


def make_diagnostics_fn(seed: int, preprocessor: Any | None = None, expected_calls: int = 0,
                        compiler_options: Mapping[str, Any] | None = None) -> Callable:
    """Validation diagnostics for the trainer: first :data:`DIAGNOSTIC_ROWS` rows, jitted once.

    ``expected_calls`` (e.g. the epoch budget) picks the kernel's compilation: cheap to compile
    for short fits, fast to run for long ones (:data:`FULL_OPTIMIZATION_FROM_CALLS`).
    ``compiler_options``: XLA options added to either (those of the fit's training kernels).
    """
    key = jax.random.PRNGKey(seed + 1)
    kernel = _diagnostics_kernel(expected_calls >= FULL_OPTIMIZATION_FROM_CALLS, compiler_options or {})

    def diagnostics(model, parameters, observations) -> dict[str, float]:
        n = min(DIAGNOSTIC_ROWS, int(np.shape(parameters)[0]))
        obs = jax.tree_util.tree_map(lambda a: a[:n], observations)
        if preprocessor is not None:
            obs = preprocessor.apply(obs)
        values = kernel(model, jnp.asarray(parameters[:n]), obs, key, DIAGNOSTIC_DRAWS)
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
        """Write ``epoch_<epoch, 4 digits>.png`` (losses and stability diagnostics vs epoch)."""
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
