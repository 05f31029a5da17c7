"""Streamed dataset statistics: duplicate samples, dead features, KS test against the prior.

Each tracker sees the store one chunk at a time and keeps bounded state: 8 bytes per sample for
duplicates, two floats per feature for dead features, a fixed histogram per parameter for KS.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from scipy import stats

from validation.manifest import ParameterEntry
from validation.report import FailureCollector

KS_BINS = 1 << 16  # histogram resolution of the streamed KS statistic: error <= 1 / KS_BINS


class DuplicateTracker:
    """Finds samples whose parameters and observations are byte-identical to an earlier one."""

    def __init__(self, n_samples: int) -> None:
        self._digests = np.zeros(n_samples, dtype=np.uint64)
        self._seen = np.zeros(n_samples, dtype=bool)

    def update(self, start: int, arrays: list[np.ndarray]) -> None:
        """Hash rows ``start .. start + len`` of the given (rows, ...) arrays."""
        rows = arrays[0].shape[0]
        flat = [np.ascontiguousarray(a).reshape(rows, -1).view(np.uint8) for a in arrays]
        data = np.concatenate(flat, axis=1) if len(flat) > 1 else flat[0]
        digests = [hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in data]
        self._digests[start:start + rows] = np.frombuffer(b"".join(digests), dtype=np.uint64)
        self._seen[start:start + rows] = True

    def report(self, out: FailureCollector) -> int:
        """Record duplicates (every sample after the first of its group); return their count."""
        idx = np.flatnonzero(self._seen)
        order = idx[np.argsort(self._digests[idx], kind="stable")]
        sorted_digests = self._digests[order]
        later = np.flatnonzero(sorted_digests[1:] == sorted_digests[:-1]) + 1
        if later.size == 0:
            return 0
        # The first member of each run of equal digests is the original a duplicate repeats.
        run_start = np.maximum.accumulate(
            np.where(np.r_[True, sorted_digests[1:] != sorted_digests[:-1]],
                     np.arange(order.size), 0))
        dupes = order[later]
        first = order[run_start[later]]
        pairs = sorted(zip(dupes.tolist(), first.tolist()))
        out.add_indexed("duplicate_samples", "<store>", "sample identical (parameters and "
                        "observations) to an earlier sample", [d for d, _ in pairs],
                        expected="distinct samples",
                        found=f"sample {pairs[0][0]} == sample {pairs[0][1]}")
        return len(pairs)


class DeadFeatureTracker:
    """Streamed per-feature min/max of one block's valid, finite values."""

    def __init__(self, path: str, length: int) -> None:
        self.path = path
        self._min = np.full(length, np.nan)
        self._max = np.full(length, np.nan)
        self._count = 0

    def update(self, values: np.ndarray, valid: np.ndarray | None) -> None:
        """Fold a (rows, L) chunk into the running extremes (NaN, inf and masked ignored)."""
        keep = np.isfinite(values) if valid is None else np.isfinite(values) & valid
        clean = np.where(keep, values, np.nan)
        self._min = np.fmin(self._min, np.fmin.reduce(clean, axis=0))
        self._max = np.fmax(self._max, np.fmax.reduce(clean, axis=0))
        self._count += values.shape[0]

    def report(self, out: FailureCollector) -> int:
        """Record constant features; return how many."""
        if self._count < 2:
            return 0
        dead = np.flatnonzero(self._min == self._max)
        if dead.size:
            out.add_indexed("dead_features", self.path, "feature constant over all samples",
                            dead, expected="min < max over samples",
                            found=f"feature {dead[0]} always {self._min[dead[0]]}",
                            index_kind="feature")
        return int(dead.size)


class PriorKSTracker:
    """Streamed one-sample KS test of each parameter column against its prior's CDF.

    The CDF values ``u = F(x)`` of the in-support samples are histogrammed into ``KS_BINS``
    bins; ``max_k |C_k / n - k / KS_BINS|`` over bin edges is a lower bound of the exact KS
    statistic (and the exact one is at most ``1 / KS_BINS`` larger). Testing the lower bound
    keeps the test conservative: a store is only flagged when even it is implausible.
    """

    def __init__(self, entries: list[ParameterEntry]) -> None:
        self.entries = entries
        self._hist = np.zeros((len(entries), KS_BINS), dtype=np.int64)

    def update(self, params: np.ndarray) -> None:
        """Fold a (rows, P) chunk of physical parameters into the histograms."""
        for j, entry in enumerate(self.entries):
            x = params[:, entry.index].astype(np.float64)
            low, high = entry.prior.support
            x = x[np.isfinite(x) & (x >= low) & (x <= high)]
            u = entry.prior.cdf(x)
            bins = np.clip((u * KS_BINS).astype(np.int64), 0, KS_BINS - 1)
            self._hist[j] += np.bincount(bins, minlength=KS_BINS)

    def report(self, out: FailureCollector, alpha: float) -> dict[str, Any]:
        """Record parameters whose p-value is below ``alpha``; return per-parameter numbers."""
        results = {}
        edges = np.arange(KS_BINS + 1) / KS_BINS
        for j, entry in enumerate(self.entries):
            n = int(self._hist[j].sum())
            if n == 0:
                continue
            ecdf = np.r_[0, np.cumsum(self._hist[j])] / n
            d = float(np.max(np.abs(ecdf - edges)))
            p = float(stats.kstwo.sf(d, n))
            results[entry.name] = {"n": n, "ks_statistic": d,
                                   "ks_statistic_upper": d + 1 / KS_BINS, "p_value": p}
            if p < alpha:
                out.add("prior_ks", f"parameters (column {entry.index}, {entry.name!r})",
                        f"empirical distribution implausible under the declared "
                        f"{entry.prior.kind} prior (KS statistic {d:.4g}, p = {p:.3g} < "
                        f"alpha = {alpha:g}, n = {n})",
                        expected=f"p >= {alpha:g}", found=f"p = {p:.3g}")
        return results
