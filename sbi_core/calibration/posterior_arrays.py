"""Draw the calibration arrays from a trained posterior on held-out simulations.

Bridges the posterior API (``batch_encode_observation``, ``batch_sample_posterior``,
``log_prob``; see ``shared/reference/posterior-api.rst``) and the array-based diagnostics. The
posterior is duck-typed so that this module does not import the posterior classes. Sampling is
batched (one vmapped call per chunk of observations, never a loop of single draws); the
log-densities need one ``log_prob`` call per observation (the API evaluates one context at a time).

Everything returned is in physical units: draws are mapped with the posterior's
``parameter_transform`` and log-densities converted with the exact log-Jacobian,
``log q_phys(y) = log q_space(x) - log|dy/dx|``, so HPD regions are those of the physical-unit
density.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float


@dataclass(frozen=True)
class CalibrationArrays:
    """Inputs of :func:`sbi_core.calibration.run_calibration`, in physical units.

    Attributes:
        samples: Posterior draws ``(B, S, P)``.
        true_parameters: True parameters ``(B, P)``.
        log_prob_samples: Log-density of the draws ``(B, S)``, or None.
        log_prob_true: Log-density of the truths ``(B,)``, or None.
        sampling_seconds: Wall time of encoding + sampling (not the log-densities).
    """

    samples: np.ndarray
    true_parameters: np.ndarray
    log_prob_samples: np.ndarray | None
    log_prob_true: np.ndarray | None
    sampling_seconds: float


def blocks_from_stacked(schema: Any, observations: Any) -> list[list[Any]]:
    """Per-observation ``ObservationBlock`` lists from a numpy ``PreStackedObservations``."""
    from sbi_core.observation import build_observation_blocks_from_sample

    n = observations.batch_size
    out = []
    for i in range(n):
        sample = {}
        for spec in schema.blocks:
            row = {"values": np.asarray(observations.values[spec.name][i])}
            if spec.name in observations.uncertainties:
                row["uncertainties"] = np.asarray(observations.uncertainties[spec.name][i])
            if spec.name in observations.masks:
                row["mask"] = np.asarray(observations.masks[spec.name][i])
            sample[spec.name] = row
        out.append(build_observation_blocks_from_sample(schema, sample))
    return out


@functools.cache
def compiled_parameter_ops() -> dict[str, Any]:
    """Compiled transform / prior sampler, built once (keeps ``import`` free of JAX).

    ``eqx.filter_jit`` traces arrays and treats the strings and sizes as static, so repeated
    calls with the same priors and batch shape reuse one compilation.
    """
    import equinox as eqx

    return {
        "transform": eqx.filter_jit(
            lambda t, x, source, target: t.transform_and_log_det(x, source, target)),
        "sample_prior": eqx.filter_jit(lambda t, key, n: t.sample_prior(key, n, "physical")),
    }


def _to_space(posterior: Any, x: np.ndarray, source: str, target: str):
    """Map ``x (n, P)`` between spaces; returns ``(y, log|dy/dx|)`` (identity when equal).

    The transform runs as one compiled call: eager JAX would compile every primitive of the
    prior CDFs separately, which costs seconds per new batch shape.
    """
    if source == target:
        return x, np.zeros(x.shape[0])
    transform = posterior.parameter_transform
    if transform is None:
        raise ValueError(f"the posterior samples in {source!r} space but has no parameter priors "
                         "to convert to physical units")
    y, log_det = compiled_parameter_ops()["transform"](transform, x, source, target)
    return np.asarray(y, dtype=np.float64), np.asarray(log_det, dtype=np.float64)


def _log_probs(posterior, encoded, samples_space, log_det_samples, truth_space, log_det_truth):
    """Log-densities in physical units.

    ``log_det_*`` are ``log|d physical / d space|`` of the draws ``(B * S,)`` and truths ``(B,)``.
    """
    n_obs, n_samples, _ = samples_space.shape
    lps, lpt = np.empty((n_obs, n_samples)), np.empty(n_obs)
    for b in range(n_obs):
        both = np.concatenate([samples_space[b], truth_space[b:b + 1]])
        values = np.asarray(posterior.log_prob(encoded[b], both), dtype=np.float64).reshape(-1)
        lps[b], lpt[b] = values[:-1], values[-1]
    lps, lpt = lps - log_det_samples.reshape(n_obs, n_samples), lpt - log_det_truth
    # Non-finite densities (draws clamped at the edges of the space) sink to -inf: never inside
    # an HPD region, which is the conservative choice for coverage.
    return np.where(np.isfinite(lps), lps, -np.inf), np.where(np.isfinite(lpt), lpt, -np.inf)


def posterior_calibration_arrays(
    posterior: Any,
    true_parameters: Float[np.ndarray, "B P"],
    blocks_list: Sequence[Sequence[Any]],
    *,
    num_samples: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    with_log_prob: bool = True,
) -> CalibrationArrays:
    """Sample the posterior for every observation and evaluate the densities for calibration.

    Args:
        posterior: A trained posterior with ``batch_encode_observation``,
            ``batch_sample_posterior``, ``log_prob``, ``parameter_space`` and
            ``parameter_transform`` (the seed API).
        true_parameters: True parameters ``(B, P)`` in physical units.
        blocks_list: ``B`` lists of ``ObservationBlock`` (see :func:`blocks_from_stacked`).
        num_samples: Draws per observation ``S``.
        seed: ``base_seed`` of ``batch_sample_posterior`` (per-chunk offsets keep chunks
            independent).
        batch_size: Observations per encoding / sampling call (bounds memory).
        with_log_prob: Evaluate log-densities (needed for exact HPD coverage).

    Returns:
        :class:`CalibrationArrays` in physical units.
    """
    import time

    truth = np.asarray(true_parameters, dtype=np.float64)
    space = str(posterior.parameter_space)
    start, encoded, chunks = time.perf_counter(), [], []
    for lo in range(0, len(blocks_list), batch_size):
        enc = posterior.batch_encode_observation([list(b) for b in blocks_list[lo:lo + batch_size]])
        embeddings = np.stack([np.asarray(e.embedding, dtype=np.float32) for e in enc])
        chunks.append(np.asarray(posterior.batch_sample_posterior(
            embeddings, num_samples, base_seed=seed + lo), dtype=np.float64))
        encoded.extend(enc)
    samples_space = np.concatenate(chunks)
    seconds = time.perf_counter() - start
    n_obs, _, n_par = samples_space.shape
    samples, ld_samples = _to_space(posterior, samples_space.reshape(-1, n_par), space, "physical")
    truth_space, ld_truth_inverse = _to_space(posterior, truth, "physical", space)
    lps = lpt = None
    if with_log_prob:
        # log|d phys / d space| at the truth is minus that of the inverse map.
        lps, lpt = _log_probs(posterior, encoded, samples_space, ld_samples, truth_space,
                              -ld_truth_inverse)
    return CalibrationArrays(samples.reshape(n_obs, num_samples, n_par), truth, lps, lpt, seconds)


def posterior_mean_function(
    posterior: Any,
    blocks: Sequence[Any],
    block_name: str,
    *,
    num_samples: int = 2000,
    seed: int = 0,
):
    """A batched ``(n, L) -> (n, P)`` posterior-mean map for :func:`local_sensitivity`.

    Each row replaces the values of block ``block_name`` in ``blocks`` (one observation's
    ``ObservationBlock`` list); the other blocks stay fixed. Every row is sampled with the same
    ``base_seed`` and the posterior's per-row keys, so rows share their random numbers as far as
    the backend allows (common random numbers keep Monte-Carlo noise out of small shifts).
    Means are in physical units.
    """
    import dataclasses

    names = [b.name for b in blocks]
    if block_name not in names:
        raise ValueError(f"no block {block_name!r} in the observation; blocks: {names}")
    position = names.index(block_name)

    def mean_fn(values: np.ndarray) -> np.ndarray:
        rows = []
        for row in np.asarray(values, dtype=np.float64):
            new = list(blocks)
            new[position] = dataclasses.replace(blocks[position], values=row)
            rows.append(new)
        enc = posterior.batch_encode_observation(rows)
        embeddings = np.stack([np.asarray(e.embedding, dtype=np.float32) for e in enc])
        # One call per row on purpose: batch_sample_posterior gives every row of a batch its own
        # key, while a batch of one always gets the same key, i.e. common random numbers.
        draws = np.stack([np.asarray(posterior.batch_sample_posterior(e[None], num_samples,
                                                                      base_seed=seed))[0]
                          for e in embeddings])
        n, s, p = draws.shape
        physical, _ = _to_space(posterior, draws.reshape(-1, p), str(posterior.parameter_space),
                                "physical")
        return physical.reshape(n, s, p).mean(axis=1)

    return mean_fn
