"""Create (once) the separate virtual environment that holds the PyTorch ``sbi`` peer.

The peer never shares our environment: torch and jax would fight over threads and memory, and
``sbi`` pins its own stack. ``torch==2.13.0`` is pinned because an unpinned ``torch`` resolves to a
multi-GB CUDA build; the CPU build of 2.13.0 is what this machine's package index serves.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEER_VENV = Path(__file__).resolve().parent / ".peer-venv"
PEER_REQUIREMENTS = ("torch==2.13.0", "sbi==0.27.0")


def peer_python() -> Path:
    """Return the peer environment's interpreter, creating the environment when missing."""
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    if python.exists() and stamp.exists():
        return python
    print(f"benchmarks: creating the sbi peer environment in {PEER_VENV} (about a minute)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    # The system python, not our .venv's: our venv is made by uv and carries no pip.
    subprocess.run([str(python), "-m", "ensurepip", "--upgrade"], check=True, capture_output=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS], check=True)
    stamp.write_text("\n".join(PEER_REQUIREMENTS) + "\n")
    return python


if __name__ == "__main__":
    print(peer_python())
