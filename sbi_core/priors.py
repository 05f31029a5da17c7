"""Scalar priors of the retrieval parameters: uniform, log-uniform and normal.

Every prior acts elementwise on JAX arrays and exposes what the parameter spaces
(``sbi_core.spaces``) need: the CDF (physical -> cube), its inverse, the log-density
that is the log-Jacobian of the CDF, and ``log_cdf`` / ``log_sf`` (log u and log(1 - u))
so that ``logit(u)`` is computed without rounding ``u`` to 0 or 1 in float32.

The payload of a prior is exactly the simulation-store format of ``DESIGN.md``::

    {"kind": "uniform", "low": a, "high": b}
    {"kind": "log_uniform", "low": a, "high": b}     # 0 < a < b
    {"kind": "normal", "loc": m, "scale": s}         # s > 0

Floating-point policy (float32 safe): for the bounded priors ``log_cdf`` and ``log_sf`` are
floored at ``log(finfo(dtype).tiny)`` (about -87.3 in float32), which only changes points lying
exactly on a bound of the support (or outside it), so that the logit of a sample drawn at the
bound stays finite. The normal prior uses ``log_ndtr`` and needs no floor.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

__all__ = [
    "AbstractPrior",
    "UniformPrior",
    "LogUniformPrior",
    "NormalPrior",
    "PRIOR_KINDS",
    "prior_from_payload",
]


def _as_float(x: ArrayLike) -> Array:
    """Float array in JAX's default float dtype (float32 unless x64 is enabled)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _log_floor(x: Array) -> Array:
    """Smallest log-value we keep for log u and log(1-u) (see module docstring)."""
    return jnp.log(jnp.finfo(x.dtype).tiny)


def _check_number(kind: str, field: str, value: Any) -> float:
    """A finite real number for ``field`` of a ``kind`` prior, else ValueError naming both."""
    is_real = isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, (bool, np.bool_)) or not is_real:
        raise ValueError(
            f"{kind} prior field {field!r} must be a real number, got {value!r} "
            f"({type(value).__name__})"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{kind} prior field {field!r} must be finite, got {value!r}")
    return value


class AbstractPrior(eqx.Module):
    """A prior over one scalar parameter; every method is elementwise and JAX-traceable.

    Subclasses store their hyper-parameters as static Python floats so that a prior is
    hashable, JSON-serialisable and constant-folded under ``jax.jit``.
    """

    kind: ClassVar[str]

    @property
    @abc.abstractmethod
    def support(self) -> tuple[float, float]:
        """(low, high) of the support; may be (-inf, inf)."""
        raise NotImplementedError

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Float[Array, "*shape"]:
        """Draw samples of the given shape in physical units."""
        raise NotImplementedError

    @abc.abstractmethod
    def log_prob(self, x: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
        """Log-density in physical units; ``-inf`` outside the support."""
        raise NotImplementedError

    @abc.abstractmethod
    def cdf(self, x: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
        """Physical value -> cube value u in [0, 1]."""
        raise NotImplementedError

    @abc.abstractmethod
    def icdf(self, u: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
        """Cube value -> physical value (inverse CDF)."""
        raise NotImplementedError

    @abc.abstractmethod
    def log_cdf(self, x: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
        """log u = log CDF(x), accurate where u is tiny."""
        raise NotImplementedError

    @abc.abstractmethod
    def log_sf(self, x: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
        """log(1 - u), accurate where u is close to one."""
        raise NotImplementedError

    @abc.abstractmethod
    def log_pdf_for_cdf(self, x: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
        """log |d cdf / dx|: equals ``log_prob`` inside the support, smooth and finite outside."""
        raise NotImplementedError

    @abc.abstractmethod
    def icdf_from_logit(self, y: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
        """Physical value for unconstrained ``y = logit(u)``, without rounding u to 0 or 1.

        Evaluates ``icdf`` of ``sigmoid(-|y|)`` (always <= 1/2, so never rounded to one) and
        mirrors the result into the upper half of the support.
        """
        raise NotImplementedError

    @abc.abstractmethod
    def to_payload(self) -> dict[str, Any]:
        """The DESIGN.md JSON form of this prior."""
        raise NotImplementedError


class UniformPrior(AbstractPrior):
    """Uniform prior on ``[low, high]``."""

    low: float = eqx.field(static=True)
    high: float = eqx.field(static=True)
    kind: ClassVar[str] = "uniform"

    def __init__(self, low: float, high: float):
        self.low = _check_number("uniform", "low", low)
        self.high = _check_number("uniform", "high", high)
        if not self.low < self.high:
            raise ValueError(
                f"uniform prior needs low < high, got low={self.low!r}, high={self.high!r}"
            )

    @property
    def support(self) -> tuple[float, float]:
        return (self.low, self.high)

    @property
    def width(self) -> float:
        return self.high - self.low

    def sample(self, key, shape=()):
        return jax.random.uniform(key, shape, minval=self.low, maxval=self.high)

    def log_prob(self, x):
        x = _as_float(x)
        inside = (x >= self.low) & (x <= self.high)
        return jnp.where(inside, -math.log(self.width), -jnp.inf).astype(x.dtype)

    def cdf(self, x):
        return (_as_float(x) - self.low) / self.width

    def icdf(self, u):
        return self.low + _as_float(u) * self.width

    def log_cdf(self, x):
        x = _as_float(x)
        # Distance to the lower bound is exact in floating point near ``low``.
        return jnp.maximum(jnp.log(x - self.low) - math.log(self.width), _log_floor(x))

    def log_sf(self, x):
        x = _as_float(x)
        return jnp.maximum(jnp.log(self.high - x) - math.log(self.width), _log_floor(x))

    def log_pdf_for_cdf(self, x):
        x = _as_float(x)
        return jnp.full_like(x, -math.log(self.width))

    def icdf_from_logit(self, y):
        y = _as_float(y)
        small = jax.nn.sigmoid(-jnp.abs(y))
        return jnp.where(y <= 0, self.low + small * self.width, self.high - small * self.width)

    def to_payload(self):
        return {"kind": "uniform", "low": self.low, "high": self.high}


class LogUniformPrior(AbstractPrior):
    """Log-uniform (reciprocal) prior on ``[low, high]`` with ``0 < low < high``."""

    low: float = eqx.field(static=True)
    high: float = eqx.field(static=True)
    kind: ClassVar[str] = "log_uniform"

    def __init__(self, low: float, high: float):
        self.low = _check_number("log_uniform", "low", low)
        self.high = _check_number("log_uniform", "high", high)
        if not self.low > 0:
            raise ValueError(f"log_uniform prior needs low > 0, got low={self.low!r}")
        if not self.low < self.high:
            raise ValueError(
                f"log_uniform prior needs low < high, got low={self.low!r}, high={self.high!r}"
            )

    @property
    def support(self) -> tuple[float, float]:
        return (self.low, self.high)

    @property
    def log_width(self) -> float:
        return math.log(self.high) - math.log(self.low)

    def sample(self, key, shape=()):
        logx = jax.random.uniform(key, shape, minval=math.log(self.low), maxval=math.log(self.high))
        return jnp.exp(logx)

    def log_prob(self, x):
        x = _as_float(x)
        inside = (x >= self.low) & (x <= self.high)
        safe = jnp.where(inside, x, self.low)  # keep log finite on the unused branch
        return jnp.where(inside, -jnp.log(safe) - math.log(self.log_width), -jnp.inf)

    def cdf(self, x):
        return (jnp.log(_as_float(x)) - math.log(self.low)) / self.log_width

    def icdf(self, u):
        return jnp.exp(math.log(self.low) + _as_float(u) * self.log_width)

    def log_cdf(self, x):
        x = _as_float(x)
        # log(x / low) via log1p keeps precision for x just above ``low``.
        near_low = x < math.sqrt(self.low * self.high)
        safe = jnp.where(x > 0, x, self.low)
        dist = jnp.where(
            near_low, jnp.log1p((x - self.low) / self.low), jnp.log(safe) - math.log(self.low)
        )
        return jnp.maximum(jnp.log(dist) - math.log(self.log_width), _log_floor(x))

    def log_sf(self, x):
        x = _as_float(x)
        # log(high / x): log1p form near ``high`` (no cancellation there), plain logs elsewhere.
        near_high = x > math.sqrt(self.low * self.high)
        safe = jnp.where(x > 0, x, self.low)
        dist = jnp.where(
            near_high, -jnp.log1p((x - self.high) / self.high), math.log(self.high) - jnp.log(safe)
        )
        return jnp.maximum(jnp.log(dist) - math.log(self.log_width), _log_floor(x))

    def log_pdf_for_cdf(self, x):
        x = _as_float(x)
        return -jnp.log(x) - math.log(self.log_width)

    def icdf_from_logit(self, y):
        y = _as_float(y)
        small = jax.nn.sigmoid(-jnp.abs(y))
        lo, hi = math.log(self.low), math.log(self.high)
        return jnp.exp(jnp.where(y <= 0, lo + small * self.log_width, hi - small * self.log_width))

    def to_payload(self):
        return {"kind": "log_uniform", "low": self.low, "high": self.high}


class NormalPrior(AbstractPrior):
    """Normal prior N(loc, scale^2).

    The CDF tails use ``log_ndtr`` and the inverse uses ``ndtri`` on the smaller tail
    probability only, so the cube/unconstrained transforms are accurate far into the tails
    (about +-13 sigma in float32 before ``sigmoid(-|y|)`` underflows).
    """

    loc: float = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    kind: ClassVar[str] = "normal"

    def __init__(self, loc: float, scale: float):
        self.loc = _check_number("normal", "loc", loc)
        self.scale = _check_number("normal", "scale", scale)
        if not self.scale > 0:
            raise ValueError(f"normal prior needs scale > 0, got scale={self.scale!r}")

    @property
    def support(self) -> tuple[float, float]:
        return (-math.inf, math.inf)

    def _z(self, x):
        return (_as_float(x) - self.loc) / self.scale

    def sample(self, key, shape=()):
        return self.loc + self.scale * jax.random.normal(key, shape)

    def log_prob(self, x):
        z = self._z(x)
        return -0.5 * z**2 - math.log(self.scale) - 0.5 * math.log(2 * math.pi)

    def cdf(self, x):
        return jsp.ndtr(self._z(x))

    def icdf(self, u):
        u = _as_float(u)
        finfo = jnp.finfo(u.dtype)
        # u == 0 or 1 would give -+inf; move only those to the nearest representable interior value.
        u = jnp.clip(u, finfo.tiny, 1.0 - finfo.epsneg)
        return self.loc + self.scale * jsp.ndtri(u)

    def log_cdf(self, x):
        return jsp.log_ndtr(self._z(x))

    def log_sf(self, x):
        return jsp.log_ndtr(-self._z(x))

    def log_pdf_for_cdf(self, x):
        return self.log_prob(x)

    def icdf_from_logit(self, y):
        y = _as_float(y)
        finfo = jnp.finfo(y.dtype)
        small = jnp.maximum(jax.nn.sigmoid(-jnp.abs(y)), finfo.tiny)
        t = jsp.ndtri(small)  # <= 0, the lower-tail quantile
        return self.loc - jnp.sign(y) * self.scale * t

    def to_payload(self):
        return {"kind": "normal", "loc": self.loc, "scale": self.scale}


PRIOR_KINDS: dict[str, tuple[type[AbstractPrior], tuple[str, ...]]] = {
    "uniform": (UniformPrior, ("low", "high")),
    "log_uniform": (LogUniformPrior, ("low", "high")),
    "normal": (NormalPrior, ("loc", "scale")),
}


def prior_from_payload(payload: Mapping[str, Any]) -> AbstractPrior:
    """Build a prior from its DESIGN.md payload.

    Args:
        payload: ``{"kind": ..., <fields>}`` as written by :meth:`AbstractPrior.to_payload`.

    Returns:
        The prior.

    Raises:
        ValueError: naming the unknown kind, the missing or unexpected field, or the invalid
            value (non-finite number, ``low >= high``, ``low <= 0`` for log_uniform,
            ``scale <= 0``).
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"prior payload must be a mapping, got {type(payload).__name__}")
    if "kind" not in payload:
        raise ValueError(f"prior payload {dict(payload)!r} has no 'kind' field")
    kind = payload["kind"]
    if kind not in PRIOR_KINDS:
        raise ValueError(
            f"unknown prior kind {kind!r}; expected one of {sorted(PRIOR_KINDS)}"
        )
    cls, fields = PRIOR_KINDS[kind]
    missing = [f for f in fields if f not in payload]
    if missing:
        raise ValueError(f"{kind} prior payload is missing field(s) {missing}; expected {list(fields)}")
    extra = sorted(set(payload) - set(fields) - {"kind"})
    if extra:
        raise ValueError(f"{kind} prior payload has unexpected field(s) {extra}; expected {list(fields)}")
    return cls(*(payload[f] for f in fields))
