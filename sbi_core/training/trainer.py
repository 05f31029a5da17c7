"""``SBITrainer``: the generic training loop (any equinox model, any loss).

The loop is host-side and per *epoch*: the epoch itself is one compiled call (in-memory data) or a
stream of compiled steps (``StreamingData``), followed by one compiled validation pass. The host
syncs once per epoch (to read the losses), which is when early stopping, the checkpoint gate,
checkpoints, progress and callbacks happen.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import equinox as eqx
import jax
import numpy as np
from tqdm.auto import tqdm

from sbi_core.checkpoints import Checkpointer, CheckpointMismatchError
from sbi_core.configs import (
    CheckpointConfig,
    EarlyStoppingConfig,
    OptimizationConfig,
    check_positive_int,
    check_real,
)
from sbi_core.training import data_parallel as dp
from sbi_core.training.data import InMemoryData, StreamingData
from sbi_core.training.layout import assemble_compiled, layout_name, split_model
from sbi_core.training.optimizer import build_optimizer, learning_rates_at
from sbi_core.training.parameter_average import averaged_parameters
from sbi_core.training.state import (
    RunState,
    TrainingDivergedError,
    TrainingResult,
    all_finite,
)
from sbi_core.training.steps import EpochKernels, EvalFn, LossFn, StepCounters

LOGGER = logging.getLogger(__name__)
Diagnostics = Callable[[Any, Any, Any], Mapping[str, float]]
Gate = Callable[[Mapping[str, float]], bool]
EpochCallback = Callable[[int, Mapping[str, float]], None]


@dataclass(frozen=True)
class _Setup:
    """Per-fit constants: the model split, kernels, optimiser and data on device."""

    initial_params: Any
    static: Any
    kernels: EpochKernels
    optimizer: Any
    batch_size: int
    steps_per_epoch: int
    learning_rates: tuple[float, ...]
    train: tuple | StreamingData
    validation: tuple | StreamingData
    signature: dict
    mesh: Any = None  # a 1-D jax.sharding.Mesh when training data-parallel


@dataclass(frozen=True)
class _Hooks:
    diagnostics: Diagnostics | None
    gate: Gate | None
    callback: EpochCallback | None


class SBITrainer:
    """Train any equinox model with any loss, fast.

    Args:
        optimization: Optimiser, schedule, batch size and epoch budget.
        early_stopping: Patience and ``min_delta`` on the validation loss.
        checkpoint: Checkpoint directory, backend and resume flag.
        seed: Seeds shuffling and the per-step loss keys.
        progress: Show a tqdm progress bar over epochs.
        max_consecutive_nonfinite_steps: Stop with ``TrainingDivergedError`` when more
            consecutive optimiser steps than this are skipped as non-finite.
        max_nonfinite_fraction: ... or when more than this fraction of an epoch's steps is.
        eval_chunk_size: Samples per chunk of the compiled validation pass.
        data_parallel: ``True``: shard every batch across all JAX devices (weights replicated,
            see :mod:`sbi_core.training.data_parallel`); ``"auto"``: only when there are at
            least two devices; a 1-D ``jax.sharding.Mesh``: over its devices; ``False``
            (default): one device. The batch size must be a multiple of the device count.
        diagnostics_epochs: ``"every"`` (default): ``validation_diagnostics`` run after every
            epoch. ``"candidates"``: only after an epoch whose validation loss could make it the
            selected best (finite and below the best so far), the only epochs where
            ``checkpoint_gate`` decides anything; other epochs record NaN diagnostics and
            ``gate_passed``. The selected epoch, weights and losses are identical either way;
            the diagnostics' per-epoch cost is paid only on the improving epochs.
        overlap_compilation: Compile the validation pass (and the diagnostics) in a background
            thread while the first epoch compiles and runs (XLA compiles outside the GIL, so
            on two or more cores the compilations overlap). Results are unchanged.
        compiler_options: XLA compiler options for the epoch, step and validation kernels
            (e.g. :func:`sbi_core.training.xla_options.legacy_fusion_options`); default: XLA's.
            They change code generation, not the computation: values agree to float32 rounding.
    """

    def __init__(
        self,
        optimization: OptimizationConfig | None = None,
        early_stopping: EarlyStoppingConfig | None = None,
        checkpoint: CheckpointConfig | None = None,
        *,
        seed: int = 0,
        progress: bool = True,
        max_consecutive_nonfinite_steps: int = 25,
        max_nonfinite_fraction: float = 0.5,
        eval_chunk_size: int = 4096,
        data_parallel: dp.DataParallel | Any = False,
        diagnostics_epochs: str = "every",
        overlap_compilation: bool = True,
        compiler_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_positive_int("SBITrainer", "seed", seed, minimum=0)
        check_positive_int("SBITrainer", "max_consecutive_nonfinite_steps",
                           max_consecutive_nonfinite_steps, minimum=0)
        check_real("SBITrainer", "max_nonfinite_fraction", max_nonfinite_fraction, low=0.0, high=1.0)
        check_positive_int("SBITrainer", "eval_chunk_size", eval_chunk_size)
        self.optimization = optimization or OptimizationConfig()
        self.early_stopping = early_stopping or EarlyStoppingConfig()
        self.checkpoint = checkpoint or CheckpointConfig()
        self.seed = seed
        self.progress = progress
        self.max_consecutive_nonfinite_steps = max_consecutive_nonfinite_steps
        self.max_nonfinite_fraction = max_nonfinite_fraction
        self.eval_chunk_size = eval_chunk_size
        if not (isinstance(data_parallel, (bool, dp.Mesh)) or data_parallel == "auto"):
            raise ValueError(f"SBITrainer: data_parallel must be True, False, 'auto' or a jax.sharding.Mesh, got {data_parallel!r}")
        self.data_parallel = data_parallel
        if diagnostics_epochs not in ("every", "candidates"):
            raise ValueError(f"SBITrainer: diagnostics_epochs must be 'every' or 'candidates', got {diagnostics_epochs!r}")
        self.diagnostics_epochs = diagnostics_epochs
        self.overlap_compilation = bool(overlap_compilation)
        if compiler_options is not None and not isinstance(compiler_options, Mapping):
            raise ValueError(f"SBITrainer: compiler_options must be a mapping of XLA option names to values, got {compiler_options!r}")
        # Sorted items: hashable, so fits with the same options share compiled kernels.
        self.compiler_options = tuple(sorted((compiler_options or {}).items()))
        self._warmup: threading.Thread | None = None

    def fit(
        self,
        model: eqx.Module,
        *,
        train_loss: LossFn,
        eval_loss: EvalFn,
        train_data: InMemoryData | StreamingData,
        validation_data: InMemoryData | StreamingData,
        validation_diagnostics: Diagnostics | None = None,
        checkpoint_gate: Gate | None = None,
        epoch_callback: EpochCallback | None = None,
    ) -> TrainingResult:
        """Train ``model`` and return it with the best validation weights restored.

        Args:
            model: Any equinox module; its inexact arrays are trained, the rest is static.
            train_loss: ``train_loss(model, parameters (B, P), observations, key) -> scalar``.
            eval_loss: ``eval_loss(model, parameters, observations) -> mean over the batch``.
            train_data: ``InMemoryData`` (whole epochs compiled) or ``StreamingData``.
            validation_data: The validation split, either kind.
            validation_diagnostics: ``(model, parameters, observations) -> {name: float}``,
                computed each epoch on the validation split (its first batch when streamed) and
                merged into the history.
            checkpoint_gate: ``metrics -> bool``; only epochs it accepts can be selected as best.
            epoch_callback: ``(epoch, metrics)`` after every epoch (progress reporting hooks).

        Returns:
            The trained model and its history.

        Raises:
            TrainingDivergedError: Too many non-finite steps, or no finite weights to return.
            CheckpointMismatchError: Resuming from a checkpoint of a different model or run.
        """
        setup = self._setup(model, train_loss, eval_loss, train_data, validation_data)
        hooks = _Hooks(validation_diagnostics, checkpoint_gate, epoch_callback)
        checkpointer = Checkpointer(self.checkpoint) if self.checkpoint.enabled else None
        try:
            state, resumed_from = self._initial_state(setup, checkpointer)
            self._start_warmup(setup, hooks)
            self._run_epochs(setup, hooks, state, checkpointer)
        finally:
            self._join_warmup()
            if checkpointer is not None:
                checkpointer.close()
        return self._result(setup, state, resumed_from, hooks.gate is not None, checkpointer)

    # -- setup -------------------------------------------------------------------------------

    def _setup(self, model, train_loss, eval_loss, train_data, validation_data) -> _Setup:
        _check_data("train_data", train_data)
        _check_data("validation_data", validation_data)
        num_train = _num_samples(train_data)
        batch_size = min(self.optimization.batch_size, num_train)
        steps = num_train // batch_size
        if steps < 1:
            raise ValueError(
                f"train_data has {num_train} samples; at least one full batch is needed"
            )
        mesh = dp.resolve_mesh(self.data_parallel)
        if mesh is not None:
            dp.check_batch_size(mesh, batch_size)
        key = (train_loss, eval_loss, self.optimization, batch_size, steps, self.eval_chunk_size, mesh,
               self.compiler_options)
        try:
            hash(key)
        except TypeError:  # e.g. a loss that is an equinox Module holding arrays: not cacheable
            kernels, optimizer, learning_rates = _compiled_kernels.__wrapped__(*key)
        else:
            kernels, optimizer, learning_rates = _compiled_kernels(*key)
        initial_params, static = split_model(model)
        if mesh is not None:
            initial_params = dp.replicate(initial_params, mesh)
        return _Setup(
            initial_params=initial_params, static=static, kernels=kernels, optimizer=optimizer,
            batch_size=batch_size, steps_per_epoch=steps, learning_rates=learning_rates,
            train=_to_device(train_data, mesh), validation=_to_device(validation_data, mesh),
            signature=self._signature(batch_size, steps, layout_name(static)), mesh=mesh,
        )

    def _signature(self, batch_size: int, steps: int, layout: str) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this trainer."""
        optimization = asdict(self.optimization)
        if optimization["parameter_average_decay"] is None:
            # Absent when off: checkpoints written before the option existed still resume.
            del optimization["parameter_average_decay"]
        return {
            "optimization": optimization,
            "early_stopping": asdict(self.early_stopping),
            "seed": self.seed,
            "batch_size": batch_size,
            "steps_per_epoch": steps,
            "weights_layout": layout,
        }

    def _initial_state(self, setup: _Setup, checkpointer) -> tuple[RunState, int | None]:
        # A copy: the first epoch donates these buffers, which must not invalidate the caller's model.
        params, opt_state = setup.kernels.init(setup.initial_params)
        fresh = RunState(params=params, opt_state=opt_state, key=jax.random.key(self.seed))
        if checkpointer is None or not self.checkpoint.resume:
            return fresh, None
        restored = checkpointer.restore_latest(fresh.templates())
        if restored is None:
            LOGGER.info("no checkpoint in %s; starting a fresh run", self.checkpoint.directory)
            return fresh, None
        state = RunState.from_checkpoint(*restored)
        _check_signature(restored[1]["signature"], setup.signature, self.checkpoint.directory)
        LOGGER.info("resuming from epoch %d (%s)", state.epoch, self.checkpoint.directory)
        return state, state.epoch

    def _start_warmup(self, setup: _Setup, hooks: _Hooks) -> None:
        """Compile the validation pass and diagnostics while the first epoch compiles.

        The warm-up runs them once on the initial weights (``setup.initial_params``, never
        donated) and discards the values; it only fills the jit caches. Any error is ignored
        here: the same call in the loop raises it properly.
        """
        self._warmup = None
        if not self.overlap_compilation or isinstance(setup.validation, StreamingData):
            return

        def warm() -> None:
            try:
                # A strongly typed copy, as the loop's weights are after the first epoch.
                params = setup.kernels.copy(setup.initial_params)
                jax.block_until_ready(setup.kernels.evaluate((setup.validation, setup.static), params))
                if hooks.diagnostics is not None:
                    model = assemble_compiled(params, setup.static)
                    hooks.diagnostics(model, setup.validation[0], setup.validation[1])
            except Exception:  # noqa: BLE001 - re-raised by the real call in the loop
                LOGGER.debug("compilation warm-up failed", exc_info=True)

        self._warmup = threading.Thread(target=warm, daemon=True, name="sbi-compile-warmup")
        self._warmup.start()

    def _join_warmup(self) -> None:
        # Before the loop's own first validation call: two threads compiling the same function
        # at once would compile it twice.
        if self._warmup is not None:
            self._warmup.join()
            self._warmup = None

    # -- the loop ----------------------------------------------------------------------------

    def _run_epochs(self, setup: _Setup, hooks: _Hooks, state: RunState, checkpointer) -> None:
        total = self.optimization.num_epochs
        bar = tqdm(total=total, initial=state.epoch, disable=not self.progress,
                   desc="training", unit="epoch", leave=False)
        try:
            while not state.finished and state.epoch < total:
                metrics = self._one_epoch(setup, hooks, state)
                state.finished = state.stopped_early or state.epoch >= total
                if checkpointer is not None and self._save_due(state):
                    checkpointer.save(state.checkpoint_groups(),
                                      state.checkpoint_metadata(setup.signature))
                _report(bar, metrics, state)
                if hooks.callback is not None:
                    hooks.callback(state.epoch, dict(metrics))
        finally:
            bar.close()

    def _save_due(self, state: RunState) -> bool:
        return state.finished or state.epoch % self.checkpoint.save_interval_epochs == 0

    def _one_epoch(self, setup: _Setup, hooks: _Hooks, state: RunState) -> dict[str, float]:
        start = time.perf_counter()
        state.key, epoch_key = jax.random.split(state.key)
        learning_rate = setup.learning_rates[state.epoch]
        train_loss, counters = self._train_pass(setup, state, epoch_key)
        self._join_warmup()
        # With a weight average (OptimizationConfig.parameter_average_decay) the averaged weights
        # are what is validated, gated, selected and returned; the optimiser steps the raw ones.
        candidate = averaged_parameters(state.opt_state, state.params)
        validation_loss = self._validation_pass(setup, candidate)
        state.epoch += 1
        skipped = int(counters.skipped)
        state.consecutive_nonfinite = int(counters.consecutive)
        state.skipped_total += skipped
        self._check_divergence(state, int(counters.max_consecutive), skipped, setup.steps_per_epoch)
        if self._diagnostics_due(state, validation_loss):
            diagnostics = self._diagnostics(setup, hooks, candidate)
            metrics = {"validation_loss": validation_loss, **diagnostics}
            eligible = bool(hooks.gate(dict(metrics))) if hooks.gate is not None else True
            gate_value = float(eligible)
        else:
            # Not a candidate for the best epoch: the gate cannot change the selection.
            metrics = {"validation_loss": validation_loss}
            eligible, gate_value = False, math.nan
        self._select(setup, state, candidate, validation_loss, eligible, keep_fallback=hooks.gate is not None)
        metrics |= {
            "epoch": float(state.epoch), "train_loss": train_loss, "learning_rate": learning_rate,
            "epoch_time_s": time.perf_counter() - start, "skipped_nonfinite_steps": float(skipped),
            "gate_passed": gate_value, "best_validation_loss": state.stopping.best_loss,
        }
        state.append_history({k: v for k, v in metrics.items() if k != "best_validation_loss"})
        return metrics

    def _train_pass(self, setup: _Setup, state: RunState, key) -> tuple[float, StepCounters]:
        counters = StepCounters.zeros(state.consecutive_nonfinite)
        if isinstance(setup.train, StreamingData):
            return self._stream_train_pass(setup, state, counters, key)
        state.params, state.opt_state, counters, loss = setup.kernels.epoch(
            (setup.train, setup.static), state.params, state.opt_state, counters, key
        )
        return float(loss), counters

    def _stream_train_pass(self, setup, state, counters, key) -> tuple[float, StepCounters]:
        shuffle_key, step_key = jax.random.split(key)
        seed = int(jax.random.randint(shuffle_key, (), 0, np.iinfo(np.int32).max))
        place = None if setup.mesh is None else functools.partial(dp.put_global_batch, mesh=setup.mesh)
        batches = setup.train.batches(setup.batch_size, shuffle=True, seed=seed, drop_last=True,
                                      place=place)
        total, applied = 0.0, 0
        for i, batch in enumerate(batches):
            state.params, state.opt_state, counters, loss, ok = setup.kernels.step(
                (batch, setup.static), state.params, state.opt_state, counters,
                jax.random.fold_in(step_key, i),
            )
            # Summed on the device; reading them back once per epoch avoids per-step syncs.
            total, applied = total + loss, applied + ok
        applied = int(applied)
        return (float(total) / applied if applied else math.nan), counters

    def _validation_pass(self, setup: _Setup, params) -> float:
        if not isinstance(setup.validation, StreamingData):
            return float(setup.kernels.evaluate((setup.validation, setup.static), params))
        total, count = 0.0, 0
        place = None if setup.mesh is None else functools.partial(dp.replicate, mesh=setup.mesh)
        batches = setup.validation.batches(self.eval_chunk_size, shuffle=False, seed=0,
                                           drop_last=False, place=place)
        for batch in batches:
            size = int(np.shape(batch[0])[0])
            total = total + setup.kernels.evaluate_batch(setup.static, params, batch) * size
            count += size
        return float(total) / count if count else math.nan

    def _diagnostics_due(self, state: RunState, validation_loss: float) -> bool:
        """Whether this epoch's diagnostics (and gate) must run (see ``diagnostics_epochs``)."""
        if self.diagnostics_epochs == "every":
            return True
        # Exactly the condition under which EarlyStoppingState.update can select the epoch.
        # Before any diagnostics ran (e.g. a non-finite first loss) they run anyway, so the
        # history's diagnostic columns exist from the first epoch on.
        known = any(key not in _CORE_HISTORY_KEYS for key in state.history)
        candidate = math.isfinite(validation_loss) and validation_loss < state.stopping.best_loss
        return candidate or not known

    def _diagnostics(self, setup: _Setup, hooks: _Hooks, params) -> dict[str, float]:
        if hooks.diagnostics is None:
            return {}
        data = setup.validation
        if isinstance(data, StreamingData):
            data = next(iter(data.batches(self.eval_chunk_size, shuffle=False, seed=0,
                                          drop_last=False, prefetch=0)))
        model = assemble_compiled(params, setup.static)
        values = hooks.diagnostics(model, data[0], data[1])
        return {str(name): float(value) for name, value in values.items()}

    def _select(self, setup, state: RunState, candidate, loss: float, eligible: bool, keep_fallback: bool):
        new_best, new_fallback = state.stopping.update(state.epoch, loss, eligible,
                                                       self.early_stopping)
        # A copy: the next epoch donates (reuses) the buffers of params and opt_state.
        if new_best:
            state.best_params = setup.kernels.copy(candidate)
        if new_fallback and keep_fallback:
            state.fallback_params = setup.kernels.copy(candidate)
        state.stopped_early = state.stopping.should_stop(self.early_stopping) and (
            state.epoch < self.optimization.num_epochs
        )

    def _check_divergence(self, state: RunState, max_run: int, skipped: int, steps: int) -> None:
        too_long = max_run > self.max_consecutive_nonfinite_steps
        too_many = skipped > self.max_nonfinite_fraction * steps
        if too_long or too_many:
            raise TrainingDivergedError(
                f"training diverged in epoch {state.epoch}: {skipped} of {steps} steps had a "
                f"non-finite loss, gradient or update (longest run {max_run}; limits "
                f"max_consecutive_nonfinite_steps={self.max_consecutive_nonfinite_steps}, "
                f"max_nonfinite_fraction={self.max_nonfinite_fraction}). Lower the learning rate, "
                f"check the data for NaN/inf, or tighten gradient_clip_norm; the last good "
                f"checkpoint (if any) is untouched."
            )

    # -- result ------------------------------------------------------------------------------

    def _result(self, setup, state: RunState, resumed_from, gated: bool, checkpointer):
        stopping = state.stopping
        params, epoch, loss, passed = state.best_params, stopping.best_epoch, stopping.best_loss, True
        if params is None and gated and state.fallback_params is not None:
            LOGGER.warning("no epoch passed checkpoint_gate; returning the best ungated epoch %s",
                           stopping.fallback_epoch)
            params, epoch, loss, passed = (state.fallback_params, stopping.fallback_epoch,
                                           stopping.fallback_loss, False)
        if params is None or not all_finite(params):
            raise TrainingDivergedError(
                f"no epoch of {state.epoch} produced a finite validation loss and finite weights; "
                f"refusing to return a model with non-finite weights"
            )
        return TrainingResult(
            model=assemble_compiled(params, setup.static), history=state.history, best_epoch=int(epoch),
            best_validation_loss=float(loss), stopped_early=state.stopped_early,
            epochs_run=state.epoch, resumed_from_epoch=resumed_from,
            skipped_nonfinite_steps=state.skipped_total, gate_passed=passed,
            steps_per_epoch=setup.steps_per_epoch,
            checkpoint_backend=checkpointer.backend_name if checkpointer else None,
        )


_CORE_HISTORY_KEYS = frozenset({"epoch", "train_loss", "validation_loss", "learning_rate", "epoch_time_s",
                                "skipped_nonfinite_steps", "gate_passed"})


@functools.lru_cache(maxsize=8)
def _compiled_kernels(
    train_loss: LossFn,
    eval_loss: EvalFn,
    optimization: OptimizationConfig,
    batch_size: int,
    steps: int,
    eval_chunk_size: int,
    mesh: Any = None,
    compiler_options: tuple[tuple[str, Any], ...] = (),
) -> tuple[EpochKernels, Any, tuple[float, ...]]:
    """Kernels shared by fits with the same losses and settings (resume, sweeps, tests).

    Sharing the jitted functions lets a second ``fit`` reuse the first one's compilations; a new
    loss closure or config simply misses the cache and compiles.
    """
    optimizer, schedule = build_optimizer(optimization, steps)
    sharding = None if mesh is None else dp.batch_sharding(mesh)
    kernels = EpochKernels(train_loss, eval_loss, optimizer, batch_size, steps, eval_chunk_size,
                           batch_sharding=sharding, compiler_options=dict(compiler_options))
    # The rate at the first step of every epoch, for the history.
    rates = learning_rates_at(schedule, [e * steps for e in range(optimization.num_epochs)])
    return kernels, optimizer, tuple(rates)


def _check_data(name: str, data: Any) -> None:
    if not isinstance(data, (InMemoryData, StreamingData)):
        raise ValueError(
            f"{name} must be InMemoryData or StreamingData, got {type(data).__name__}"
        )


def _num_samples(data: InMemoryData | StreamingData) -> int:
    if isinstance(data, InMemoryData):
        return data.num_samples
    return len(data.store.split_indices(data.split))


def _to_device(data: InMemoryData | StreamingData, mesh: Any = None) -> tuple | StreamingData:
    # In-memory splits go to the device once per fit; epochs then only move indices.
    # Data-parallel: replicated on every device; each device gathers its shard of each batch.
    if not isinstance(data, InMemoryData):
        return data
    return data.on_device() if mesh is None else dp.replicate((data.parameters, data.observations), mesh)


def _check_signature(stored: dict, current: dict, directory: str | None) -> None:
    stored = _jsonable(stored)
    current = _jsonable(current)
    if stored != current:
        keys = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        diffs = "; ".join(f"{k}: checkpoint {stored.get(k)!r} vs now {current.get(k)!r}" for k in keys)
        raise CheckpointMismatchError(
            f"cannot resume from {directory}: the checkpoint was written by a run with different "
            f"settings ({diffs}). Use the same settings, or a fresh checkpoint directory."
        )


def _jsonable(value: Any) -> Any:
    # Round-trip through JSON so tuples/lists and float formatting compare like the stored copy.
    return json.loads(json.dumps(value))


def _report(bar, metrics: Mapping[str, float], state: RunState) -> None:
    bar.update(1)
    bar.set_postfix(
        epoch=state.epoch,
        train=f"{metrics['train_loss']:.4f}",
        val=f"{metrics['validation_loss']:.4f}",
        best=f"{metrics['best_validation_loss']:.4f}",
        refresh=False,
    )
