"""Compiled training and evaluation kernels.

``train_step`` is the one pure training step. ``train_epoch`` runs a whole epoch of it inside a
single ``lax.scan`` over shuffled minibatch indices (the batch is gathered inside the scan from
data that already lives on the device), so an epoch is one dispatch and one compilation, reused
for every epoch. Non-finite steps are skipped inside the compiled code with ``jnp.where``: no
per-step host synchronisation is needed to survive a bad batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from sbi_core.training.data_parallel import constrain_batch
from sbi_core.training.layout import assemble

PyTree = Any
LossFn = Callable[[Any, Array, PyTree, PRNGKeyArray], Float[Array, ""]]
EvalFn = Callable[[Any, Array, PyTree], Float[Array, ""]]


class StepCounters(NamedTuple):
    """Non-finite step bookkeeping carried through (and across) compiled epochs.

    Attributes:
        consecutive: Current run of consecutive skipped steps (carried across epochs).
        max_consecutive: Longest run seen since the counters were last reset by the trainer.
        skipped: Steps skipped since the counters were last reset by the trainer.
    """

    consecutive: Int[Array, ""]
    max_consecutive: Int[Array, ""]
    skipped: Int[Array, ""]

    @classmethod
    def zeros(cls, consecutive: int = 0) -> StepCounters:
        """Fresh counters (optionally continuing a run of consecutive skipped steps)."""
        as_int = lambda v: jnp.asarray(v, dtype=jnp.int32)  # noqa: E731
        return cls(as_int(consecutive), as_int(consecutive), as_int(0))

    def record(self, ok: Bool[Array, ""]) -> StepCounters:
        """Account for one step that was applied (``ok``) or skipped."""
        consecutive = jnp.where(ok, 0, self.consecutive + 1)
        return StepCounters(
            consecutive,
            jnp.maximum(self.max_consecutive, consecutive),
            self.skipped + jnp.where(ok, 0, 1),
        )


def _all_finite(*trees: PyTree) -> Bool[Array, ""]:
    leaves = [leaf for tree in trees for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _select(ok: Bool[Array, ""], new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    static: PyTree,
    params: PyTree,
    opt_state: optax.OptState,
    counters: StepCounters,
    batch: tuple[Array, PyTree],
    key: PRNGKeyArray,
) -> tuple[PyTree, optax.OptState, StepCounters, Float[Array, ""], Bool[Array, ""]]:
    """One optimiser step on one batch; a non-finite step leaves everything unchanged.

    Args:
        loss_fn: ``loss_fn(model, parameters, observations, key) -> scalar``.
        optimizer: The optax chain from ``build_optimizer``.
        static: Non-trainable part of the model (``layout.split_model``: an ``eqx.partition``
            half, or a ``FlatStatic``).
        params: Trainable arrays of the model (a pytree, or one flat vector).
        opt_state: Optimiser state for ``params``.
        counters: Non-finite step counters.
        batch: ``(parameters (B, P), observations pytree)``.
        key: PRNG key for the loss (noise injection, jitter, ...).

    Returns:
        ``(params, opt_state, counters, loss, ok)``; ``loss`` is 0 for a skipped step and ``ok``
        says whether the step was applied (loss, gradients and new weights all finite).
    """

    def objective(trainable: PyTree) -> Float[Array, ""]:
        return loss_fn(assemble(trainable, static), batch[0], batch[1], key)

    loss, grads = eqx.filter_value_and_grad(objective)(params)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = eqx.apply_updates(params, updates)
    # Checking the new weights too catches a finite gradient that still overflows the update.
    ok = _all_finite(loss, grads, new_params)
    params = _select(ok, new_params, params)
    opt_state = _select(ok, new_opt_state, opt_state)
    return params, opt_state, counters.record(ok), jnp.where(ok, loss, 0.0), ok


def epoch_indices(
    key: PRNGKeyArray, num_samples: int, batch_size: int, steps: int
) -> Int[Array, "steps batch"]:
    """Shuffled minibatch indices for one epoch; the last partial batch is dropped.

    Dropping it keeps every step the same shape (one compilation); a different permutation each
    epoch means every sample is still seen.
    """
    permutation = jax.random.permutation(key, num_samples)
    return permutation[: steps * batch_size].reshape(steps, batch_size)


def mean_of_applied(losses: Float[Array, " n"], oks: Bool[Array, " n"]) -> Float[Array, ""]:
    """Mean loss over applied steps (NaN when every step was skipped)."""
    applied = jnp.sum(oks)
    return jnp.where(applied > 0, jnp.sum(losses) / jnp.maximum(applied, 1), jnp.nan)


def train_epoch(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    steps: int,
    shared: tuple[tuple[Array, PyTree], PyTree],
    params: PyTree,
    opt_state: optax.OptState,
    counters: StepCounters,
    key: PRNGKeyArray,
    batch_sharding: Any = None,
) -> tuple[PyTree, optax.OptState, StepCounters, Float[Array, ""]]:
    """Run one epoch of ``train_step`` inside one ``lax.scan`` (jit this, see ``EpochKernels``).

    Args:
        loss_fn: The training loss.
        optimizer: The optax chain.
        batch_size: Minibatch size (static).
        steps: Steps in the epoch (static).
        shared: ``((parameters, observations), static)``: the device-resident split and the
            non-trainable part of the model; never donated.
        params: Trainable arrays (donated).
        opt_state: Optimiser state (donated).
        counters: Non-finite step counters.
        key: The epoch's PRNG key (shuffling and per-step loss keys).
        batch_sharding: Data-parallel training: each gathered batch is constrained to this
            ``NamedSharding`` (batch axis split over the devices; see ``data_parallel``).

    Returns:
        ``(params, opt_state, counters, mean_train_loss)``.
    """
    data, static = shared
    num_samples = jax.tree.leaves(data)[0].shape[0]
    shuffle_key, step_key = jax.random.split(key)
    indices = epoch_indices(shuffle_key, num_samples, batch_size, steps)

    def body(carry, xs):
        batch_indices, step_key_i = xs
        batch = constrain_batch(jax.tree.map(lambda leaf: leaf[batch_indices], data), batch_sharding)
        *carry, loss, ok = train_step(loss_fn, optimizer, static, *carry, batch, step_key_i)
        return tuple(carry), (loss, ok)

    carry = (params, opt_state, counters)
    (params, opt_state, counters), (losses, oks) = jax.lax.scan(
        body, carry, (indices, jax.random.split(step_key, steps))
    )
    return params, opt_state, counters, mean_of_applied(losses, oks)


def evaluate(
    eval_fn: EvalFn, chunk_size: int, shared: tuple[tuple[Array, PyTree], PyTree], params: PyTree
) -> Float[Array, ""]:
    """Mean of ``eval_fn`` over a whole device-resident split, in fixed-size chunks.

    Full chunks run under ``lax.map`` (bounded memory); a remainder chunk, if any, is one more
    call of static shape, so the pass compiles once.

    Args:
        eval_fn: ``eval_fn(model, parameters, observations) -> mean over the batch``.
        chunk_size: Samples per chunk (static).
        shared: ``((parameters, observations), static)``.
        params: Trainable arrays.

    Returns:
        The sample-weighted mean of ``eval_fn`` over the split.
    """
    data, static = shared
    model = assemble(params, static)
    n = jax.tree.leaves(data)[0].shape[0]
    chunk = min(chunk_size, n)
    n_full, remainder = divmod(n, chunk)

    def chunk_mean(i: Int[Array, ""]) -> Float[Array, ""]:
        part = jax.tree.map(lambda leaf: jax.lax.dynamic_slice_in_dim(leaf, i * chunk, chunk), data)
        return eval_fn(model, part[0], part[1])

    total = jnp.sum(jax.lax.map(chunk_mean, jnp.arange(n_full))) * chunk
    if remainder:
        tail = jax.tree.map(lambda leaf: leaf[n_full * chunk :], data)
        total = total + eval_fn(model, tail[0], tail[1]) * remainder
    return total / n


class EpochKernels:
    """The compiled kernels of one ``fit``; each compiles once and is reused every epoch."""

    def __init__(
        self,
        loss_fn: LossFn,
        eval_fn: EvalFn,
        optimizer: optax.GradientTransformation,
        batch_size: int,
        steps: int,
        eval_chunk_size: int,
        batch_sharding: Any = None,
        compiler_options: dict[str, Any] | None = None,
    ) -> None:
        # XLA compiler options of every kernel (SBITrainer(compiler_options=...)); None: XLA's.
        jit = functools.partial(eqx.filter_jit, compiler_options=compiler_options or None)
        # Donate params/opt-state/counters/key: XLA updates them in place; the first argument
        # (data + static model) is reused every epoch and must not be donated.
        donate = "all-except-first"
        self.epoch = jit(
            _bind(train_epoch, loss_fn, optimizer, batch_size, steps, batch_sharding=batch_sharding),
            donate=donate,
        )
        self.step = jit(_bind(_batch_step, loss_fn, optimizer), donate=donate)
        self.evaluate = jit(_bind(evaluate, eval_fn, eval_chunk_size))
        self.evaluate_batch = jit(_bind(_evaluate_batch, eval_fn))
        # One compiled call each instead of one eager dispatch (and compile) per leaf shape:
        # eager per-leaf ops were a visible share of start-up time.
        self.init = jit(_bind(_init_state, optimizer))
        self.copy = jit(_copy_tree)


def _init_state(optimizer: optax.GradientTransformation, params: PyTree):
    """Private copy of the initial weights (the caller's survive donation) and optimiser state."""
    params = _copy_tree(params)
    return params, _copy_tree(optimizer.init(params))


def _copy_tree(tree: PyTree) -> PyTree:
    """Fresh, strongly typed buffers for every leaf.

    Fresh: a later donation of ``tree`` leaves the copy valid. Strongly typed: a weakly typed
    leaf (e.g. a parameter made with ``jnp.asarray(1.0)``) comes out of the first epoch strongly
    typed, and that type change alone would recompile the epoch kernel.
    """
    return jax.tree.map(lambda leaf: jnp.array(leaf, dtype=leaf.dtype, copy=True), tree)


def _batch_step(loss_fn, optimizer, shared, params, opt_state, counters, key):
    """``train_step`` with the batch in the (never donated) first argument, next to the static
    model: a streamed batch may alias host memory and cannot be reused for outputs anyway."""
    batch, static = shared
    return train_step(loss_fn, optimizer, static, params, opt_state, counters, batch, key)


def _evaluate_batch(eval_fn: EvalFn, static: PyTree, params: PyTree, batch: tuple[Array, PyTree]):
    return eval_fn(assemble(params, static), batch[0], batch[1])


def _bind(fn: Callable, *bound: Any, **bound_keywords: Any) -> Callable:
    """``functools.partial`` that keeps the name for readable compile logs."""

    def bound_fn(*args: Any) -> Any:
        return fn(*bound, *args, **bound_keywords)

    bound_fn.__name__ = fn.__name__
    return bound_fn
