"""Built-in simulators, each an :class:`sbi_core.task.SBITask`, looked up by name.

``get_task(name, **overrides)`` builds a task; overrides are the keyword arguments of the task's
factory (e.g. ``get_task("exo_transmission", noise_factor_range=(1.0, 1.0))``) and are part of
the task payload and fingerprint.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from sbi_core.simulators.exo_transmission import ExoTransmissionTask, exo_transmission
from sbi_core.simulators.gaussian_linear import GaussianLinearTask, gaussian_linear
from sbi_core.simulators.two_moons import two_moons
from sbi_core.task import SBITask

__all__ = [
    "TASK_FACTORIES",
    "UnknownTaskError",
    "available_tasks",
    "get_task",
    "gaussian_linear",
    "two_moons",
    "exo_transmission",
    "GaussianLinearTask",
    "ExoTransmissionTask",
]

TASK_FACTORIES: dict[str, Callable[..., SBITask]] = {
    "exo_transmission": exo_transmission,
    "gaussian_linear": gaussian_linear,
    "two_moons": two_moons,
}


class UnknownTaskError(KeyError):
    """A task name that is not in the registry; the message lists the available names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def available_tasks() -> tuple[str, ...]:
    """Names accepted by :func:`get_task`, sorted."""
    return tuple(sorted(TASK_FACTORIES))


def get_task(name: str, **overrides: Any) -> SBITask:
    """Build the built-in task ``name``.

    Args:
        name: one of :func:`available_tasks`.
        **overrides: keyword arguments of the task's factory.

    Raises:
        UnknownTaskError: ``name`` is not a built-in task (lists the available names).
        ValueError: an override is not a keyword of that task's factory, or has a bad value.
    """
    if name not in TASK_FACTORIES:
        raise UnknownTaskError(f"unknown task {name!r}; available tasks: {', '.join(available_tasks())}")
    factory = TASK_FACTORIES[name]
    allowed = tuple(inspect.signature(factory).parameters)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(
            f"task {name!r} has no option(s) {unknown}; allowed: {list(allowed) or 'none'}"
        )
    return factory(**overrides)
