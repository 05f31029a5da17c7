"""Staging directories of an atomic posterior save, and removal of those a killed save left.

``write_posterior_directory`` builds the new model in ``.<name>.tmp-<8 hex>`` beside the target
and moves the previous model aside to ``.<name>.old-<8 hex>`` before deleting it. A process killed
in between (SIGKILL, OOM, power loss) leaves those directories behind.

A save holds an exclusive ``flock`` on each staging directory it owns for as long as it runs; the
kernel drops the lock when the process dies, however it dies. The next save of the same target
removes a sibling only when all of these hold:

- its name is exactly ``.<target name>.tmp-<8 hex>`` or ``.<target name>.old-<8 hex>``;
- it is a real directory (not a symlink, not a file);
- its lock can be taken, i.e. no live process is writing it;
- the target exists, or no ``.old-`` sibling does: a missing target beside an ``.old-`` directory
  is the two-rename fallback's crash window (sbi_core.fsutil), where those siblings are the only
  copies of the models; they are left for a person (``load`` names them in its error).

``flock`` is advisory and local: on a network file system without lock support two hosts saving
the same target at once could remove each other's staging directory (the save then fails; the
published model is never touched).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from pathlib import Path

__all__ = ["lock_directory", "new_staging_path", "remove_stale_staging", "unlock"]

_KINDS = ("tmp", "old")


def new_staging_path(target: Path, kind: str) -> Path:
    """A fresh sibling name ``.<target name>.<kind>-<8 hex>`` (``kind`` is ``tmp`` or ``old``)."""
    if kind not in _KINDS:
        raise ValueError(f"staging kind must be one of {_KINDS}, got {kind!r}")
    return target.parent / f".{target.name}.{kind}-{uuid.uuid4().hex[:8]}"


def _pattern(target: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-[0-9a-f]{{8}}")


def lock_directory(path: Path, blocking: bool = True) -> int | None:
    """Take an exclusive ``flock`` on directory ``path``; returns the descriptor that holds it.

    Returns None when ``blocking`` is False and another open file holds the lock.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock(fd: int | None) -> None:
    """Release a lock taken by :func:`lock_directory` (None is ignored)."""
    if fd is not None:
        os.close(fd)


def _candidates(target: Path) -> list[Path]:
    pattern = _pattern(target)
    try:
        names = os.listdir(target.parent)
    except FileNotFoundError:
        return []
    paths = [target.parent / name for name in names if pattern.fullmatch(name)]
    return sorted(p for p in paths if p.is_dir() and not p.is_symlink())


def remove_stale_staging(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging siblings of ``target`` that a dead save left (rules: module docstring).

    Returns:
        The removed paths.
    """
    target = Path(target)
    candidates = _candidates(target)
    if not target.exists() and any(".old-" in p.name for p in candidates):
        return []
    removed = []
    for path in candidates:
        try:
            fd = lock_directory(path, blocking=False)
        except OSError:  # vanished meanwhile (its own writer finished), or not ours to open
            continue
        if fd is None:
            continue  # a live save is writing it
        try:
            # Removed while we hold its lock: a writer that just created it waits and then fails
            # its save cleanly instead of writing into a half-deleted directory.
            shutil.rmtree(path, ignore_errors=True)
        finally:
            unlock(fd)
        removed.append(path)
    return removed
