"""Posterior-predictive checks: push posterior draws through a simulator.

References:
    Gelman, Meng & Stern (1996), "Posterior predictive assessment of model fitness via realized
    discrepancies", Statistica Sinica 6.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from jaxtyping import Float

from sbi_core.calibration.reports import PosteriorPredictiveReport

Simulator = Callable[[np.ndarray], np.ndarray]
"""Maps parameters ``(n, P)`` (physical units) to predicted block values ``(n, L)``."""


def replicate_observations(
    samples: Float[np.ndarray, "B S P"],
    simulator: Simulator,
    uncertainties: Float[np.ndarray, "B L"] | None = None,
    *,
    add_noise: bool = True,
    seed: int = 0,
) -> Float[np.ndarray, "B S L"]:
    """Replicated data ``y_rep`` for every posterior draw, in one simulator call.

    Args:
        samples: Posterior draws ``(B, S, P)``.
        simulator: Batched simulator ``(n, P) -> (n, L)``, called once with ``n = B * S``.
        uncertainties: Observational 1-sigma uncertainties ``(B, L)``.
        add_noise: Add Gaussian noise with ``uncertainties`` to the simulator output (right for
            a noise-free forward model; set False when the simulator already adds noise).
        seed: Seed of the added noise.

    Returns:
        ``(B, S, L)`` replicated observations.
    """
    samples = np.asarray(samples, dtype=np.float64)
    n_obs, n_samples, n_par = samples.shape
    predicted = np.asarray(simulator(samples.reshape(-1, n_par)), dtype=np.float64)
    if predicted.ndim != 2 or predicted.shape[0] != n_obs * n_samples:
        raise ValueError(f"simulator must return shape ({n_obs * n_samples}, L) for "
                         f"{n_obs * n_samples} parameter rows; got {predicted.shape}")
    predicted = predicted.reshape(n_obs, n_samples, -1)
    if add_noise and uncertainties is not None:
        noise = np.random.default_rng(seed).standard_normal(predicted.shape)
        predicted = predicted + noise * np.asarray(uncertainties)[:, None, :]
    return predicted


def predictive_bands(
    replicated: Float[np.ndarray, "B S L"], level: float
) -> tuple[Float[np.ndarray, "B L"], Float[np.ndarray, "B L"]]:
    """Lower and upper edges of the central ``level`` predictive band per point."""
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(replicated, [tail, 100.0 - tail], axis=1)
    return low, high


def posterior_predictive_check(
    samples: Float[np.ndarray, "B S P"],
    observed: Float[np.ndarray, "B L"],
    simulator: Simulator,
    uncertainties: Float[np.ndarray, "B L"] | None = None,
    *,
    block_name: str = "spectrum",
    add_noise: bool = True,
    seed: int = 0,
) -> PosteriorPredictiveReport:
    """Fraction of observed points inside the 68/95% predictive bands and chi-square.

    Args:
        samples: Posterior draws ``(B, S, P)`` in the simulator's (physical) units.
        observed: Observed block values ``(B, L)``.
        simulator: Batched simulator ``(n, P) -> (n, L)``.
        uncertainties: Observational uncertainties ``(B, L)``; see
            :func:`replicate_observations`.
        block_name: Name of the block, recorded in the report.
        add_noise: Whether to add observational noise to the simulator output.
        seed: Seed of the added noise.

    Returns:
        A :class:`PosteriorPredictiveReport`.
    """
    replicated = replicate_observations(samples, simulator, uncertainties,
                                        add_noise=add_noise, seed=seed)
    return summarize_replicates(replicated, observed, block_name=block_name,
                                noise_added=bool(add_noise and uncertainties is not None))


def summarize_replicates(
    replicated: Float[np.ndarray, "B S L"],
    observed: Float[np.ndarray, "B L"],
    *,
    block_name: str = "spectrum",
    noise_added: bool = False,
) -> PosteriorPredictiveReport:
    """Band coverage and chi-square of observed data against replicated data.

    Args:
        replicated: Replicated observations ``(B, S, L)`` (see :func:`replicate_observations`).
        observed: Observed block values ``(B, L)``.
        block_name: Name of the block, recorded in the report.
        noise_added: Whether observational noise was added to the simulator output.

    Returns:
        A :class:`PosteriorPredictiveReport`.
    """
    observed = np.asarray(observed, dtype=np.float64)
    if observed.shape != (replicated.shape[0], replicated.shape[2]):
        raise ValueError(f"observed must have shape {(replicated.shape[0], replicated.shape[2])}"
                         f" (B, L) to match the simulator output; got {observed.shape}")
    inside = {}
    for level in (0.68, 0.95):
        low, high = predictive_bands(replicated, level)
        inside[level] = (observed >= low) & (observed <= high)
    variance = replicated.var(axis=1, ddof=1)
    chi2 = np.sum((observed - replicated.mean(axis=1)) ** 2 / np.maximum(variance, 1e-300), axis=1)
    return PosteriorPredictiveReport(
        block_name=block_name,
        num_observations=observed.shape[0],
        num_draws=replicated.shape[1],
        num_points=observed.shape[1],
        fraction_in_68=float(inside[0.68].mean()),
        fraction_in_95=float(inside[0.95].mean()),
        fraction_in_68_per_observation=inside[0.68].mean(axis=1),
        fraction_in_95_per_observation=inside[0.95].mean(axis=1),
        chi2=chi2,
        reduced_chi2=chi2 / observed.shape[1],
        noise_added=noise_added,
    )
