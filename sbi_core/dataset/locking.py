"""A lock file beside a store so two writers never fill the same store."""

from __future__ import annotations

import json
import os
import socket
import time

import psutil

from sbi_core.dataset.errors import StoreLockedError


def lock_path(store_path: str) -> str:
    """The lock file of ``store_path``: ``<store_path>.lock`` (beside it, so it exists before the store)."""
    return os.fspath(store_path).rstrip("/\\") + ".lock"


class WriterLock:
    """Exclusive lock taken by creating ``<store>.lock`` with O_EXCL.

    A lock left by a dead process on this host is stale and is taken over, so a crashed (killed)
    simulation can be resumed without manual cleanup.
    """

    def __init__(self, store_path: str) -> None:
        self.path = lock_path(store_path)
        self.held = False

    def acquire(self) -> None:
        """Take the lock or raise :class:`StoreLockedError` naming the holder."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._remove_if_stale():
                    raise StoreLockedError(f"{self.path!r} exists: another writer ({self._holder()}) is writing this store; wait for it or remove the lock file if that process is gone") from None
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, f)
            self.held = True
            return
        raise StoreLockedError(f"{self.path!r}: could not take the writer lock")

    def _holder(self) -> str:
        info = self._read()
        return f"pid {info.get('pid')} on {info.get('host')}" if info else "unknown process"

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _remove_if_stale(self) -> bool:
        info = self._read()
        if not info:
            # Unreadable: a writer died between creating and filling the file, or is doing so now.
            return self._age() > 60 and self._unlink()
        pid = info.get("pid")
        if info.get("host") != socket.gethostname() or not isinstance(pid, int) or psutil.pid_exists(pid):
            return False
        return self._unlink()

    def _age(self) -> float:
        try:
            return time.time() - os.path.getmtime(self.path)
        except OSError:
            return 0.0

    def _unlink(self) -> bool:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        return True

    def release(self) -> None:
        """Remove the lock file if this object holds it."""
        if self.held:
            self.held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
