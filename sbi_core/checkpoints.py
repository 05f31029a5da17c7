"""Atomic, resumable training checkpoints (Orbax or Equinox serialisation).

A checkpoint is a set of named *groups* of arrays (each group one pytree: trainable weights,
optimiser state, best weights, RNG key data, ...) plus a JSON metadata object. Groups are stored as
their flat list of leaves; restoring needs *templates* (pytrees of the right structure, e.g. from
``eqx.partition`` and ``optimizer.init``) to rebuild the structure, so nothing is ever unpickled.

Atomicity: every save writes a complete checkpoint into a temporary directory and publishes it with
one ``rename``; older checkpoints are removed only after the new one is committed (and are first
renamed away, so a half-deleted directory never carries a committed name). A process killed at
any moment therefore leaves the previous good checkpoint loadable. Orbax provides the same
guarantee itself (temporary directory + rename on finalisation); its saves are asynchronous, so
``wait_until_finished`` is called before any read and on ``close``.

Checkpoint *steps* are a counter that only grows within a directory (``latest + 1``), so a fresh run
in a used directory never collides with, or deletes before committing over, an earlier run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from sbi_core.configs import CheckpointConfig

PyTree = Any
LOGGER = logging.getLogger(__name__)
CHECKPOINT_FORMAT_VERSION = 1
_EQX_STEP = re.compile(r"^ckpt_(\d{8})$")
_ARRAYS_FILE = "arrays.eqx"
_META_FILE = "meta.json"
_PRUNED = ".pruned"


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used (corrupt, or made for a different model/run)."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint was written for a different model, optimiser or run."""


def resolve_backend(name: str) -> str:
    """Map ``'auto'`` to ``'orbax'`` when ``orbax.checkpoint`` is importable, else ``'equinox'``.

    Args:
        name: ``'auto'``, ``'orbax'`` or ``'equinox'``.

    Returns:
        The concrete backend name.

    Raises:
        ValueError: For an unknown name, or ``'orbax'`` when Orbax is not installed.
    """
    has_orbax = importlib.util.find_spec("orbax") is not None and (
        importlib.util.find_spec("orbax.checkpoint") is not None
    )
    if name == "auto":
        return "orbax" if has_orbax else "equinox"
    if name == "orbax" and not has_orbax:
        raise ValueError("checkpoint backend 'orbax' requested but orbax-checkpoint is not installed")
    if name not in ("orbax", "equinox"):
        raise ValueError(f"checkpoint backend must be 'auto', 'orbax' or 'equinox', got {name!r}")
    return name


def flatten_groups(groups: Mapping[str, PyTree]) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Flatten each group to ``{"l0000": array, ...}`` on the host, and describe the leaves.

    Returns:
        ``(arrays, specs)`` where ``specs[group]`` lists ``[shape, dtype]`` per leaf.
    """
    arrays, specs = {}, {}
    for name, tree in groups.items():
        # np.array copies: on CPU np.asarray can alias the device buffer, which the next epoch
        # donates (overwrites) while an asynchronous Orbax save may still be reading it.
        leaves = [np.array(leaf, copy=True) for leaf in jax.tree.leaves(tree)]
        arrays[name] = {f"l{i:04d}": leaf for i, leaf in enumerate(leaves)}
        specs[name] = [[list(leaf.shape), str(leaf.dtype)] for leaf in leaves]
    return arrays, specs


def check_templates(specs: Mapping[str, list], templates: Mapping[str, PyTree], where: str) -> None:
    """Raise ``CheckpointMismatchError`` unless each stored group matches its template leaf for leaf."""
    for name, stored in specs.items():
        if name not in templates:
            raise CheckpointMismatchError(f"{where}: no template for stored group {name!r}")
        expected = [[list(np.shape(x)), str(np.asarray(x).dtype)] for x in jax.tree.leaves(templates[name])]
        if len(expected) != len(stored):
            raise CheckpointMismatchError(
                f"{where}: group {name!r} has {len(stored)} arrays, the current model/optimiser "
                f"expects {len(expected)} (was the checkpoint written for a different model?)"
            )
        for i, (got, want) in enumerate(zip(stored, expected)):
            if got != want:
                raise CheckpointMismatchError(
                    f"{where}: group {name!r} array {i} is shape/dtype {got}, expected {want}"
                )


def unflatten_groups(arrays: Mapping[str, Mapping[str, Any]], templates: Mapping[str, PyTree]) -> dict:
    """Rebuild each group's pytree from its flat leaves and the template's structure."""
    out = {}
    for name, flat in arrays.items():
        treedef = jax.tree.structure(templates[name])
        out[name] = jax.tree.unflatten(treedef, [np.asarray(flat[k]) for k in sorted(flat)])
    return out


class _EquinoxBackend:
    """Checkpoint directories ``ckpt_<step>`` written with ``eqx.tree_serialise_leaves``."""

    def __init__(self, directory: Path, max_to_keep: int) -> None:
        self.directory = directory
        self.max_to_keep = max_to_keep
        directory.mkdir(parents=True, exist_ok=True)
        self._remove_debris()

    def _remove_debris(self) -> None:
        # Leftovers of a save or a prune that was killed; never committed, safe to drop.
        for path in self.directory.glob(".tmp-*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.directory.glob(".trash-*"):
            shutil.rmtree(path, ignore_errors=True)

    def steps(self) -> list[int]:
        found = (_EQX_STEP.match(p.name) for p in self.directory.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def _step_dir(self, step: int) -> Path:
        return self.directory / f"ckpt_{step:08d}"

    def save(self, step: int, arrays: dict, metadata: dict) -> None:
        tmp = self.directory / f".tmp-ckpt_{step:08d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        eqx.tree_serialise_leaves(tmp / _ARRAYS_FILE, arrays)
        _fsync_file(tmp / _ARRAYS_FILE)
        payload = dict(metadata, arrays_sha256=_sha256(tmp / _ARRAYS_FILE))
        _write_json(tmp / _META_FILE, payload)
        _fsync_dir(tmp)
        _publish(tmp, self._step_dir(step))
        _fsync_dir(self.directory)
        self._prune()

    def _prune(self) -> None:
        for step in self.steps()[: -self.max_to_keep]:
            trash = self.directory / f".trash-ckpt_{step:08d}-{os.getpid()}"
            os.rename(self._step_dir(step), trash)
            shutil.rmtree(trash, ignore_errors=True)

    def read_metadata(self, step: int) -> dict:
        path = self._step_dir(step) / _META_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: unreadable checkpoint metadata ({err})") from err

    def read_arrays(self, step: int, metadata: dict) -> dict:
        path = self._step_dir(step) / _ARRAYS_FILE
        if not path.is_file() or _sha256(path) != metadata.get("arrays_sha256"):
            raise CheckpointError(f"{path}: missing or checksum mismatch (corrupt checkpoint)")
        return eqx.tree_deserialise_leaves(path, _zeros_like_specs(metadata["leaf_specs"]))

    def wait_until_finished(self) -> None:
        """Saves are synchronous; nothing to wait for."""

    def close(self) -> None:
        """Nothing to release."""


class _OrbaxBackend:
    """An ``orbax.checkpoint.CheckpointManager`` with an array item and a JSON item."""

    def __init__(self, directory: Path, max_to_keep: int) -> None:
        import orbax.checkpoint as ocp  # imported lazily: it costs ~1.5 s at start-up

        self._ocp = ocp
        # Retention by recency only: the best weights travel inside every checkpoint, so no
        # orbax best_fn/best_mode is needed (orbax's best_mode would default to 'max').
        # Pruned steps are renamed into _PRUNED first and deleted there (orbax alone deletes them
        # in place: a process killed mid-prune left a half-deleted step that looked committed).
        self._pruned = directory.absolute() / _PRUNED
        shutil.rmtree(self._pruned, ignore_errors=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=True,
            todelete_subdir=_PRUNED,
        )
        self._manager = ocp.CheckpointManager(
            directory.absolute(), options=options, item_names=("arrays", "meta")
        )

    def steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, step: int, arrays: dict, metadata: dict) -> None:
        ocp = self._ocp
        args = ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(metadata))
        # orbax.save waits for the previous save anyway; waiting here first lets us empty the
        # pruned-steps directory while no finalisation can be moving a step into it.
        self._manager.wait_until_finished()
        shutil.rmtree(self._pruned, ignore_errors=True)
        if not self._manager.save(step, args=args, force=True):
            raise CheckpointError(f"orbax refused to save checkpoint step {step}")

    def read_metadata(self, step: int) -> dict:
        self.wait_until_finished()
        ocp = self._ocp
        try:
            return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)
        except Exception as err:  # orbax raises many types for a damaged step
            raise CheckpointError(f"orbax checkpoint step {step}: unreadable metadata ({err})") from err

    def read_arrays(self, step: int, metadata: dict) -> dict:
        ocp = self._ocp
        target = _zeros_like_specs(metadata["leaf_specs"])
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(target))
            )
        except Exception as err:
            raise CheckpointError(f"orbax checkpoint step {step}: unreadable arrays ({err})") from err
        return restored.arrays

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
        shutil.rmtree(self._pruned, ignore_errors=True)


class Checkpointer:
    """Save and restore training checkpoints in one directory.

    Args:
        config: Directory, backend (``auto``/``orbax``/``equinox``) and retention.

    Raises:
        ValueError: If ``config.directory`` is None or the backend is unavailable.
    """

    def __init__(self, config: CheckpointConfig) -> None:
        if config.directory is None:
            raise ValueError("Checkpointer needs CheckpointConfig.directory, got None")
        self.config = config
        self.directory = Path(config.directory)
        self.backend_name = resolve_backend(config.backend)
        backend_cls = _OrbaxBackend if self.backend_name == "orbax" else _EquinoxBackend
        self._backend = backend_cls(self.directory, config.max_to_keep)
        # Counted here, not re-listed from disk: an asynchronous save in flight is not listed yet.
        self._next_step = (self.latest_step() or 0) + 1

    def latest_step(self) -> int | None:
        """The newest committed step, or None when the directory holds no checkpoint."""
        steps = self._backend.steps()
        return steps[-1] if steps else None

    def save(self, groups: Mapping[str, PyTree], metadata: Mapping[str, Any]) -> int:
        """Write a new checkpoint (asynchronously with Orbax) and return its step.

        Args:
            groups: Named pytrees of arrays (converted to host numpy here, so device buffers
                may be donated or overwritten as soon as this returns).
            metadata: JSON-serialisable run state (epoch, best metric, history, ...).

        Returns:
            The step number of the new checkpoint.
        """
        arrays, specs = flatten_groups(groups)
        step = self._next_step
        payload = dict(metadata, format_version=CHECKPOINT_FORMAT_VERSION, leaf_specs=specs)
        self._backend.save(step, arrays, json.loads(json.dumps(payload)))
        self._next_step = step + 1
        return step

    def restore_latest(self, templates: Mapping[str, PyTree]) -> tuple[dict, dict] | None:
        """Restore the newest readable checkpoint.

        A damaged newest checkpoint (which atomic writes should make impossible, short of disk
        corruption) is logged and skipped in favour of the previous one.

        Args:
            templates: Pytree per group giving the structure (and expected shapes) to rebuild.

        Returns:
            ``(groups, metadata)``, or None when there is no checkpoint.

        Raises:
            CheckpointError: If checkpoints exist but none is readable, or the newest readable one
                does not match the templates.
        """
        self._backend.wait_until_finished()
        steps = self._backend.steps()
        errors = []
        for step in reversed(steps):
            try:
                return self._restore_step(step, templates)
            except CheckpointMismatchError:
                raise  # a different model: falling back to an older step would not help
            except CheckpointError as err:
                LOGGER.warning("skipping unreadable checkpoint step %d: %s", step, err)
                errors.append(str(err))
        if errors:
            raise CheckpointError(f"no readable checkpoint in {self.directory}: {'; '.join(errors)}")
        return None

    def _restore_step(self, step: int, templates: Mapping[str, PyTree]) -> tuple[dict, dict]:
        metadata = self._backend.read_metadata(step)
        if metadata.get("format_version") != CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint step {step}: format_version {metadata.get('format_version')!r}, "
                f"expected {CHECKPOINT_FORMAT_VERSION}"
            )
        check_templates(metadata["leaf_specs"], templates, f"checkpoint step {step}")
        arrays = self._backend.read_arrays(step, metadata)
        return unflatten_groups(arrays, templates), metadata

    def wait_until_finished(self) -> None:
        """Block until pending asynchronous saves are committed."""
        self._backend.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the backend."""
        self._backend.wait_until_finished()
        self._backend.close()


def _zeros_like_specs(specs: Mapping[str, list]) -> dict[str, dict[str, np.ndarray]]:
    """Host arrays with the stored shapes/dtypes: the restore target of the flat layout."""
    return {
        name: {f"l{i:04d}": np.zeros(shape, dtype) for i, (shape, dtype) in enumerate(spec)}
        for name, spec in specs.items()
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=1, allow_nan=True)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not supported on every platform, hence best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Commit a fully written temporary checkpoint directory under its final name (atomic)."""
    os.rename(tmp, final)
