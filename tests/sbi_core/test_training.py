"""SBITrainer: compiled epochs, schedule, early stopping, gate, non-finite faults, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbi_core.checkpoints import CheckpointMismatchError
from sbi_core.configs import CheckpointConfig, EarlyStoppingConfig, OptimizationConfig
from sbi_core.training.trainer import _compiled_kernels
from sbi_core.training import (
    InMemoryData,
    SBITrainer,
    StepCounters,
    StreamingData,
    TrainingDivergedError,
    build_optimizer,
    build_schedule,
    train_step,
)

REPO = Path(__file__).resolve().parents[2]
HISTORY_KEYS = {"epoch", "train_loss", "validation_loss", "learning_rate", "epoch_time_s",
                "skipped_nonfinite_steps", "gate_passed"}


# -- toy problems (module level, so compiled kernels are shared between tests) --------------------


def regression_data(n: int = 192, faulty: int | None = 0) -> tuple[InMemoryData, InMemoryData]:
    """A small regression split; ``faulty`` training samples (None = all) poison their batch."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    fault = np.zeros(n, np.float32)
    fault[: n if faulty is None else faulty] = 1.0
    cut = n * 3 // 4
    return (InMemoryData(y[:cut], {"x": x[:cut], "fault": fault[:cut]}),
            InMemoryData(y[cut:], {"x": x[cut:], "fault": np.zeros(n - cut, np.float32)}))


def regression_model(seed: int = 0) -> eqx.nn.MLP:
    return eqx.nn.MLP(3, 1, 16, 1, key=jax.random.key(seed))


def mse_eval(model, parameters, observations):
    return jnp.mean((jax.vmap(model)(observations["x"]) - parameters) ** 2)


def noisy_mse(model, parameters, observations, key):
    """MSE with input jitter from the step key (resume must reproduce the RNG stream exactly).

    A batch containing a sample flagged as faulty gives a NaN loss: one loss function (hence one
    compilation shared by most tests) covers healthy, flaky and fully broken data.
    """
    x = observations["x"] + 0.05 * jax.random.normal(key, observations["x"].shape)
    loss = jnp.mean((jax.vmap(model)(x) - parameters) ** 2)
    return jnp.where(jnp.any(observations["fault"] > 0), jnp.nan, loss)


# One optimisation config for the regression tests, so they share the compiled epoch kernel.
REGRESSION = OptimizationConfig(learning_rate=1e-2, batch_size=32, num_epochs=6,
                                use_cosine_schedule=True, warmup_fraction=0.2)


class Scalar(eqx.Module):
    w: jax.Array


def pull_to_zero(model, parameters, observations, key):
    return model.w**2 + 0.0 * jnp.sum(parameters)


def distance_to_half(model, parameters, observations):
    return (model.w - 0.5) ** 2 + 0.0 * jnp.sum(parameters)


def scalar_fit(patience=3, gate=None, diagnostics=None, batch_size=8, **trainer_options):
    data = InMemoryData(np.zeros((8, 1), np.float32), {"x": np.zeros((8, 1), np.float32)})
    trainer = SBITrainer(
        OptimizationConfig(learning_rate=0.05, batch_size=batch_size, num_epochs=40,
                           gradient_clip_norm=None),
        EarlyStoppingConfig(patience=patience), progress=False, **trainer_options,
    )
    return trainer.fit(Scalar(jnp.asarray(1.0)), train_loss=pull_to_zero,
                       eval_loss=distance_to_half, train_data=data, validation_data=data,
                       checkpoint_gate=gate, validation_diagnostics=diagnostics)


def w_diagnostic(model, parameters, observations):
    return {"w": model.w}


# -- optimiser and schedule ---------------------------------------------------------------------


def _rates(schedule, steps):
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps)))


def test_cosine_schedule_values():
    config = OptimizationConfig(learning_rate=1e-2, num_epochs=10, use_cosine_schedule=True,
                                warmup_fraction=0.1, min_learning_rate=1e-4)
    schedule = build_schedule(config, steps_per_epoch=10)  # 100 steps, 10 of warmup
    expected = [1e-4, (1e-4 + 1e-2) / 2, 1e-2, (1e-2 + 1e-4) / 2, 1e-4, 1e-4]  # 55: cosine midpoint
    np.testing.assert_allclose(_rates(schedule, [0, 5, 10, 55, 100, 500]), expected, rtol=1e-4)
    by_epochs = OptimizationConfig(learning_rate=1e-2, use_cosine_schedule=True, warmup_epochs=2,
                                   lr_schedule_total_epochs=4, num_epochs=10)
    schedule = build_schedule(by_epochs, steps_per_epoch=10)  # warmup 20 of 40 steps
    np.testing.assert_allclose(_rates(schedule, [20, 40]), [1e-2, 1e-6], rtol=1e-4)
    constant = build_schedule(OptimizationConfig(learning_rate=3e-3), steps_per_epoch=7)
    np.testing.assert_allclose(_rates(constant, [0, 10_000]), [3e-3, 3e-3], rtol=1e-6)


def test_optimizer_chain_clips_and_decays():
    params = {"w": jnp.array([1.0, 1.0])}
    grads = [{"w": jnp.array([1000.0, 0.0])}, {"w": jnp.array([1.0, 0.0])}]

    def second_update(config):
        optimizer, _ = build_optimizer(config, steps_per_epoch=1)

        @jax.jit
        def run(params):
            state = optimizer.init(params)
            for g in grads:
                updates, state = optimizer.update(g, state, params)
            return updates["w"]

        return np.asarray(run(params))

    clipped = second_update(OptimizationConfig(gradient_clip_norm=1.0))
    unclipped = second_update(OptimizationConfig(gradient_clip_norm=None))
    assert not np.allclose(clipped, unclipped)  # the huge first gradient was clipped
    decay = second_update(OptimizationConfig(weight_decay=0.5, gradient_clip_norm=None))
    np.testing.assert_allclose(decay - unclipped, -1e-3 * 0.5 * params["w"], rtol=1e-5)
    with pytest.raises(ValueError, match="steps_per_epoch must be an integer >= 1, got 0"):
        build_optimizer(OptimizationConfig(), 0)


# -- the loop -----------------------------------------------------------------------------------


def test_fit_trains_records_history_and_calls_back():
    train, validation = regression_data()
    model = regression_model()
    calls = []
    trainer = SBITrainer(REGRESSION, progress=True)
    result = trainer.fit(model, train_loss=noisy_mse, eval_loss=mse_eval, train_data=train,
                         validation_data=validation,
                         epoch_callback=lambda epoch, metrics: calls.append((epoch, metrics)))
    history = result.history
    assert HISTORY_KEYS <= set(history) and all(len(v) == 6 for v in history.values())
    assert history["validation_loss"][-1] < history["validation_loss"][0]
    assert result.steps_per_epoch == 144 // 32 and result.epochs_run == 6
    assert result.best_validation_loss == min(history["validation_loss"])
    assert history["learning_rate"][1] > history["learning_rate"][-1]  # cosine decay recorded
    assert [c[0] for c in calls] == [1, 2, 3, 4, 5, 6]
    kernels = _compiled_kernels(noisy_mse, mse_eval, REGRESSION, 32, 4, 4096, None, ())[0]
    assert kernels.epoch._cached._cache_size() == 1  # six epochs, one compilation
    assert {"train_loss", "validation_loss", "best_validation_loss"} <= set(calls[-1][1])
    # The caller's model was not donated away, and the returned one evaluates to the best loss.
    assert np.isfinite(np.asarray(model.layers[0].weight)).all()
    loss = float(mse_eval(result.model, validation.parameters, validation.observations))
    assert loss == pytest.approx(result.best_validation_loss, rel=1e-5)


def test_early_stopping_restores_best_weights():
    result = scalar_fit(patience=3)
    # Compile once: the epoch kernel is traced a single time for all epochs (weakly typed
    # initial weights included).
    config = OptimizationConfig(learning_rate=0.05, batch_size=8, num_epochs=40,
                                gradient_clip_norm=None)
    kernels = _compiled_kernels(pull_to_zero, distance_to_half, config, 8, 1, 4096, None, ())[0]
    assert kernels.epoch._cached._cache_size() == 1
    val = result.history["validation_loss"]
    assert result.stopped_early and result.epochs_run < 40
    assert result.best_epoch == int(np.argmin(val)) + 1
    assert result.epochs_run == result.best_epoch + 3  # patience epochs after the best
    assert float(distance_to_half(result.model, jnp.zeros(1), None)) == pytest.approx(
        min(val), rel=1e-6)


def test_checkpoint_gate_selects_among_eligible_epochs():
    result = scalar_fit(patience=None, diagnostics=w_diagnostic,
                        gate=lambda metrics: metrics["w"] > 0.7)
    w = np.asarray(result.history["w"])
    eligible = np.flatnonzero(w > 0.7)
    assert result.gate_passed and result.history["gate_passed"] == list((w > 0.7) * 1.0)
    assert result.best_epoch == eligible[-1] + 1  # the loss falls while w shrinks towards 0.5
    assert float(result.model.w) > 0.7
    never = scalar_fit(patience=None, gate=lambda metrics: False)
    assert not never.gate_passed
    assert never.best_epoch == int(np.argmin(never.history["validation_loss"])) + 1


def test_diagnostics_on_candidate_epochs_select_the_same_epoch():
    """diagnostics_epochs='candidates' runs the gate only where it can matter: same selection."""
    calls = []

    def counted(model, parameters, observations):
        calls.append(float(model.w))
        return {"w": model.w}

    gate = lambda metrics: metrics["w"] > 0.7  # noqa: E731
    every = scalar_fit(patience=10, diagnostics=w_diagnostic, gate=gate)
    lazy = scalar_fit(patience=10, diagnostics=counted, gate=gate, diagnostics_epochs="candidates",
                      overlap_compilation=False)
    assert lazy.best_epoch == every.best_epoch and lazy.epochs_run == every.epochs_run
    assert lazy.best_validation_loss == every.best_validation_loss
    assert float(lazy.model.w) == float(every.model.w)
    assert lazy.history["validation_loss"] == every.history["validation_loss"]
    val = np.asarray(every.history["validation_loss"])
    best_before = np.minimum.accumulate(np.where(np.asarray(every.history["gate_passed"]) > 0, val, np.inf))
    candidate = val < np.concatenate([[np.inf], best_before[:-1]])
    assert len(calls) == int(candidate.sum()) < len(val)
    w = np.asarray(lazy.history["w"])
    np.testing.assert_array_equal(np.isnan(w), ~candidate)
    np.testing.assert_array_equal(w[candidate], np.asarray(every.history["w"])[candidate])
    with pytest.raises(ValueError, match="diagnostics_epochs"):
        SBITrainer(diagnostics_epochs="sometimes")


def test_compilation_overlap_gives_the_same_run():
    train, validation = regression_data()
    results = [SBITrainer(REGRESSION, progress=False, overlap_compilation=overlap).fit(
        regression_model(), train_loss=noisy_mse, eval_loss=mse_eval, train_data=train,
        validation_data=validation, validation_diagnostics=lambda m, p, o: {"d": mse_eval(m, p, o)})
        for overlap in (False, True)]
    assert results[0].history["validation_loss"] == results[1].history["validation_loss"]
    assert results[0].history["d"] == results[1].history["d"]


class FakeStore:
    """The slice of ``SimulationStore`` that ``StreamingData`` uses, over an in-memory split."""

    def __init__(self, data: InMemoryData) -> None:
        self.data = data

    def split_indices(self, split):
        return np.arange(self.data.num_samples)

    def iter_batches(self, split, batch_size, shuffle, seed, drop_last):
        n = self.data.num_samples
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        for start in range(0, n - n % batch_size if drop_last else n, batch_size):
            idx = order[start:start + batch_size]
            yield SimpleNamespace(parameters=self.data.parameters[idx],
                                  observations={k: v[idx] for k, v in self.data.observations.items()})


def test_streaming_source_and_small_splits():
    train, validation = regression_data(n=40)  # 30 train, 10 validation
    config = OptimizationConfig(learning_rate=1e-2, batch_size=8, num_epochs=3)
    streamed = SBITrainer(config, progress=False, eval_chunk_size=16).fit(
        regression_model(), train_loss=noisy_mse, eval_loss=mse_eval,
        train_data=StreamingData(FakeStore(train)),
        validation_data=StreamingData(FakeStore(validation), split="validation"),
        validation_diagnostics=lambda m, p, o: {"n": p.shape[0]})
    assert streamed.steps_per_epoch == 3 and streamed.history["n"] == [10.0] * 3
    kernels = _compiled_kernels(noisy_mse, mse_eval, config, 8, 3, 16, None, ())[0]
    assert kernels.step._cached._cache_size() == 1  # nine streamed steps, one compilation
    assert all(np.isfinite(streamed.history["validation_loss"]))
    assert scalar_fit(batch_size=64).steps_per_epoch == 1  # 8 samples become one batch
    with pytest.raises(ValueError, match="train_data must be InMemoryData or StreamingData"):
        SBITrainer(progress=False).fit(regression_model(), train_loss=noisy_mse,
                                       eval_loss=mse_eval, train_data={"x": 1},
                                       validation_data=validation)
    with pytest.raises(ValueError, match=r"observations\['x'\] must have leading"):
        InMemoryData(np.zeros((4, 1)), {"x": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="StreamingData.store must provide iter_batches"):
        StreamingData(object())


# -- numerical faults ---------------------------------------------------------------------------


def test_nonfinite_step_leaves_state_unchanged():
    params, static = eqx.partition(regression_model(), eqx.is_inexact_array)
    train, _ = regression_data(n=16, faulty=None)
    batch = (jnp.asarray(train.parameters), jax.tree.map(jnp.asarray, train.observations))
    healthy = (batch[0], dict(batch[1], fault=jnp.zeros_like(batch[1]["fault"])))
    # A NaN loss; then a finite loss and gradient whose update overflows (infinite step size).
    for optimizer, data in ((optax.sgd(1e-3), batch), (optax.sgd(jnp.inf), healthy)):
        opt_state = optimizer.init(params)
        step = eqx.filter_jit(train_step)
        new_params, new_state, counters, loss, ok = step(
            noisy_mse, optimizer, static, params, opt_state, StepCounters.zeros(2), data,
            jax.random.key(0))
        assert not bool(ok) and float(loss) == 0.0
        assert (int(counters.consecutive), int(counters.max_consecutive), int(counters.skipped)) \
            == (3, 3, 1)
        for a, b in zip(jax.tree.leaves((new_params, new_state)),
                        jax.tree.leaves((params, opt_state))):
            np.testing.assert_array_equal(a, b)


def test_nonfinite_steps_are_skipped_and_counted():
    train, validation = regression_data(faulty=1)  # exactly one batch per epoch is poisoned
    result = SBITrainer(REGRESSION, progress=False).fit(
        regression_model(), train_loss=noisy_mse, eval_loss=mse_eval, train_data=train,
        validation_data=validation)
    assert result.skipped_nonfinite_steps == sum(result.history["skipped_nonfinite_steps"]) > 0
    assert all(np.isfinite(result.history["train_loss"]))
    weights = jax.tree.leaves(eqx.filter(result.model, eqx.is_inexact_array))
    assert all(np.isfinite(np.asarray(w)).all() for w in weights)


def test_persistent_nonfinite_loss_stops_with_a_clear_error(tmp_path):
    train, validation = regression_data(faulty=None)
    trainer = SBITrainer(REGRESSION, checkpoint=CheckpointConfig(str(tmp_path), backend="equinox"),
                         progress=False, max_consecutive_nonfinite_steps=2)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1: 4 of 4 steps had a non-finite"):
        trainer.fit(regression_model(), train_loss=noisy_mse, eval_loss=mse_eval,
                    train_data=train, validation_data=validation)
    assert not any(tmp_path.glob("ckpt_*"))  # nothing non-finite was checkpointed


# -- resume -------------------------------------------------------------------------------------


class SimulatedCrash(Exception):
    pass


def resume_trainer(directory, backend, resume, seed=3, optimization=REGRESSION, interval=1):
    return SBITrainer(
        optimization,
        EarlyStoppingConfig(patience=10),
        CheckpointConfig(str(directory), backend=backend, resume=resume,
                         save_interval_epochs=interval),
        seed=seed, progress=False,
    )


def resume_fit(trainer, callback=None):
    train, validation = regression_data()
    return trainer.fit(regression_model(), train_loss=noisy_mse, eval_loss=mse_eval,
                       train_data=train, validation_data=validation, epoch_callback=callback)


def crash_after(epoch_to_crash):
    def callback(epoch, metrics):
        if epoch == epoch_to_crash:
            raise SimulatedCrash(f"crash after epoch {epoch}")
    return callback


# Runs on one machine with the same XLA build are bitwise reproducible; the tolerance covers
# reduction-order differences should a resumed process pick a different kernel.
RESUME_RTOL = 1e-6


@pytest.mark.parametrize(("backend", "interval"), [("equinox", 2), ("orbax", 1)])
def test_resume_after_crash_matches_uninterrupted_run(tmp_path, backend, interval):
    reference = resume_fit(resume_trainer(tmp_path / "ref", backend, resume=False))
    with pytest.raises(SimulatedCrash):
        resume_fit(resume_trainer(tmp_path / "run", backend, resume=False, interval=interval),
                   crash_after(3))
    resumed = resume_fit(resume_trainer(tmp_path / "run", backend, resume=True, interval=interval))
    # With a 2-epoch interval the last checkpoint before the crash after epoch 3 is epoch 2.
    assert resumed.resumed_from_epoch == 3 - 3 % interval and resumed.epochs_run == 6
    np.testing.assert_allclose(resumed.history["validation_loss"],
                               reference.history["validation_loss"], rtol=RESUME_RTOL)
    assert resumed.best_validation_loss == pytest.approx(reference.best_validation_loss,
                                                         rel=RESUME_RTOL)
    assert resumed.history["learning_rate"] == reference.history["learning_rate"]
    again = resume_fit(resume_trainer(tmp_path / "run", backend, resume=True))  # already finished
    assert again.epochs_run == 6 and again.best_epoch == resumed.best_epoch


def test_resume_refuses_a_checkpoint_of_different_settings(tmp_path):
    with pytest.raises(SimulatedCrash):
        resume_fit(resume_trainer(tmp_path, "equinox", resume=False), crash_after(1))
    with pytest.raises(CheckpointMismatchError, match=r"different settings \(seed: checkpoint 3"):
        resume_fit(resume_trainer(tmp_path, "equinox", resume=True, seed=4))


KILL_RUN = OptimizationConfig(learning_rate=1e-2, batch_size=32, num_epochs=12)
KILL_SCRIPT = """
import sys, time
from tests.sbi_core.test_training import KILL_RUN, resume_fit, resume_trainer
resume_fit(resume_trainer(sys.argv[1], "orbax", resume=False, optimization=KILL_RUN),
           lambda epoch, metrics: time.sleep(0.1))
"""


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "run")],
                               cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            steps = [p for p in (tmp_path / "run").glob("*") if p.name.isdigit()]
            if steps and max(int(p.name) for p in steps) >= 3:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the training subprocess ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    resumed = resume_fit(resume_trainer(tmp_path / "run", "orbax", resume=True,
                                        optimization=KILL_RUN))
    reference = resume_fit(resume_trainer(tmp_path / "ref", "orbax", resume=False,
                                          optimization=KILL_RUN))
    assert resumed.resumed_from_epoch is not None and resumed.resumed_from_epoch >= 2
    assert resumed.epochs_run == reference.epochs_run
    np.testing.assert_allclose(resumed.best_validation_loss, reference.best_validation_loss,
                               rtol=RESUME_RTOL)


def test_enable_compilation_cache(tmp_path):
    from sbi_core.training import enable_compilation_cache

    with pytest.raises(ValueError, match="min_compile_time_s must be >= 0, got -1"):
        enable_compilation_cache(tmp_path, min_compile_time_s=-1)
    previous = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compilation_cache(tmp_path / "xla") == tmp_path / "xla"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


def test_prefetched_iterator_order_errors_and_early_stop():
    from sbi_core.training.data import prefetched

    assert list(prefetched(iter(range(50)), 2)) == list(range(50))

    def broken():
        yield 1
        raise OSError("store read failed at chunk 3")

    with pytest.raises(OSError, match="chunk 3"):
        list(prefetched(broken(), 2))
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for item in prefetched(endless(), 2):
        if item == 3:
            break
    time.sleep(0.3)
    assert len(produced) <= 8  # the producer stopped soon after the consumer did


class Mixed(eqx.Module):
    w: jax.Array
    v: jax.Array
    n: int = 3


def test_weight_layouts_round_trip_and_mixed_dtypes_train():
    from sbi_core.training.layout import FlatStatic, assemble, split_model

    model = regression_model()
    flat, static = split_model(model)
    assert isinstance(static, FlatStatic) and flat.ndim == 1
    assert flat.size == sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    rebuilt = assemble(flat, static)
    for a, b in zip(jax.tree.leaves(rebuilt), jax.tree.leaves(model)):
        np.testing.assert_array_equal(a, b)
    mixed = Mixed(jnp.ones(2, jnp.float32), jnp.ones(3, jnp.float16))
    params, static = split_model(mixed)
    assert not isinstance(static, FlatStatic)  # no silent float16 -> float32 promotion
    data = InMemoryData(np.zeros((8, 1), np.float32), {"x": np.zeros((8, 1), np.float32)})
    result = SBITrainer(OptimizationConfig(learning_rate=0.1, batch_size=8, num_epochs=2),
                        progress=False).fit(
        mixed, train_loss=lambda m, p, o, k: jnp.sum(m.w**2) + jnp.sum(m.v.astype(jnp.float32)**2),
        eval_loss=lambda m, p, o: jnp.sum(m.w**2), train_data=data, validation_data=data)
    assert result.model.v.dtype == jnp.float16 and result.model.n == 3
    assert float(result.model.w[0]) < 1.0
    with pytest.raises(ValueError, match="has no trainable floating-point arrays"):
        split_model(Mixed(jnp.ones(2, jnp.int32), jnp.ones(2, jnp.int32)))


class ModuleLoss(eqx.Module):
    """A loss that is itself an equinox Module holding an array: unhashable, still accepted."""

    target: jax.Array

    def __call__(self, model, parameters, observations, key=None):
        return (model.w - self.target) ** 2 + 0.0 * jnp.sum(parameters)


def test_unhashable_loss_objects_are_accepted():
    data = InMemoryData(np.zeros((8, 1), np.float32), {"x": np.zeros((8, 1), np.float32)})
    loss = ModuleLoss(jnp.asarray(0.25))
    result = SBITrainer(OptimizationConfig(learning_rate=0.1, batch_size=8, num_epochs=3,
                                           gradient_clip_norm=None), progress=False).fit(
        Scalar(jnp.asarray(1.0)), train_loss=loss, eval_loss=loss, train_data=data,
        validation_data=data)
    assert result.best_validation_loss < (1.0 - 0.25) ** 2
