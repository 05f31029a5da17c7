"""Errors raised when a posterior or store meets a task or observation it was not built for."""

from __future__ import annotations

from collections.abc import Iterable


class TaskCompatibilityError(ValueError):
    """An observation, store or task does not match the schema a model or store expects.

    The message lists every problem found (not only the first), each naming the block or field,
    what was expected and what was found, so a user can fix them all in one go.
    """

    def __init__(self, context: str, problems: Iterable[str]) -> None:
        self.context = context
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__(compatibility_message(context, self.problems))


def compatibility_message(context: str, problems: Iterable[str]) -> str:
    """Format a multi-problem compatibility message.

    Args:
        context: What was being checked, e.g. ``"observation 3 against the model's schema"``.
        problems: One sentence per problem, each naming the block/field, expected and found.

    Returns:
        A message of the form ``"<context>: <n> problem(s):\\n  - ...``.
    """
    items = list(problems)
    if not items:
        return f"{context}: incompatible"
    noun = "problem" if len(items) == 1 else "problems"
    lines = "\n".join(f"  - {p}" for p in items)
    return f"{context}: {len(items)} {noun}:\n{lines}"
