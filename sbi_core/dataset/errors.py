"""Errors of the simulation store (reading and writing)."""

from __future__ import annotations


class StoreFormatError(ValueError):
    """A store does not follow format 1.0; the message names the array or field and what was expected."""


class StoreIncompleteError(StoreFormatError):
    """A store whose writer has not finished (an interrupted simulation); re-run it to resume."""


class StoreExistsError(FileExistsError):
    """The output path already holds something and overwriting was not requested."""


class StoreLockedError(RuntimeError):
    """Another writer holds the store's lock file."""


class StorePathError(OSError):
    """The output path cannot be written (missing parent directory, no permission, not a directory)."""
