"""Find the built-in task behind a store or a saved posterior.

Stores and saved posteriors record the task's name and version, its parameters (names and
priors) and its observation blocks, but not the options the task factory was called with. A
built-in task (:func:`sbi_core.simulators.get_task`, default options unless overrides are given)
is therefore accepted only when its version, parameters and blocks (names, lengths) equal the
recorded ones: likelihood, prior and reference posterior then belong to the data the model saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sbi_core.simulators import get_task
from sbi_core.task import SBITask

__all__ = ["TaskMismatchError", "matching_builtin_task", "posterior_builtin_task"]


class TaskMismatchError(ValueError):
    """The built-in task of that name differs from the recorded task (message says how)."""


def _parameter_rows(parameters: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict]]:
    return [(str(p["name"]), dict(p["prior"])) for p in parameters]


def _block_rows(blocks: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    return [(str(b["name"]), int(b["length"])) for b in blocks]


def _first_difference(what: str, builtin: list, recorded: list) -> str | None:
    if len(builtin) != len(recorded):
        return f"the built-in task has {len(builtin)} {what}, the recorded task {len(recorded)}"
    for i, (mine, theirs) in enumerate(zip(builtin, recorded)):
        if mine != theirs:
            return f"{what} {i}: built-in {mine}, recorded {theirs}"
    return None


def matching_builtin_task(
    name: str | None,
    version: str | None,
    parameters: Sequence[Mapping[str, Any]],
    blocks: Sequence[Mapping[str, Any]],
    **overrides: Any,
) -> SBITask:
    """The built-in task ``name`` (factory ``overrides``) if it matches the recorded task.

    Args:
        name: Recorded task name.
        version: Recorded task version.
        parameters: Recorded parameters, in column order: ``{"name", "prior"}`` mappings with
            prior payloads (DESIGN.md).
        blocks: Recorded observation blocks: ``{"name", "length", ...}`` mappings.
        **overrides: Keyword arguments of the task's factory (default options when empty).

    Raises:
        UnknownTaskError: ``name`` is not a built-in task (the message lists them).
        ValueError: an override is not an option of that task's factory.
        TaskMismatchError: no name recorded, or version, parameters or blocks differ (the
            message names the first difference).
    """
    if not name:
        raise TaskMismatchError("no task name is recorded, so no built-in task can be matched")
    task = get_task(name, **overrides)
    options = f"options {overrides}" if overrides else "default options"
    prefix = f"built-in task {name!r} ({options}) does not match the recorded task: "
    if task.version != version:
        raise TaskMismatchError(prefix + f"version {task.version!r}, recorded {version!r}")
    payload = task.to_payload()
    for what, mine, theirs in (
        ("parameters", _parameter_rows(payload["parameters"]), _parameter_rows(parameters)),
        ("blocks", _block_rows(payload["blocks"]), _block_rows(blocks)),
    ):
        difference = _first_difference(what, mine, theirs)
        if difference is not None:
            raise TaskMismatchError(prefix + difference)
    return task


def posterior_builtin_task(posterior: Any, **overrides: Any) -> SBITask:
    """The built-in task a saved posterior was trained on (see :func:`matching_builtin_task`).

    Raises:
        TaskMismatchError: the posterior records no priors or observation schema, or the task
            differs; plus the errors of :func:`matching_builtin_task`.
    """
    names = list(getattr(posterior, "parameter_names", ()) or ())
    priors = list(getattr(posterior, "parameter_priors", ()) or ())
    if not priors or len(priors) != len(names):
        raise TaskMismatchError(
            f"the posterior records {len(priors)} parameter priors for {len(names)} parameters; "
            "a built-in task can only be matched when every prior is recorded"
        )
    schema = getattr(posterior, "observation_schema", None) or {}
    blocks = schema.get("blocks") if isinstance(schema, Mapping) else None
    if not blocks:
        raise TaskMismatchError("the posterior records no observation schema (was it trained?)")
    parameters = [{"name": n, "prior": p} for n, p in zip(names, priors)]
    return matching_builtin_task(posterior.task_name, posterior.task_version, parameters, blocks,
                                 **overrides)
