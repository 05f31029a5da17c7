"""``ConditionalFlowPosterior.fit``: from a simulation store to a trained, gated model.

Steps: cache the store's task/schema/priors; fit the observation preprocessing on the train
split (per-sample level centring of spectrum blocks by default, see :mod:`sbi_core.preprocessing`);
map parameters to flow space and fit its standardisation on the train split; build the model for
the store's schema plus the preprocessing's derived level blocks; compose the loss (NPE NLL, observation noise, target jitter,
auxiliary and spline terms, or the ELBO); train with :class:`~sbi_core.training.SBITrainer`
(in-memory compiled epochs when the split fits) with the stability gate as ``checkpoint_gate``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sbi_core.configs import with_parameter_average
from sbi_core.flow_training import (
    DiagnosticsPlotter,
    build_data,
    make_diagnostics_fn,
    make_prepare,
    standardization_from,
    trainer_eval,
    trainer_loss,
    typical_uncertainties,
)
from sbi_core.flow_posterior import precompile_initialiser
from sbi_core.posterior_base import TrainingArtifacts
from sbi_core.preprocessing import ObservationPreprocessor, default_center_blocks, network_schema
from sbi_core.training import SBITrainer
from sbi_core.training.xla_options import legacy_fusion_options

__all__ = ["LEGACY_FUSION_FAMILIES", "run_fit", "training_compiler_options"]


def _check_elbo_arguments(posterior: Any, fn: Callable | None, num_samples: int) -> None:
    objective = posterior.configs.training_objective
    if objective == "elbo" and fn is None:
        raise ValueError("training_objective='elbo' needs fit(dataset, elbo_log_likelihood_fn=...)")
    if objective != "elbo" and fn is not None:
        raise ValueError(f"elbo_log_likelihood_fn only applies to training_objective='elbo' (got {objective!r})")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"elbo_num_samples must be an integer >= 1, got {num_samples!r}")


def _losses(posterior: Any, train: Any, preprocessor: Any, elbo_fn: Callable | None, elbo_samples: int):
    """Return ``(train_loss, eval_loss, in_graph_preprocessor)`` for the trainer."""
    cls = type(posterior)
    reg = posterior.configs.regularization
    if elbo_fn is not None:
        loss = cls._make_elbo_loss(elbo_fn, "cube", num_samples=elbo_samples)
        return trainer_loss(loss, preprocessor), trainer_eval(loss, preprocessor), preprocessor
    flow_space = posterior.flow_space
    typical = typical_uncertainties(train)
    base = cls._make_noisy_loss(
        reg.embedding_noise_std, None if typical is None else {"typical_uncertainty": typical},
        noise_min_scale=reg.embedding_noise_min_scale, include_spline_regularization=True)
    if reg.parameter_noise_floor > 0:
        base = cls._make_parameter_noise_loss(base, reg.parameter_noise_floor, flow_space)
    return trainer_loss(base), trainer_eval(cls._loss), None


def _artifacts(result: Any, info: dict[str, Any], wall: float, diagnostics: dict[str, float]) -> TrainingArtifacts:
    metrics = {"validation_loss": result.best_validation_loss, "best_epoch": result.best_epoch,
               "gate_passed": bool(result.gate_passed), **diagnostics}
    metadata = {
        **info, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early, "resumed_from_epoch": result.resumed_from_epoch,
        "skipped_nonfinite_steps": result.skipped_nonfinite_steps, "gate_passed": bool(result.gate_passed),
        "steps_per_epoch": result.steps_per_epoch, "checkpoint_backend": result.checkpoint_backend,
        "training_time_s": wall,
    }
    history = {k: [float(v) for v in values] for k, values in result.history.items()}
    return TrainingArtifacts(history=history, validation_metrics=metrics, metadata=metadata)


#: Flow families whose training kernels compile with XLA:CPU's legacy fusion emitter
#: (:mod:`sbi_core.training.xla_options`). Measured on the two_moons bench models (2 cores), the
#: spline flow's epochs ran 0.141 -> 0.114-0.121 s with it; the affine, autoregressive and
#: neural-autoregressive flows' ran 3-10% slower, which a fit of 100+ epochs does not win back
#: from their ~0.7-0.9 s faster compile.
LEGACY_FUSION_FAMILIES = frozenset({"spline"})


def training_compiler_options(flow_family: str) -> dict[str, Any]:
    """XLA compiler options for the training kernels of a ``flow_family`` flow (may be empty)."""
    return legacy_fusion_options() if flow_family in LEGACY_FUSION_FAMILIES else {}


def run_fit(posterior: Any, dataset: Any, elbo_fn: Callable | None, elbo_samples: int,
            center_spectrum_levels: bool = True, parameter_average_decay: float | None = None
            ) -> TrainingArtifacts:
    """Train ``posterior`` on ``dataset``; see the module docstring."""
    start = time.perf_counter()
    optimization = with_parameter_average(posterior.configs.optimization, parameter_average_decay)
    _check_elbo_arguments(posterior, elbo_fn, elbo_samples)
    posterior._cache_dataset_metadata(dataset)
    schema = posterior._encoding_schema()
    # Level centring of spectrum blocks (on by default): the network also sees the derived
    # "<block>.level" blocks, known from the schema before the statistics are fitted.
    center = default_center_blocks(schema) if center_spectrum_levels else ()
    # The model initialiser compiles (seconds) while the data are read and prepared.
    init_compile = precompile_initialiser(posterior, network_schema(schema, center))
    preprocessor = ObservationPreprocessor.fit(dataset, "train", center_blocks=center)
    posterior.preprocessing_metadata_payload = preprocessor.to_payload()
    posterior._preprocessor = preprocessor
    in_graph = elbo_fn is not None
    prepare = make_prepare(posterior.parameter_transform, posterior.flow_space, None if in_graph else preprocessor)
    train, validation, targets, info = build_data(dataset, prepare)
    posterior._standardization = standardization_from(targets)
    init_compile.join()
    model = posterior._build_model(posterior._encoding_schema())
    train_loss, eval_loss, graph_pre = _losses(posterior, train, preprocessor, elbo_fn, elbo_samples)
    cfg = posterior.configs
    options = training_compiler_options(cfg.flow.family)
    diagnostics = make_diagnostics_fn(posterior.seed, graph_pre, expected_calls=optimization.num_epochs,
                                      compiler_options=options)
    callback = None
    if cfg.diagnostics.verbose_diagnostics:
        callback = DiagnosticsPlotter(cfg.diagnostics.diagnostics_output_directory,
                                      cfg.diagnostics.diagnostics_plot_interval, cfg.stability.thresholds())
    # The stability gate only matters on epochs that improve the validation loss; diagnostics run
    # there (every epoch when plots are asked for). See SBITrainer(diagnostics_epochs=...).
    trainer = SBITrainer(optimization, cfg.early_stopping, cfg.checkpoint, seed=posterior.seed,
                         progress=True, diagnostics_epochs="every" if callback is not None else "candidates",
                         compiler_options=options)
    result = trainer.fit(model, train_loss=train_loss, eval_loss=eval_loss, train_data=train,
                         validation_data=validation, validation_diagnostics=diagnostics,
                         checkpoint_gate=cfg.stability.passes, epoch_callback=callback)
    posterior.model = result.model
    final = _final_diagnostics(result)
    info = {**info, "parameter_average_decay": parameter_average_decay}
    posterior.training_artifacts = _artifacts(result, info, time.perf_counter() - start, final)
    return posterior.training_artifacts


def _final_diagnostics(result: Any) -> dict[str, float]:
    """Diagnostics of the selected epoch, read from the history."""
    epoch_index = result.best_epoch - 1 - (result.history.get("epoch", [1.0])[0] - 1)
    out = {}
    for key in ("inverse_forward_max_abs_error", "logdet_closure_max_abs_error", "cube_edge_hit_rate"):
        values = result.history.get(key)
        if values and 0 <= epoch_index < len(values):
            value = float(values[int(epoch_index)])
            out[key] = value if np.isfinite(value) else None
    return out
