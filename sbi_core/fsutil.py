"""Atomic directory replacement shared by the store writer and posterior persistence.

Replacing a directory with two renames (``target -> aside``, ``new -> target``) leaves a moment in
which ``target`` does not exist: a process killed there leaves neither the old directory nor the
new one at the path. On Linux ``renameat2(RENAME_EXCHANGE)`` swaps two paths in one step, so
``target`` always names a complete directory, old or new. Elsewhere (or on a file system that
does not support the flag) the two-rename fallback is used and that window remains.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM}


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically swap the existing paths ``a`` and ``b``.

    Returns:
        True when swapped; False when the platform or file system cannot do it atomically
        (nothing was changed; fall back to renames).

    Raises:
        OSError: any other failure (e.g. a path is missing).
    """
    if _RENAMEAT2 is None:
        return False
    result = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, f"renameat2(RENAME_EXCHANGE) {os.fspath(a)!r} <-> {os.fspath(b)!r}: {os.strerror(code)}")


def replace_directory(new: str | os.PathLike, target: str | os.PathLike, aside: str | os.PathLike) -> None:
    """Put directory ``new`` at ``target`` (which exists); the old ``target`` ends up at ``aside``.

    With an atomic exchange ``target`` is never missing; the caller removes ``aside`` afterwards.
    """
    if exchange_paths(new, target):
        os.rename(new, aside)  # ``new`` now names the old directory
        return
    os.rename(target, aside)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(aside, target)
        raise
