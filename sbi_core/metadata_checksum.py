"""The checksum sidecar of a saved posterior's ``metadata.json``: ``metadata.json.sha256``.

Weight files are covered by the SHA-256 values that ``metadata.json`` records; ``metadata.json``
itself is covered by this sidecar, written in the same atomic directory save. Its format is the
one ``sha256sum`` writes (``<64 hex digits>  metadata.json``), so ``sha256sum -c
metadata.json.sha256`` run inside the directory checks it without this library.

The sidecar catches silent corruption (bit flips, truncation, a stray editor save) and edits that
did not also rewrite the sidecar. It is not a signature: whoever can write the directory can
rewrite both files (docs/reliability.md, known limits).

A directory saved before the sidecar existed does not load; if you trust it, seal it once with
``python -m sbi_core.metadata_checksum DIRECTORY`` (or simply load it with an older release and
save it again).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

__all__ = ["SIDECAR_NAME", "sidecar_problem", "seal_directory", "sidecar_text", "write_sidecar"]

METADATA_NAME = "metadata.json"
SIDECAR_NAME = f"{METADATA_NAME}.sha256"
_LINE = re.compile(r"([0-9a-f]{64})  metadata\.json\n?")


def sidecar_text(metadata_bytes: bytes) -> str:
    """The sidecar's content for ``metadata_bytes``: one ``sha256sum`` line."""
    return f"{hashlib.sha256(metadata_bytes).hexdigest()}  {METADATA_NAME}\n"


def write_sidecar(directory: Path, metadata_bytes: bytes) -> None:
    """Write the sidecar into ``directory`` (a staging directory: the save renames it into place)."""
    (Path(directory) / SIDECAR_NAME).write_text(sidecar_text(metadata_bytes), encoding="ascii")


def sidecar_problem(directory: Path, metadata_bytes: bytes) -> str | None:
    """Why ``metadata_bytes`` (read from ``directory/metadata.json``) fails its sidecar, or None.

    Returns:
        None when the sidecar exists, is well formed and matches; otherwise one message that
        names the file and the reason.
    """
    directory = Path(directory)
    sidecar, metadata = directory / SIDECAR_NAME, directory / METADATA_NAME
    if not sidecar.is_file():
        return (f"{sidecar}: missing, so {metadata} cannot be verified (the directory was saved "
                "before sbi-ops wrote this checksum, or the file was removed). If you trust the "
                f"directory, seal it once with `python -m sbi_core.metadata_checksum {directory}`")
    try:
        match = _LINE.fullmatch(sidecar.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError):
        match = None
    if match is None:
        return f"{sidecar}: malformed (expected one line '<64 lowercase hex digits>  metadata.json')"
    actual = hashlib.sha256(metadata_bytes).hexdigest()
    if actual != match.group(1):
        return (f"{metadata}: SHA-256 checksum mismatch ({SIDECAR_NAME} records {match.group(1)}, "
                f"the file has {actual}); metadata.json was edited or corrupted after it was saved")
    return None


def seal_directory(directory: str | os.PathLike[str]) -> Path:
    """Write the sidecar of an existing directory's ``metadata.json`` (adopting a trusted directory).

    The sidecar is written to a temporary file and renamed, so a crash never leaves a torn one.

    Returns:
        The sidecar's path.

    Raises:
        FileNotFoundError: ``directory`` has no ``metadata.json``.
    """
    directory = Path(directory)
    data = (directory / METADATA_NAME).read_bytes()
    partial = directory / f".{SIDECAR_NAME}.partial"
    partial.write_text(sidecar_text(data), encoding="ascii")
    os.replace(partial, directory / SIDECAR_NAME)
    return directory / SIDECAR_NAME


def _main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m sbi_core.metadata_checksum DIRECTORY...", file=sys.stderr)
        return 2
    for argument in argv:
        print(f"wrote {seal_directory(argument)}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
