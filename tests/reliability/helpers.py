"""Shared helpers of the reliability tests: run a driver subprocess, draw kill points."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_driver(root, kill_at: int, scenario: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``tests.reliability.driver`` in a fresh interpreter (the process that gets killed)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    command = [sys.executable, "-m", "tests.reliability.driver", str(root), str(kill_at), scenario, *map(str, args)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def was_killed(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == -signal.SIGKILL


def kill_points(total: int, seeds, always=()) -> list[int]:
    """One kill point per seed, uniform over ``[1, total]``, plus the ``always`` points (sorted, unique)."""
    points = {random.Random(seed).randint(1, total) for seed in seeds} | set(always)
    return sorted(p for p in points if 1 <= p <= total)


def counting(root, log: list | None = None):
    """Context manager: count (never kill) the file-system events under ``root`` in this process."""
    import contextlib

    from tests.reliability import faults

    @contextlib.contextmanager
    def manager():
        uninstall = faults.install(str(root), 0, log)
        try:
            yield faults
        finally:
            total = faults.count()
            uninstall()
            faults._STATE["count"] = total

    return manager()


def run_many(jobs, workers: int = 2):
    """Run driver jobs ``[(root, kill_at, scenario, *args), ...]`` two at a time; results in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_driver(*job), jobs))
