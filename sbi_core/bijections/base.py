"""The bijection interface and the two combinators every flow is built from.

Convention (see ``docs/contracts.md``, section "Flows"): ``forward`` maps parameters ``x`` to the
latent ``z`` (the density direction), ``inverse`` maps ``z`` back to ``x`` (the sampling
direction). Both act on one sample (vmap outside) and return ``(output, log|det J|)`` of the map
they apply, so ``forward(x)[1] == -inverse(forward(x)[0])[1]``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

Statistics = Mapping[str, Array]


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int ``>= minimum``; otherwise raise a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_float(name: str, value: object, *, low: float, high: float = math.inf,
                low_inclusive: bool = False, high_inclusive: bool = False) -> float:
    """Return ``value`` as float if it is finite and inside the stated interval, else raise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (
            value <= high if high_inclusive else value < high)
    if not ok:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be a finite number in {left}{low}, {high}{right}, got {value!r}")
    return float(value)


class AbstractBijection(eqx.Module):
    """A conditional bijection of R^D acting on one sample.

    Subclasses implement :meth:`forward` (parameters -> latent) and :meth:`inverse`
    (latent -> parameters). Both return the output and ``log|det J|`` of the map they apply.
    Bijections that carry spline statistics (for the posterior's spline regularisers) override
    :meth:`forward_with_statistics`.
    """

    @abc.abstractmethod
    def forward(self, x: Float[Array, " dim"], context: Float[Array, " context_dim"]
                ) -> tuple[Float[Array, " dim"], Float[Array, ""]]:
        """Map parameters ``x`` to latent ``z``; return ``(z, log|det dz/dx|)``."""

    @abc.abstractmethod
    def inverse(self, z: Float[Array, " dim"], context: Float[Array, " context_dim"]
                ) -> tuple[Float[Array, " dim"], Float[Array, ""]]:
        """Map latent ``z`` to parameters ``x``; return ``(x, log|det dx/dz|)``."""

    def forward_with_statistics(self, x: Float[Array, " dim"], context: Float[Array, " context_dim"]
                                ) -> tuple[Float[Array, " dim"], Float[Array, ""], Statistics]:
        """Like :meth:`forward`, plus a dict of diagnostic statistics (empty by default)."""
        z, log_det = self.forward(x, context)
        return z, log_det, {}

    def forward_batch(self, x: Float[Array, "n dim"], context: BatchContext
                      ) -> tuple[Float[Array, "n dim"], Float[Array, " n"]]:
        """:meth:`forward` over a batch of samples, with one context per sample ``(n, c)`` or
        one shared context ``(c,)``; returns ``(z, log|det|)`` of shapes ``(n, dim)``, ``(n,)``.

        The default vmaps :meth:`forward`. A family whose arithmetic vectorises better with the
        batch as the minor axis overrides it with the same values (the spline coupling).
        """
        return jax.vmap(self.forward, in_axes=(0, context_axis(context)))(x, context)

    def inverse_batch(self, z: Float[Array, "n dim"], context: BatchContext
                      ) -> tuple[Float[Array, "n dim"], Float[Array, " n"]]:
        """:meth:`inverse` over a batch of samples (see :meth:`forward_batch`)."""
        return jax.vmap(self.inverse, in_axes=(0, context_axis(context)))(z, context)


#: A batch's context: one row per sample ``(n, c)``, or one context shared by all ``(c,)``.
BatchContext = Float[Array, "n context_dim"] | Float[Array, " context_dim"] | None


def context_axis(context: BatchContext) -> int | None:
    """The vmap axis of a batch's context: 0 per sample, None when shared (or absent)."""
    return None if context is None or jnp.ndim(context) == 1 else 0


class Chain(AbstractBijection):
    """Composition of bijections: ``forward`` applies them in order, ``inverse`` in reverse.

    Attributes:
        bijections: the members, applied first to last in the forward direction.
    """

    bijections: tuple[AbstractBijection, ...]

    def __init__(self, bijections: tuple[AbstractBijection, ...] | list[AbstractBijection]):
        bijections = tuple(bijections)
        if not bijections or not all(isinstance(b, AbstractBijection) for b in bijections):
            raise ValueError("Chain needs a non-empty sequence of AbstractBijection instances")
        self.bijections = bijections

    def forward(self, x, context):
        log_det = jnp.zeros((), x.dtype)
        for bijection in self.bijections:
            x, step = bijection.forward(x, context)
            log_det = log_det + step
        return x, log_det

    def inverse(self, z, context):
        log_det = jnp.zeros((), z.dtype)
        for bijection in reversed(self.bijections):
            z, step = bijection.inverse(z, context)
            log_det = log_det + step
        return z, log_det

    def forward_batch(self, x, context):
        log_det = jnp.zeros(x.shape[:1], x.dtype)
        for bijection in self.bijections:
            x, step = bijection.forward_batch(x, context)
            log_det = log_det + step
        return x, log_det

    def inverse_batch(self, z, context):
        log_det = jnp.zeros(z.shape[:1], z.dtype)
        for bijection in reversed(self.bijections):
            z, step = bijection.inverse_batch(z, context)
            log_det = log_det + step
        return z, log_det

    def forward_with_statistics(self, x, context):
        log_det = jnp.zeros((), x.dtype)
        stats: dict[str, Array] = {}
        for bijection in self.bijections:
            x, step, member_stats = bijection.forward_with_statistics(x, context)
            log_det = log_det + step
            clash = set(stats) & set(member_stats)
            if clash:
                # Merging would silently drop one member's values; nest under Repeated instead.
                raise ValueError(f"Chain members both report statistics {sorted(clash)}; "
                                 "put repeated layers in a Repeated bijection")
            stats.update(member_stats)
        return x, log_det, stats


class Repeated(AbstractBijection):
    """``num_layers`` structurally identical bijections, stored stacked and applied by ``lax.scan``.

    Stacking the layers' weights along a leading axis and scanning compiles the layer body once
    instead of ``num_layers`` times, which cuts compile time roughly by the number of layers and
    keeps the per-sample program small.

    Attributes:
        stacked: one bijection whose array leaves carry a leading ``num_layers`` axis.
        num_layers: number of stacked layers.
    """

    stacked: AbstractBijection
    num_layers: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, num_layers: int,
                 make_layer: Callable[[PRNGKeyArray], AbstractBijection]):
        """Build the stack by vmapping ``make_layer`` over ``num_layers`` independent keys."""
        self.num_layers = check_int("num_layers", num_layers, 1)
        self.stacked = eqx.filter_vmap(make_layer)(jax.random.split(key, num_layers))

    def _scan(self, fn, value, reverse: bool):
        params, static = eqx.partition(self.stacked, eqx.is_array)

        def step(carry, layer_params):
            y, log_det = carry
            y, step_log_det, stats = fn(eqx.combine(layer_params, static), y)
            return (y, log_det + step_log_det), stats

        # One log-det per sample: () for one sample, (n,) for a batch (value of shape (n, dim)).
        init = (value, jnp.zeros(value.shape[:-1], value.dtype))
        (out, log_det), stats = jax.lax.scan(step, init, params, reverse=reverse)
        return out, log_det, stats

    def _each_layer(self, method: str, value, context, reverse: bool):
        """Apply ``method`` (``forward``, ``inverse_batch``, ...) of every layer in turn."""
        out, log_det, _ = self._scan(lambda b, y: (*getattr(b, method)(y, context), None), value, reverse)
        return out, log_det

    def forward(self, x, context):
        return self._each_layer("forward", x, context, False)

    def inverse(self, z, context):
        return self._each_layer("inverse", z, context, True)

    def forward_batch(self, x, context):
        return self._each_layer("forward_batch", x, context, False)

    def inverse_batch(self, z, context):
        return self._each_layer("inverse_batch", z, context, True)

    def forward_with_statistics(self, x, context):
        """Forward pass; each statistic gains a leading ``num_layers`` axis."""
        return self._scan(lambda b, y: b.forward_with_statistics(y, context), x, False)
