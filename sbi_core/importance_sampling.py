"""Importance-sampled posteriors and Bayesian evidence from an amortized proposal.

An amortized posterior q(theta | x) is a proposal for the true posterior
p(theta | x) proportional to p(x | theta) p(theta). With draws theta_i ~ q the
weights w_i = p(x | theta_i) p(theta_i) / q(theta_i | x) give

- a consistent estimate of the evidence, Z_hat = mean(w) (log-evidence =
  logmeanexp(log w)), with delta-method standard error sd(w) / (sqrt(n) mean(w));
- Kish's effective sample size ESS = (sum w)^2 / sum w^2 and the sampling
  efficiency ESS / n (1 for a perfect proposal);
- a resampled, asymptotically exact posterior.

Low efficiency means q misses mass of the true posterior, i.e. the amortized
posterior is unreliable for that observation (Dax et al. 2023, "Neural
importance sampling for rapid and reliable gravitational-wave inference";
Gebhard et al. 2024 for exoplanet retrievals). Everything is in physical
parameter units: log q must be the proposal density in physical space.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float, PRNGKeyArray

SampleAndLogProb = Callable[[PRNGKeyArray, int], tuple[Array, Array]]
LogDensity = Callable[[Array], Array]

DEFAULT_EFFICIENCY_THRESHOLD = 0.01


class LowImportanceSamplingEfficiencyWarning(UserWarning):
    """The proposal covers the target poorly: treat the amortized posterior with care."""


@dataclasses.dataclass(frozen=True)
class ImportanceSamplingResult:
    """Importance-sampling output for one observation (physical units).

    Attributes:
        samples: Proposal draws (n, P).
        log_weights: Unnormalised log-weights (n,); -inf marks invalid draws.
        normalized_weights: Self-normalised weights (n,), summing to one.
        resampled: Draws resampled with replacement by weight (m, P).
        effective_sample_size: Kish's ESS.
        sampling_efficiency: ESS / n.
        log_evidence: log of the mean weight.
        log_evidence_standard_error: Delta-method standard error of log_evidence.
        num_samples: n.
        num_invalid: Draws with a non-finite log-weight (e.g. outside the prior).
        efficiency_threshold: Threshold below which ``low_efficiency`` is set.
        low_efficiency: Whether the efficiency is below the threshold (or ESS < 2).
    """

    samples: np.ndarray
    log_weights: np.ndarray
    normalized_weights: np.ndarray
    resampled: np.ndarray
    effective_sample_size: float
    sampling_efficiency: float
    log_evidence: float
    log_evidence_standard_error: float
    num_samples: int
    num_invalid: int
    efficiency_threshold: float
    low_efficiency: bool

    def summary(self) -> dict[str, float | int | bool | None]:
        """JSON-serialisable scalar summary (non-finite floats become None)."""
        keys = ("effective_sample_size", "sampling_efficiency", "log_evidence",
                "log_evidence_standard_error", "num_samples", "num_invalid",
                "efficiency_threshold", "low_efficiency")
        out: dict[str, float | int | bool | None] = {}
        for key in keys:
            value = getattr(self, key)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[key] = value
        out["num_resampled"] = int(self.resampled.shape[0])
        return out


def log_importance_weights(
    log_likelihood: Float[Array, " n"],
    log_prior: Float[Array, " n"],
    log_proposal: Float[Array, " n"],
) -> Float[Array, " n"]:
    """log w = log L + log prior - log q, with every non-finite result set to -inf.

    A draw outside the prior support (log prior = -inf), or one whose proposal
    density or likelihood is NaN/infinite, cannot contribute: it gets zero weight
    rather than poisoning the sums.
    """
    log_w = log_likelihood + log_prior - log_proposal
    return jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)


def effective_sample_size(log_weights: Float[Array, " n"]) -> Float[Array, ""]:
    """Kish's ESS, (sum w)^2 / sum w^2, computed in log space."""
    return jnp.exp(2.0 * logsumexp(log_weights) - logsumexp(2.0 * log_weights))


def log_evidence(log_weights: Float[Array, " n"]) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """log Z_hat = logmeanexp(log w) and its delta-method standard error.

    Var(Z_hat) = Var(w) / n, so se(log Z_hat) ~ sd(w) / (sqrt(n) mean(w)); the ratio
    is scale free, so it is evaluated on weights rescaled by their maximum.

    Returns:
        ``(log_evidence, standard_error)``; ``(-inf, inf)`` if every weight is zero.
    """
    n = log_weights.shape[0]
    log_z = logsumexp(log_weights) - jnp.log(n)
    shifted = jnp.exp(log_weights - jnp.max(log_weights))
    ratio = jnp.std(shifted, ddof=1) / jnp.mean(shifted)
    standard_error = jnp.where(jnp.isfinite(log_z), ratio / jnp.sqrt(n), jnp.inf)
    return log_z, standard_error


def resample(
    key: PRNGKeyArray,
    samples: Float[Array, "n P"],
    log_weights: Float[Array, " n"],
    num_resampled: int,
) -> Float[Array, "m P"]:
    """Multinomial resampling with replacement, probabilities proportional to w."""
    index = jax.random.categorical(key, log_weights, shape=(num_resampled,))
    return samples[index]


def importance_sample(
    sample_and_log_prob: SampleAndLogProb,
    log_likelihood: LogDensity,
    log_prior: LogDensity,
    key: PRNGKeyArray,
    num_samples: int,
    *,
    num_resampled: int | None = None,
    efficiency_threshold: float = DEFAULT_EFFICIENCY_THRESHOLD,
) -> ImportanceSamplingResult:
    """Importance-sample the posterior of one observation from an amortized proposal.

    Args:
        sample_and_log_prob: ``(key, n) -> (theta (n, P), log q (n,))`` with theta in
            physical units and log q the proposal density in physical space (see
            :func:`posterior_proposal`).
        log_likelihood: ``theta (n, P) -> (n,)`` log p(x | theta) for the observation.
        log_prior: ``theta (n, P) -> (n,)`` log p(theta) in physical space.
        key: PRNG key (proposal draws and resampling).
        num_samples: Number of proposal draws n.
        num_resampled: Size of the resampled posterior (default n).
        efficiency_threshold: Efficiency below which a
            :class:`LowImportanceSamplingEfficiencyWarning` is issued and
            ``low_efficiency`` is set (also set when ESS < 2, i.e. a single draw
            carries the weight, whatever n is).

    Returns:
        An :class:`ImportanceSamplingResult`.

    Raises:
        ValueError: Non-positive ``num_samples``/``num_resampled``, a threshold
            outside [0, 1], or arrays of the wrong shape from the callables.
    """
    num_resampled = num_samples if num_resampled is None else num_resampled
    _check_positive_int("num_samples", num_samples)
    _check_positive_int("num_resampled", num_resampled)
    if not 0.0 <= efficiency_threshold <= 1.0:
        raise ValueError(f"efficiency_threshold must lie in [0, 1], got {efficiency_threshold!r}")
    draw_key, resample_key = jax.random.split(key)
    theta, log_q = sample_and_log_prob(draw_key, num_samples)
    theta, log_q = jnp.asarray(theta), jnp.asarray(log_q)
    log_l, log_p = jnp.asarray(log_likelihood(theta)), jnp.asarray(log_prior(theta))
    _check_shapes(theta, num_samples, log_q=log_q, log_likelihood=log_l, log_prior=log_p)
    log_w = log_importance_weights(log_l, log_p, log_q)
    if bool(jnp.any(jnp.isfinite(log_w))):
        resampled = resample(resample_key, theta, log_w, num_resampled)
    else:  # nothing to resample from: an empty posterior, not garbage indices
        resampled = jnp.zeros((0, theta.shape[1]), theta.dtype)
    return _assemble(theta, log_w, resampled, efficiency_threshold)


def _assemble(theta, log_w, resampled, threshold) -> ImportanceSamplingResult:
    n = int(log_w.shape[0])
    ess = float(effective_sample_size(log_w))
    log_z, se = log_evidence(log_w)
    if not math.isfinite(ess):  # every weight is zero
        ess = 0.0
    efficiency = ess / n
    # ESS < 2 means one draw carries (almost) all the weight: degenerate at any n.
    low = efficiency < threshold or (n > 1 and ess < 2.0)
    if low:
        warnings.warn(
            f"importance-sampling efficiency {efficiency:.3%} is below the threshold "
            f"{threshold:.3%} (ESS {ess:.1f} of {n} draws): the amortized posterior is "
            "unreliable for this observation",
            LowImportanceSamplingEfficiencyWarning,
            stacklevel=3,
        )
    normalized = jnp.exp(log_w - logsumexp(log_w)) if ess > 0 else jnp.zeros_like(log_w)
    return ImportanceSamplingResult(
        samples=np.asarray(theta), log_weights=np.asarray(log_w),
        normalized_weights=np.asarray(normalized), resampled=np.asarray(resampled),
        effective_sample_size=ess, sampling_efficiency=efficiency,
        log_evidence=float(log_z), log_evidence_standard_error=float(se),
        num_samples=n, num_invalid=int(np.sum(~np.isfinite(np.asarray(log_w)))),
        efficiency_threshold=float(threshold), low_efficiency=bool(low),
    )


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_shapes(theta, n, **vectors) -> None:
    if theta.ndim != 2 or theta.shape[0] != n:
        raise ValueError(f"proposal samples must have shape ({n}, P), got {theta.shape}")
    for name, vector in vectors.items():
        if vector.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {vector.shape}")


# ---------------------------------------------------------------------------- adapters
def posterior_proposal(posterior: Any, observation: Any) -> SampleAndLogProb:
    """Turn an amortized posterior into a physical-space proposal for one observation.

    Uses ``posterior.sample_and_log_prob`` when the backend has it (flow matching:
    draws and densities from one ODE solve), else ``sample_posterior`` followed by
    ``log_prob``; either way the draws and log-densities are converted to physical
    units with the exact log-Jacobian (``posterior.to_physical``).

    Args:
        posterior: A :class:`~sbi_core.posterior_base.PersistentPosteriorEstimator`.
        observation: The encoded observation (``posterior.encode_observation``).

    Returns:
        ``(key, n) -> (theta (n, P) physical, log q (n,) physical)``.
    """

    def sample_and_log_prob(key: PRNGKeyArray, n: int) -> tuple[Array, Array]:
        seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
        if callable(getattr(posterior, "sample_and_log_prob", None)):
            draws = posterior.sample_and_log_prob(observation, n, seed=seed)
        else:
            draws = posterior.sample_posterior(observation, n, seed=seed)
            if draws.log_probabilities is None:
                log_q = np.asarray(posterior.log_prob(observation, draws.samples))
                draws = dataclasses.replace(draws, log_probabilities=log_q)
        physical = posterior.to_physical(draws)
        return jnp.asarray(physical.samples), jnp.asarray(physical.log_probabilities)

    return sample_and_log_prob


def task_log_likelihood(task: Any, observation: Any) -> LogDensity:
    """Row-wise ``log p(observation | theta)`` of an SBITask, jitted and vmapped over theta.

    Raises:
        ValueError: If the task exposes no likelihood.
    """
    if getattr(task, "likelihood", None) is None:
        raise ValueError(f"task {getattr(task, 'name', task)!r} exposes no likelihood; "
                         "importance sampling needs one")
    normalized = task.normalize_observation(observation)
    return jax.jit(jax.vmap(lambda theta: task.likelihood(theta, normalized)))


def task_log_prior(task: Any) -> LogDensity:
    """Row-wise prior log-density of an SBITask in physical units."""
    return lambda theta: task.transform.log_prior(theta, "physical")


def importance_sample_posterior(
    posterior: Any,
    encoded_observation: Any,
    task: Any,
    observation: Any,
    key: PRNGKeyArray,
    num_samples: int,
    **kwargs: Any,
) -> ImportanceSamplingResult:
    """Importance-sample a trained posterior against a task's likelihood and prior.

    Args:
        posterior: Trained posterior (flow or flow matching).
        encoded_observation: ``posterior.encode_observation(blocks)``.
        task: The SBITask that produced the training data (likelihood and prior).
        observation: The same observation in a form ``task.normalize_observation``
            accepts (e.g. the list of ObservationBlock).
        key: PRNG key.
        num_samples: Proposal draws.
        **kwargs: ``num_resampled``, ``efficiency_threshold`` of :func:`importance_sample`.

    Returns:
        The :class:`ImportanceSamplingResult` (physical units).
    """
    return importance_sample(
        posterior_proposal(posterior, encoded_observation), task_log_likelihood(task, observation),
        task_log_prior(task), key, num_samples, **kwargs,
    )
