"""Local sensitivity: which input elements (e.g. wavelengths) drive which parameter.

Each element ``l`` of one observation block is perturbed by its own uncertainty ``sigma_l``
(one element at a time) and the change of the posterior mean is recorded. Central differences
``(m(x + sigma_l e_l) - m(x - sigma_l e_l)) / 2`` cancel the second-order term. The posterior-mean
callable should use common random numbers (the same seed for every row), otherwise Monte-Carlo
noise of the means swamps the small shifts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from jaxtyping import Float

from sbi_core.calibration.reports import LocalSensitivityPointReport, LocalSensitivityReport

PosteriorMeanFn = Callable[[np.ndarray], np.ndarray]
"""Maps a batch of observations ``(n, L)`` of one block to posterior means ``(n, P)``."""


def _batched_means(fn: PosteriorMeanFn, batch: np.ndarray, batch_size: int, n_par: int):
    means = [np.asarray(fn(batch[i:i + batch_size]), dtype=np.float64)
             for i in range(0, batch.shape[0], batch_size)]
    out = np.concatenate(means, axis=0)
    if out.shape != (batch.shape[0], n_par):
        raise ValueError(f"posterior_mean_fn must return shape (n, P) = "
                         f"({batch.shape[0]}, {n_par}); got {out.shape}")
    return out


def local_sensitivity(
    values: Float[np.ndarray, " L"],
    uncertainties: Float[np.ndarray, " L"],
    posterior_mean_fn: PosteriorMeanFn,
    *,
    parameter_names: tuple[str, ...] | list[str],
    coordinates: Float[np.ndarray, " L"] | None = None,
    baseline_std: Float[np.ndarray, " P"] | None = None,
    block_name: str = "spectrum",
    symmetric: bool = True,
    batch_size: int = 256,
) -> LocalSensitivityReport:
    """Shift of the posterior mean when each element is perturbed by its uncertainty.

    Args:
        values: The observed block ``(L,)``.
        uncertainties: Its 1-sigma uncertainties ``(L,)``, the perturbation sizes.
        posterior_mean_fn: Batched posterior mean ``(n, L) -> (n, P)``.
        parameter_names: Names of the ``P`` parameters.
        coordinates: Optional coordinates ``(L,)`` (wavelengths) recorded per point.
        baseline_std: Posterior sd ``(P,)`` at ``values``, to express shifts in sd units.
        block_name: Name of the perturbed block.
        symmetric: Central differences (2 L + 1 evaluations) instead of forward (L + 1).
        batch_size: Observations per call of ``posterior_mean_fn``.

    Returns:
        A :class:`LocalSensitivityReport` with one point per element.
    """
    values = np.asarray(values, dtype=np.float64)
    sigma = np.asarray(uncertainties, dtype=np.float64)
    if values.ndim != 1 or sigma.shape != values.shape:
        raise ValueError(f"values and uncertainties must be 1-D of equal length; got "
                         f"{values.shape} and {sigma.shape}")
    n_par, length = len(parameter_names), values.size
    steps = np.diag(sigma)
    batch = [values[None, :], values + steps] + ([values - steps] if symmetric else [])
    means = _batched_means(posterior_mean_fn, np.concatenate(batch), batch_size, n_par)
    baseline, plus = means[0], means[1:1 + length]
    shift = (plus - means[1 + length:]) / 2.0 if symmetric else plus - baseline
    std = None if baseline_std is None else np.asarray(baseline_std, dtype=np.float64)
    points = tuple(
        LocalSensitivityPointReport(
            element_index=i,
            coordinate=None if coordinates is None else float(coordinates[i]),
            perturbation=float(sigma[i]),
            mean_shift=shift[i],
            normalised_shift=None if std is None else shift[i] / std,
        )
        for i in range(length)
    )
    return LocalSensitivityReport(tuple(parameter_names), block_name, baseline, std,
                                  symmetric, points)
