"""Fault injection for the reliability tests: SIGKILL the process at its N-th file mutation.

``install(root, kill_at)`` wraps the file-system calls a writer makes (opening a file for
writing, ``write``, ``rename``/``replace``, ``unlink``/``remove``, ``mkdir``/``rmdir``) for paths
under ``root``. Each call is one *event*; at event ``kill_at`` the process sends itself SIGKILL,
so no ``finally``, ``atexit`` or context manager runs: exactly what ``kill -9`` does. A kill that
lands on a ``write`` first writes half of the buffer and flushes it (a torn write).

Run with ``kill_at=0`` the hooks only count; ``count()`` is then the number of kill points a
scenario has, so tests can draw kill points uniformly from ``[1, count()]``. The count can differ
by a few between runs (zarr writes from a thread pool); a kill point past the end of a run
lands after its last mutation (see ``driver.py``).
"""

from __future__ import annotations

import builtins
import io
import os
import signal
import threading

_LOCK = threading.Lock()
_STATE = {"root": None, "kill_at": 0, "count": 0, "log": None}


def count() -> int:
    """Events seen so far."""
    return _STATE["count"]


def event(what: str) -> None:
    """Count one mutation made outside the file system (e.g. an SQL write); kill point like the rest."""
    if _STATE["root"] is not None:
        _event(what)


def _under_root(path, dir_fd=None) -> bool:
    if dir_fd is not None:
        return True  # fd-relative calls come from shutil.rmtree of a directory we track
    try:
        absolute = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return False
    root = _STATE["root"]
    if root is None:
        return False
    # The target itself, anything inside it, and its siblings named after it: "<root>.lock",
    # "<root>.overwrite-partial", ".<name>.tmp-*" (hidden temporaries of an atomic save), ...
    hidden = os.path.join(os.path.dirname(root), "." + os.path.basename(root))
    return absolute.startswith(root) or absolute.startswith(hidden)


def _event(what: str, torn: "_Torn | None" = None) -> None:
    with _LOCK:
        _STATE["count"] += 1
        n = _STATE["count"]
        if _STATE["log"] is not None:
            _STATE["log"].append(what)
    if n == _STATE["kill_at"]:
        if torn is not None:
            torn.tear()
        os.kill(os.getpid(), signal.SIGKILL)


class _Torn:
    def __init__(self, handle, data) -> None:
        self.handle, self.data = handle, data

    def tear(self) -> None:
        view = memoryview(self.data).cast("B")
        self.handle.write(view[: len(view) // 2])
        self.handle.flush()


class _WriteProxy:
    """A file object whose every ``write`` is a kill point."""

    def __init__(self, handle, name) -> None:
        self._handle, self._name = handle, name

    def write(self, data):
        _event(f"write {self._name}", _Torn(self._handle, data) if isinstance(data, (bytes, bytearray, memoryview)) else None)
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)

    def __getattr__(self, name):
        return getattr(self._handle, name)


def install(root: str, kill_at: int = 0, log: list | None = None):
    """Wrap the file-system calls for paths under ``root`` (and its siblings named after it).

    Returns:
        A function that removes the wrappers again (for counting runs inside pytest).
    """
    _STATE.update(root=os.path.abspath(root), kill_at=int(kill_at), count=0, log=log)
    real_open = builtins.open
    saved = {name: getattr(os, name) for name in ("rename", "replace", "unlink", "remove", "rmdir", "mkdir")}

    def open_(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and _under_root(file):
            _event(f"open {os.fsdecode(file)}")
            return _WriteProxy(handle, os.fsdecode(file))
        return handle

    builtins.open = open_
    io.open = open_
    for name in ("rename", "replace", "unlink", "remove", "rmdir", "mkdir"):
        real = getattr(os, name)

        def wrapped(path, *args, _real=real, _name=name, **kwargs):
            # A mkdir of an existing directory changes nothing (``mkdir(exist_ok=True)`` calls it
            # anyway, a varying number of times from zarr's threads): not a kill point.
            noop = _name == "mkdir" and kwargs.get("dir_fd") is None and os.path.isdir(path)
            if not noop and _under_root(path, kwargs.get("dir_fd")):
                _event(f"{_name} {os.fsdecode(path) if not isinstance(path, int) else path}")
            return _real(path, *args, **kwargs)

        setattr(os, name, wrapped)

    def uninstall() -> None:
        builtins.open = real_open
        io.open = real_open
        for name, real in saved.items():
            setattr(os, name, real)
        _STATE.update(root=None, kill_at=0)

    return uninstall
