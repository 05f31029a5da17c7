"""Classical reference retrievals with dynesty nested sampling (nautilus: ``nautilus_reference``).

A reference retrieval samples the exact posterior of one observation from the likelihood and the
prior (no neural network), giving equally weighted posterior draws, the log-evidence and its error,
and the wall time to compare the amortized posterior against.

References:
    Skilling (2006), "Nested sampling for general Bayesian computation", Bayesian Analysis 1(4).
    Speagle (2020), "dynesty: a dynamic nested sampling package for estimating Bayesian
    posteriors and evidences", MNRAS 493(3).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jaxtyping import Float

LogLikelihood = Callable[[np.ndarray], float]
"""Maps one parameter vector ``(P,)`` in physical units to a scalar log-likelihood."""
PriorTransform = Callable[[np.ndarray], np.ndarray]
"""Maps a point of the unit cube ``(P,)`` to physical parameters ``(P,)`` (the prior's icdf)."""


@dataclass(frozen=True)
class ReferenceRetrieval:
    """Result of one nested-sampling retrieval.

    Attributes:
        samples: Equally weighted posterior draws ``(N, P)`` in physical units.
        log_evidence: ``ln Z`` estimate.
        log_evidence_error: Its standard error as estimated by dynesty.
        wall_time_s: Seconds spent in the sampler.
        num_likelihood_calls: Total likelihood evaluations.
        nlive: Number of live points.
        seed: Seed of ``rstate``.
        metadata: Sampler settings and free-form context.
    """

    samples: np.ndarray
    log_evidence: float
    log_evidence_error: float
    wall_time_s: float
    num_likelihood_calls: int
    nlive: int
    seed: int
    metadata: dict[str, Any] = field(default_factory=dict)


def prior_transform_from_priors(priors: Sequence[Any]) -> PriorTransform:
    """A dynesty prior transform from one prior per parameter, each with ``icdf(u)``.

    Works with ``sbi_core.priors`` objects (``AbstractPrior.icdf``) or anything with an
    elementwise ``icdf`` (cube -> physical). Cube values are clipped away from 0 and 1 so that
    unbounded priors (normal) stay finite.
    """
    priors = tuple(priors)
    eps = 1e-12

    def transform(u: np.ndarray) -> np.ndarray:
        u = np.clip(np.asarray(u, dtype=np.float64), eps, 1.0 - eps)
        return np.array([float(p.icdf(u[i])) for i, p in enumerate(priors)])

    return transform


def nested_sampling_reference(
    log_likelihood: LogLikelihood,
    prior_transform: PriorTransform,
    ndim: int,
    *,
    nlive: int = 500,
    seed: int = 0,
    dlogz: float = 0.1,
    bound: str = "multi",
    sample: str = "auto",
    maxcall: int | None = None,
) -> ReferenceRetrieval:
    """Run dynesty's static ``NestedSampler`` and return equally weighted draws and ``ln Z``.

    Args:
        log_likelihood: ``theta (P,) -> ln L``; must return a finite float or ``-inf``.
        prior_transform: Unit cube ``(P,)`` -> physical parameters ``(P,)``.
        ndim: Number of parameters ``P``.
        nlive: Live points (more: smoother posterior and smaller ``ln Z`` error).
        seed: Seed of ``rstate=np.random.default_rng(seed)``; the run is reproducible.
        dlogz: Stopping criterion on the remaining evidence.
        bound: dynesty bounding method.
        sample: dynesty sampling method.
        maxcall: Optional cap on likelihood calls.

    Returns:
        A :class:`ReferenceRetrieval`.
    """
    import dynesty  # optional dependency (extra "reference"); imported where it is needed

    if ndim < 1 or nlive < ndim + 1:
        raise ValueError(f"need ndim >= 1 and nlive > ndim; got ndim={ndim}, nlive={nlive}")
    rstate = np.random.default_rng(seed)
    start = time.perf_counter()
    sampler = dynesty.NestedSampler(log_likelihood, prior_transform, ndim, nlive=nlive,
                                    bound=bound, sample=sample, rstate=rstate)
    sampler.run_nested(dlogz=dlogz, maxcall=maxcall, print_progress=False)
    wall = time.perf_counter() - start
    results = sampler.results
    return ReferenceRetrieval(
        samples=np.asarray(results.samples_equal(rstate=rstate)),
        log_evidence=float(results.logz[-1]),
        log_evidence_error=float(results.logzerr[-1]),
        wall_time_s=wall,
        num_likelihood_calls=int(np.sum(results.ncall)),
        nlive=nlive,
        seed=seed,
        metadata={"sampler": "dynesty.NestedSampler", "dynesty_version": dynesty.__version__,
                  "bound": bound, "sample": sample, "dlogz": dlogz, "maxcall": maxcall,
                  # A run stopped by maxcall never reached dlogz: its draws are not a posterior.
                  "converged": maxcall is None or int(np.sum(results.ncall)) < maxcall},
    )


REFERENCE_SAMPLERS = ("dynesty", "nautilus")


def task_reference(
    task: Any, observation: Any, *, nlive: int | None = None, seed: int = 0, sampler: str = "dynesty",
    **kwargs: Any
) -> ReferenceRetrieval:
    """Reference retrieval for an ``SBITask`` with a likelihood (see docs/contracts.md).

    Args:
        task: An ``SBITask`` with ``has_likelihood``, ``log_likelihood(theta, observation)`` and
            per-parameter priors in ``task.parameters[i].prior``.
        observation: ``{block: {"values": (L,), "uncertainties": (L,)}}``.
        nlive: Live points (default 500 for dynesty, 2000 for nautilus).
        seed: Sampler seed.
        sampler: ``"dynesty"`` (:func:`nested_sampling_reference`, one call per point) or
            ``"nautilus"`` (:func:`~sbi_core.benchmark.nautilus_reference.nautilus_reference`,
            batched calls; far fewer calls on sharp likelihoods such as exo_transmission).
        **kwargs: Passed to the sampler's function (e.g. ``maxcall``).

    Returns:
        A :class:`ReferenceRetrieval` in physical units.
    """
    if not getattr(task, "has_likelihood", False):
        raise ValueError(f"task {getattr(task, 'name', task)!r} has no likelihood; a "
                         "nested-sampling reference needs one")
    if sampler not in REFERENCE_SAMPLERS:
        raise ValueError(f"unknown reference sampler {sampler!r}; expected one of {REFERENCE_SAMPLERS}")

    import jax
    import jax.numpy as jnp

    priors = [spec.prior for spec in task.parameters]

    def loglike(theta):
        value = task.log_likelihood(theta, observation)
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    def icdf(u):
        u = jnp.clip(u, 1e-12, 1.0 - 1e-12)
        return jnp.stack([p.icdf(u[i]) for i, p in enumerate(priors)])

    if sampler == "nautilus":
        from sbi_core.benchmark.nautilus_reference import nautilus_reference

        # One compiled, vmapped call per batch of points (nautilus asks ~100 at a time).
        loglike_batch, icdf_batch = jax.jit(jax.vmap(loglike)), jax.jit(jax.vmap(icdf))
        return nautilus_reference(
            lambda theta: np.asarray(loglike_batch(jnp.asarray(theta)), dtype=np.float64),
            lambda u: np.asarray(icdf_batch(jnp.asarray(u)), dtype=np.float64),
            task.parameter_dim, nlive=2000 if nlive is None else nlive, seed=seed, **kwargs)

    # One compiled call per likelihood / transform evaluation: dynesty calls them ~1e4-1e5
    # times, and eager JAX dispatch per operation would dominate the run time.
    loglike_jit, icdf_jit = jax.jit(loglike), jax.jit(icdf)
    return nested_sampling_reference(
        lambda theta: float(loglike_jit(jnp.asarray(theta))),
        lambda u: np.asarray(icdf_jit(jnp.asarray(u)), dtype=float),
        task.parameter_dim, nlive=500 if nlive is None else nlive, seed=seed, **kwargs)


def gaussian_log_likelihood(
    mean: Float[np.ndarray, " P"], cov: Float[np.ndarray, "P P"]
) -> LogLikelihood:
    """A normalised multivariate Gaussian log-likelihood (used by tests and demos)."""
    mean, cov = np.asarray(mean, float), np.asarray(cov, float)
    precision = np.linalg.inv(cov)
    norm = -0.5 * (len(mean) * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1])

    def log_likelihood(theta: np.ndarray) -> float:
        d = np.asarray(theta) - mean
        return float(norm - 0.5 * d @ precision @ d)

    return log_likelihood
