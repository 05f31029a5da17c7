"""``two_moons``: the sbibm two-moons benchmark with its exact likelihood and posterior sampler.

Simulator (sbibm): ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)``,
``p = (r cos a + 0.25, r sin a)``, ``x = p + (-|t1 + t2| / sqrt2, (-t1 + t2) / sqrt2)``.
Prior ``U([-1, 1]^2)``; one ``auxiliary`` block ``x`` of length 2 without uncertainties.

Likelihood: with ``x' = x - offset(theta) - (0.25, 0)`` in polar coordinates ``(r, a)``, the map
``(r, a) -> x'`` has Jacobian ``r``, so ``p(x | theta) = N(r; 0.1, 0.01^2) / (pi r)`` when the
angle lies in ``(-pi/2, pi/2)`` (``x'_1 > 0``) and 0 otherwise. (``r < 0`` draws, 10 sigma away,
are ignored.)

Reference posterior (exact): ``theta -> offset(theta)`` is an isometry on each half-plane
``t1 + t2 >= 0`` and ``t1 + t2 < 0``, so ``p(theta | x)`` restricted to a half-plane is the
density of ``x - p`` for a fresh noise draw ``p``. We draw ``p`` from the simulator's noise,
pick a branch with probability 1/2, invert the offset, and reject draws outside the prior box
(or with no preimage). The result is proportional to ``likelihood x prior``.

References:
    Greenberg, Nonnenmacher & Macke (2019), "Automatic posterior transformation", ICML;
    Lueckmann et al. (2021), "Benchmarking simulation-based inference", AISTATS (sbibm).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from sbi_core.observation import ObservationModality
from sbi_core.priors import UniformPrior
from sbi_core.task import NoiseModelConfig, ObservationBlockSpec, ObservationSchema, ParameterSpec, SBITask

__all__ = ["two_moons", "two_moons_log_likelihood", "two_moons_posterior_sample"]

VERSION = "1.0"
R_MEAN, R_STD, X_SHIFT = 0.1, 0.01, 0.25
SQRT2 = math.sqrt(2.0)


def _offset(theta: Float[Array, "*b 2"]) -> Float[Array, "*b 2"]:
    t1, t2 = theta[..., 0], theta[..., 1]
    return jnp.stack([-jnp.abs(t1 + t2) / SQRT2, (-t1 + t2) / SQRT2], axis=-1)


def _simulate_one(key: PRNGKeyArray, theta: Float[Array, " 2"]) -> dict:
    ka, kr = jax.random.split(key)
    a = jax.random.uniform(ka, (), theta.dtype, -math.pi / 2, math.pi / 2)
    r = R_MEAN + R_STD * jax.random.normal(kr, (), theta.dtype)
    p = jnp.stack([r * jnp.cos(a) + X_SHIFT, r * jnp.sin(a)])
    return {"x": {"values": p + _offset(theta)}}


def two_moons_log_likelihood(theta: Float[Array, "*b 2"], x: Float[Array, "*b 2"]) -> Float[Array, "*b"]:
    """Exact ``log p(x | theta)``; ``-inf`` where the angle leaves ``(-pi/2, pi/2)``."""
    d = x - _offset(theta) - jnp.array([X_SHIFT, 0.0], x.dtype)
    inside = d[..., 0] > 0
    # Double-where keeps gradients finite: r is evaluated at a safe point outside the support.
    safe = jnp.where(inside[..., None], d, jnp.ones_like(d))
    r = jnp.sqrt(jnp.sum(safe**2, axis=-1))
    log_n = -0.5 * ((r - R_MEAN) / R_STD) ** 2 - math.log(R_STD * math.sqrt(2 * math.pi))
    return jnp.where(inside, log_n - jnp.log(math.pi * r), -jnp.inf)


def _proposals(key: PRNGKeyArray, x: Array, m: int) -> tuple[Array, Array]:
    """``m`` candidate posterior draws for data ``x`` and whether each is valid."""
    ka, kr, kb = jax.random.split(key, 3)
    a = jax.random.uniform(ka, (m,), x.dtype, -math.pi / 2, math.pi / 2)
    r = R_MEAN + R_STD * jax.random.normal(kr, (m,), x.dtype)
    off = x - jnp.stack([r * jnp.cos(a) + X_SHIFT, r * jnp.sin(a)], axis=-1)
    # off = (-|s| / sqrt2, d / sqrt2) with s = t1 + t2, d = t2 - t1.
    sign = jnp.where(jax.random.bernoulli(kb, 0.5, (m,)), 1.0, -1.0)
    s = -sign * SQRT2 * off[:, 0]
    d = SQRT2 * off[:, 1]
    theta = jnp.stack([(s - d) / 2, (s + d) / 2], axis=-1)
    valid = (off[:, 0] <= 0) & jnp.all(jnp.abs(theta) <= 1.0, axis=-1)
    return theta, valid


_proposals_jit = jax.jit(_proposals, static_argnums=2)


def two_moons_posterior_sample(key: PRNGKeyArray, x: Float[Array, " 2"], n: int, max_rounds: int = 1000) -> Float[Array, "n 2"]:
    """Exact posterior draws for one observation ``x`` (see the module docstring)."""
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    kept, total = [], 0
    for i in range(max_rounds):
        theta, valid = _proposals_jit(jax.random.fold_in(key, i), x, max(2 * n, 1024))
        good = np.asarray(theta)[np.asarray(valid)]
        kept.append(good)
        total += len(good)
        if total >= n:
            return jnp.asarray(np.concatenate(kept)[:n])
    raise RuntimeError(
        f"two_moons posterior sampler accepted only {total} of {n} draws after {max_rounds} rounds; "
        f"x={np.asarray(x).tolist()} is (nearly) impossible under the prior"
    )


def two_moons() -> SBITask:
    """Build the two-moons task (prior U([-1, 1]^2), block ``x`` of length 2)."""
    return SBITask(
        name="two_moons",
        version=VERSION,
        parameters=(
            ParameterSpec("theta_0", "", UniformPrior(-1.0, 1.0)),
            ParameterSpec("theta_1", "", UniformPrior(-1.0, 1.0)),
        ),
        observation_schema=ObservationSchema(
            (ObservationBlockSpec("x", ObservationModality.AUXILIARY, 2, False),)
        ),
        noise_model=NoiseModelConfig(
            "observational", {"angle": "uniform(-pi/2, pi/2)", "radius": "normal(0.1, 0.01)"}
        ),
        simulator=_simulate_one,
        likelihood=lambda theta, obs: two_moons_log_likelihood(theta, obs["x"]["values"]),
        reference_sampler=lambda key, obs, n: two_moons_posterior_sample(key, obs["x"]["values"], n),
        config={"r_mean": R_MEAN, "r_std": R_STD, "x_shift": X_SHIFT},
        description="sbibm two moons: crescent-shaped bimodal posterior",
    )
