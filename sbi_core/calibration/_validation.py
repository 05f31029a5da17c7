"""Input checks shared by the calibration diagnostics.

All diagnostics take plain arrays so they do not depend on the posterior classes:
``samples (B, S, P)``, ``true_parameters (B, P)``, ``log_prob_samples (B, S)``,
``log_prob_true (B,)``. The checks raise ``ValueError`` naming the array and the expected shape.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float


def as_samples_and_truth(
    samples: Float[np.ndarray, "B S P"], true_parameters: Float[np.ndarray, "B P"]
) -> tuple[np.ndarray, np.ndarray]:
    """Convert and check posterior draws against the true parameters.

    Args:
        samples: Posterior draws, one set of ``S`` draws per observation.
        true_parameters: The parameters that generated each observation.

    Returns:
        ``(samples, true_parameters)`` as float64 arrays.

    Raises:
        ValueError: On a wrong rank, mismatched ``B`` or ``P``, too few draws, or non-finite values.
    """
    samples = np.asarray(samples, dtype=np.float64)
    true_parameters = np.asarray(true_parameters, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"samples must have shape (B, S, P); got shape {samples.shape}")
    if true_parameters.ndim != 2:
        raise ValueError(
            f"true_parameters must have shape (B, P); got shape {true_parameters.shape}"
        )
    n_obs, n_samples, n_par = samples.shape
    if true_parameters.shape != (n_obs, n_par):
        raise ValueError(
            f"true_parameters must have shape (B, P) = ({n_obs}, {n_par}) to match samples "
            f"{samples.shape}; got {true_parameters.shape}"
        )
    if n_obs < 2 or n_samples < 2:
        raise ValueError(
            f"need at least 2 observations and 2 draws each; got B={n_obs}, S={n_samples}"
        )
    _check_finite("samples", samples)
    _check_finite("true_parameters", true_parameters)
    return samples, true_parameters


def as_log_probs(
    log_prob_samples: Float[np.ndarray, "B S"],
    log_prob_true: Float[np.ndarray, " B"],
    n_obs: int,
    n_samples: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Convert and check the posterior log-densities of the draws and of the true parameters.

    ``-inf`` is allowed (a point outside the support); NaN and ``+inf`` are not.
    """
    log_prob_samples = np.asarray(log_prob_samples, dtype=np.float64)
    log_prob_true = np.asarray(log_prob_true, dtype=np.float64)
    if log_prob_samples.shape != (n_obs, n_samples):
        raise ValueError(
            f"log_prob_samples must have shape (B, S) = ({n_obs}, {n_samples}); "
            f"got {log_prob_samples.shape}"
        )
    if log_prob_true.shape != (n_obs,):
        raise ValueError(
            f"log_prob_true must have shape (B,) = ({n_obs},); got {log_prob_true.shape}"
        )
    for name, arr in (("log_prob_samples", log_prob_samples), ("log_prob_true", log_prob_true)):
        bad = np.isnan(arr) | np.isposinf(arr)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name} must not contain NaN or +inf; first bad entry at {index}")
    return log_prob_samples, log_prob_true


def check_levels(levels) -> np.ndarray:
    """Check a grid of credibility levels: 1-D, strictly inside (0, 1), increasing."""
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError(f"levels must be a non-empty 1-D array; got shape {levels.shape}")
    if np.any(levels <= 0.0) or np.any(levels >= 1.0):
        raise ValueError(f"levels must lie strictly inside (0, 1); got min {levels.min()}, "
                         f"max {levels.max()}")
    if np.any(np.diff(levels) <= 0):
        raise ValueError("levels must be strictly increasing")
    return levels


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite; first non-finite entry at index {index}")
