"""Sample-based distances between an amortized posterior and a reference posterior.

* C2ST (Lopez-Paz & Oquab 2017): accuracy of a classifier telling the two sample sets apart
  (0.5 = indistinguishable, 1.0 = disjoint), with the sbibm recipe (Lueckmann et al. 2021):
  z-score both sets with the reference's mean and sd, an MLP with two hidden layers of
  ``10 * dim`` units, adam, 5-fold cross-validated accuracy. Early stopping keeps it fast.
* Jensen-Shannon divergence per marginal, in millinats (0 = same, ln 2 = 693 = disjoint).
* Credible-interval overlap per marginal: intersection over union of the central intervals.
* Wall-time ratio: reference seconds / amortized seconds (the speed-up).

References:
    Lopez-Paz & Oquab (2017), "Revisiting Classifier Two-Sample Tests", ICLR.
    Lueckmann, Boelts, Greenberg, Goncalves & Macke (2021), "Benchmarking Simulation-Based
    Inference", AISTATS (sbibm).
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float
from scipy import stats
from sklearn.model_selection import KFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits


def _as_samples(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, P) with N >= 2; got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite")
    return x


def _pair(samples, reference) -> tuple[np.ndarray, np.ndarray]:
    samples, reference = _as_samples("samples", samples), _as_samples("reference", reference)
    if samples.shape[1] != reference.shape[1]:
        raise ValueError(f"samples have P={samples.shape[1]} but reference has "
                         f"P={reference.shape[1]}")
    return samples, reference


def c2st(
    samples: Float[np.ndarray, "N P"],
    reference: Float[np.ndarray, "M P"],
    *,
    seed: int = 0,
    n_folds: int = 5,
    max_samples: int | None = 2000,
) -> float:
    """Classifier two-sample test accuracy (Lopez-Paz & Oquab 2017; sbibm recipe).

    Args:
        samples: Draws from the posterior under test ``(N, P)``.
        reference: Draws from the reference posterior ``(M, P)``.
        seed: Seed of the sub-sampling, the folds and the classifier.
        n_folds: Cross-validation folds.
        max_samples: Use at most this many draws of each set (None: all); the classifier's cost
            grows with N and C2ST needs equal set sizes anyway.

    Returns:
        Mean cross-validated accuracy in [0, 1]; ~0.5 for identical distributions.
    """
    samples, reference = _pair(samples, reference)
    rng = np.random.default_rng(seed)
    n = min(samples.shape[0], reference.shape[0])
    n = n if max_samples is None else min(n, max_samples)
    samples = samples[rng.permutation(samples.shape[0])[:n]]
    reference = reference[rng.permutation(reference.shape[0])[:n]]
    # z-score both sets with the *reference's* statistics (sbibm), so the classifier sees the
    # same units for both and the test does not depend on the parameters' scale.
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    data = (np.concatenate([samples, reference]) - mean) / std
    labels = np.concatenate([np.zeros(n), np.ones(n)])
    width = 10 * data.shape[1]
    classifier = MLPClassifier(hidden_layer_sizes=(width, width), activation="relu",
                               solver="adam", max_iter=1000, early_stopping=True,
                               random_state=seed)
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    # One BLAS thread: the classifier's small matrices run 5-10x slower multi-threaded on a busy
    # machine (measured in the benchmark harness), and the result does not depend on it.
    with threadpool_limits(limits=1):
        scores = cross_val_score(classifier, data, labels, cv=folds, scoring="accuracy")
    return float(np.mean(scores))


def _densities_on_grid(a: np.ndarray, b: np.ndarray, method: str, n_bins: int):
    """Two normalised densities of 1-d samples on one shared grid."""
    low, high = min(a.min(), b.min()), max(a.max(), b.max())
    pad = 0.1 * (high - low) if high > low else 1.0
    if method == "histogram":
        # Both sets at one value: widen the range so the edges still increase.
        edges = np.linspace(low, high, n_bins + 1) if high > low else np.linspace(low - pad, high + pad, n_bins + 1)
        p, q = np.histogram(a, edges)[0], np.histogram(b, edges)[0]
    elif method == "kde":
        grid = np.linspace(low - pad, high + pad, 4 * n_bins)
        p, q = _kde_on_grid(a, grid), _kde_on_grid(b, grid)
    else:
        raise ValueError(f"method must be 'kde' or 'histogram'; got {method!r}")
    return p / p.sum(), q / q.sum()


def _kde_on_grid(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE of ``x`` on ``grid``; a set of identical draws is a point mass at its value.

    A degenerate set (e.g. an unconverged nested-sampling run that collapsed onto one draw) has a
    singular covariance, on which ``scipy.stats.gaussian_kde`` raises ``LinAlgError``.
    """
    if np.ptp(x) == 0:
        density = np.zeros_like(grid)
        density[np.argmin(np.abs(grid - x[0]))] = 1.0
        return density
    return stats.gaussian_kde(x)(grid)


def _kl(p: np.ndarray, m: np.ndarray) -> float:
    """KL(p || m) in nats for discrete densities with supp(p) inside supp(m) (0 log 0 = 0)."""
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / m[mask])))


def jensen_shannon_millinats(
    samples: Float[np.ndarray, "N P"],
    reference: Float[np.ndarray, "M P"],
    *,
    method: str = "kde",
    n_bins: int = 128,
) -> Float[np.ndarray, " P"]:
    """Jensen-Shannon divergence of each 1-d marginal, in millinats.

    ``JSD = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``, natural log, times 1000.
    Both densities live on one shared grid (Gaussian KDE, Scott's bandwidth, by default; a
    histogram is faster but biased upwards by roughly ``n_bins / (8 N)`` nats).

    Args:
        samples: Draws under test ``(N, P)``.
        reference: Reference draws ``(M, P)``.
        method: ``"kde"`` or ``"histogram"``.
        n_bins: Histogram bins (the KDE grid uses ``4 * n_bins`` points).

    Returns:
        ``(P,)`` divergences in millinats, in [0, 1000 ln 2].
    """
    samples, reference = _pair(samples, reference)
    out = np.empty(samples.shape[1])
    for i in range(samples.shape[1]):
        p, q = _densities_on_grid(samples[:, i], reference[:, i], method, n_bins)
        m = 0.5 * (p + q)
        out[i] = 1000.0 * 0.5 * (_kl(p, m) + _kl(q, m))
    return out


def credible_interval_overlap(
    samples: Float[np.ndarray, "N P"],
    reference: Float[np.ndarray, "M P"],
    *,
    level: float = 0.9,
) -> Float[np.ndarray, " P"]:
    """Intersection over union of the central ``level`` credible intervals per marginal.

    1 = identical intervals, 0 = disjoint. Symmetric in its arguments.
    """
    samples, reference = _pair(samples, reference)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    q = [50.0 * (1.0 - level), 100.0 - 50.0 * (1.0 - level)]
    (a_lo, a_hi), (b_lo, b_hi) = np.percentile(samples, q, axis=0), np.percentile(reference, q, axis=0)
    inter = np.clip(np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo), 0.0, None)
    union = np.maximum(a_hi, b_hi) - np.minimum(a_lo, b_lo)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)


def wall_time_ratio(reference_seconds: float, amortized_seconds: float) -> float:
    """Speed-up of the amortized posterior: reference wall time / amortized wall time."""
    if not reference_seconds >= 0 or not amortized_seconds > 0:
        raise ValueError(f"need reference_seconds >= 0 and amortized_seconds > 0; got "
                         f"{reference_seconds}, {amortized_seconds}")
    return float(reference_seconds / amortized_seconds)
