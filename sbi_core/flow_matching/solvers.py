"""ODE solvers for flow-matching sampling and density evaluation, via diffrax.

All solvers integrate ``dy/dt = f(t, y)`` for a pytree ``y`` from ``t0`` to ``t1``
(either direction) and return only the end state. They are thin equinox modules
around :func:`diffrax.diffeqsolve` (Kidger 2021), so they jit, vmap and
differentiate like any JAX function:

- ``midpoint``: explicit midpoint rule on a fixed uniform grid (the reference
  implementation's scheme; ``integration_steps = 32`` by default).
- ``rk4``: classical fourth-order Runge-Kutta on a fixed grid (diffrax has no
  built-in classical RK4, so it is declared here as a Butcher tableau and runs
  on diffrax's explicit Runge-Kutta machinery; no hand-written stepping loop).
- ``adaptive``: Dormand-Prince 5(4) with a PID step-size controller (local
  error control by ``rtol``/``atol``; Hairer et al. 1993).
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

VectorFieldFn = Callable[[Any, PyTree], PyTree]

_RK4_TABLEAU = diffrax.ButcherTableau(
    c=np.array([0.5, 0.5, 1.0]),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    # Embedded Euler estimate; only consulted by adaptive controllers, which we
    # never pair with RK4 (it runs on a fixed grid).
    b_error=np.array([1 / 6 - 1.0, 1 / 3, 1 / 3, 1 / 6]),
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
)


class _ClassicalRK4(diffrax.AbstractERK):
    """Classical RK4 (Kutta 1901) on diffrax's explicit Runge-Kutta machinery."""

    tableau: ClassVar[diffrax.ButcherTableau] = _RK4_TABLEAU
    interpolation_cls: ClassVar[Callable[..., Any]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation.from_k
    )

    def order(self, terms):
        del terms
        return 4


def _unit_interval_term(fn: VectorFieldFn, t0: float, t1: float) -> diffrax.ODETerm:
    """Rewrite dy/dt = f(t, y) on [t0, t1] as dy/ds on s in [0, 1].

    Backward integration (t1 < t0, used by the density) then needs no special
    casing in the step-size logic: every solver always steps forward in s.
    """
    span = t1 - t0

    def term(s, y, args):
        del args
        dy = fn(t0 + s * span, y)
        return _tree_scale(dy, span)

    return diffrax.ODETerm(term)


def _tree_scale(tree: PyTree, factor) -> PyTree:
    """Multiply every leaf of ``tree`` by ``factor``."""
    return jax.tree_util.tree_map(lambda leaf: leaf * factor, tree)


class AbstractODESolver(eqx.Module):
    """An ODE integrator returning the end state of ``dy/dt = f(t, y)``."""

    @abc.abstractmethod
    def integrate(self, fn: VectorFieldFn, y0: PyTree, t0: float, t1: float) -> PyTree:
        """Integrate from ``(t0, y0)`` to ``t1`` and return ``y(t1)``."""
        raise NotImplementedError


class _FixedStepSolver(AbstractODESolver):
    """Shared fixed-grid logic: ``integration_steps`` uniform steps."""

    integration_steps: int = eqx.field(static=True)

    def __check_init__(self):
        validate_integration_steps(self.integration_steps)

    @abc.abstractmethod
    def _diffrax_solver(self) -> diffrax.AbstractSolver:
        raise NotImplementedError

    def integrate(self, fn: VectorFieldFn, y0: PyTree, t0: float, t1: float) -> PyTree:
        """Integrate on a uniform grid of ``integration_steps`` steps."""
        grid = jnp.linspace(0.0, 1.0, self.integration_steps + 1)
        solution = diffrax.diffeqsolve(
            _unit_interval_term(fn, t0, t1), self._diffrax_solver(), 0.0, 1.0, None, y0,
            stepsize_controller=diffrax.StepTo(ts=grid),
            max_steps=self.integration_steps,
            saveat=diffrax.SaveAt(t1=True),
        )
        return _tree_first(solution.ys)


class MidpointSolver(_FixedStepSolver):
    """Explicit midpoint rule, 2nd order, 2 field evaluations per step."""

    def _diffrax_solver(self) -> diffrax.AbstractSolver:
        return diffrax.Midpoint()


class RK4Solver(_FixedStepSolver):
    """Classical Runge-Kutta, 4th order, 4 field evaluations per step."""

    def _diffrax_solver(self) -> diffrax.AbstractSolver:
        return _ClassicalRK4()


class AdaptiveSolver(AbstractODESolver):
    """Dormand-Prince 5(4) with PID error control.

    Attributes:
        rtol: Relative local error tolerance.
        atol: Absolute local error tolerance.
        max_steps: Step budget; exceeding it raises at run time rather than
            returning an unconverged state.
    """

    rtol: float = eqx.field(static=True, default=1e-5)
    atol: float = eqx.field(static=True, default=1e-5)
    max_steps: int = eqx.field(static=True, default=4096)

    def __check_init__(self):
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        validate_integration_steps(self.max_steps, name="max_steps")

    def integrate(self, fn: VectorFieldFn, y0: PyTree, t0: float, t1: float) -> PyTree:
        """Integrate with adaptive steps until the local error meets rtol/atol."""
        solution = diffrax.diffeqsolve(
            _unit_interval_term(fn, t0, t1), diffrax.Dopri5(), 0.0, 1.0, None, y0,
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            max_steps=self.max_steps,
            saveat=diffrax.SaveAt(t1=True),
        )
        return _tree_first(solution.ys)


def _tree_first(tree: PyTree) -> PyTree:
    """Drop the length-1 save axis diffrax puts in front of every leaf."""
    return jax.tree_util.tree_map(lambda leaf: leaf[0], tree)


SOLVERS: dict[str, type[AbstractODESolver]] = {
    "midpoint": MidpointSolver,
    "rk4": RK4Solver,
    "adaptive": AdaptiveSolver,
}


def validate_integration_steps(steps: int, name: str = "integration_steps") -> int:
    """Return ``steps`` if it is a positive integer, else raise ValueError."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{name} must be a positive integer, got {steps!r}")
    return int(steps)


def build_solver(
    name: str,
    *,
    integration_steps: int = 32,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
) -> AbstractODESolver:
    """Build a solver from the registry by name.

    Args:
        name: ``'midpoint'``, ``'rk4'`` or ``'adaptive'``.
        integration_steps: Grid size of the fixed-step solvers.
        rtol: Relative tolerance of the adaptive solver.
        atol: Absolute tolerance of the adaptive solver.
        max_steps: Step budget of the adaptive solver.

    Returns:
        The solver module.

    Raises:
        ValueError: Unknown name (the message lists the known ones) or an invalid
            step count or tolerance.
    """
    if name not in SOLVERS:
        raise ValueError(
            f"unknown solver {name!r}; known solvers: {', '.join(sorted(SOLVERS))}"
        )
    if name == "adaptive":
        return AdaptiveSolver(rtol=rtol, atol=atol, max_steps=max_steps)
    return SOLVERS[name](integration_steps=validate_integration_steps(integration_steps))
