"""Compiled, batched sampling and density evaluation over many contexts.

Thin ``eqx.filter_jit`` wrappers around :mod:`.density`; the velocity field and
the solver are jit arguments (the solver's settings are static), so one compiled
function serves every posterior with the same shapes and solver.
"""

from __future__ import annotations

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from .density import log_prob, push_forward, sample_and_log_prob
from .divergence import AbstractDivergence
from .solvers import AbstractODESolver
from .vector_field import VelocityMLP


@eqx.filter_jit
def batch_sample(
    field: VelocityMLP,
    contexts: Float[Array, "B C"],
    keys: PRNGKeyArray,
    num_samples: int,
    solver: AbstractODESolver,
) -> Float[Array, "B N P"]:
    """``num_samples`` draws for each context (one key per context)."""
    dim = field.parameter_dim

    def one_context(context, key):
        noise = jax.random.normal(key, (num_samples, dim), contexts.dtype)
        return jax.vmap(lambda z: push_forward(field, z, context, solver))(noise)

    return jax.vmap(one_context)(contexts, keys)


@eqx.filter_jit
def batch_sample_and_log_prob(
    field: VelocityMLP,
    context: Float[Array, " C"],
    key: PRNGKeyArray,
    num_samples: int,
    solver: AbstractODESolver,
    divergence: AbstractDivergence,
) -> tuple[Float[Array, "N P"], Float[Array, " N"]]:
    """Draws for one context with their log-densities from the same trajectories."""
    noise_key, probe_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, (num_samples, field.parameter_dim), context.dtype)
    probe_keys = jax.random.split(probe_key, num_samples)
    return jax.vmap(
        lambda z, k: sample_and_log_prob(field, z, context, solver, divergence, k)
    )(noise, probe_keys)


@eqx.filter_jit
def batch_log_prob(
    field: VelocityMLP,
    context: Float[Array, " C"],
    theta: Float[Array, "N P"],
    key: PRNGKeyArray,
    solver: AbstractODESolver,
    divergence: AbstractDivergence,
) -> Float[Array, " N"]:
    """Log-density of many parameter vectors under one context."""
    keys = jax.random.split(key, theta.shape[0])
    return jax.vmap(
        lambda th, k: log_prob(field, th, context, solver, divergence, k)
    )(theta, keys)
