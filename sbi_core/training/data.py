"""Training data sources: whole splits on device, or batches streamed from a store.

Observations are any JAX pytree whose leaves have the batch axis first (in the project a
``PreStackedObservations``; a plain dict of arrays works too). Parameters are ``(N, P)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from jaxtyping import Array, Float

PyTree = Any
PrepareFn = Callable[[np.ndarray, PyTree], tuple[Any, PyTree]]


def _identity_prepare(parameters: np.ndarray, observations: PyTree) -> tuple[Any, PyTree]:
    return parameters, observations


def leading_size(name: str, parameters: Any, observations: PyTree) -> int:
    """Return the shared batch size of ``parameters`` and every observation leaf.

    Args:
        name: Data-source name used in error messages.
        parameters: ``(N, P)`` array.
        observations: Pytree of arrays with leading axis ``N``.

    Returns:
        ``N``.

    Raises:
        ValueError: If ``parameters`` is not 2-D, or a leaf's leading axis differs from ``N``.
    """
    shape = np.shape(parameters)
    if len(shape) != 2:
        raise ValueError(f"{name}.parameters must have shape (N, P), got shape {shape}")
    n = shape[0]
    leaves, _ = jax.tree_util.tree_flatten_with_path(observations)
    for path, leaf in leaves:
        leaf_shape = np.shape(leaf)
        if not leaf_shape or leaf_shape[0] != n:
            raise ValueError(
                f"{name}.observations{jax.tree_util.keystr(path)} must have leading (batch) axis "
                f"{n} to match parameters, got shape {leaf_shape}"
            )
    return n


@dataclass(frozen=True)
class InMemoryData:
    """A whole, already prepared split that fits in device memory.

    Attributes:
        parameters: ``(N, P)`` parameters in the space the loss expects.
        observations: Pytree of ``(N, ...)`` arrays (e.g. ``PreStackedObservations``).
    """

    parameters: Float[Array, "n p"] | np.ndarray
    observations: PyTree

    def __post_init__(self) -> None:
        if leading_size("InMemoryData", self.parameters, self.observations) < 1:
            raise ValueError("InMemoryData holds no samples (N = 0); expected N >= 1")

    @property
    def num_samples(self) -> int:
        """Number of samples ``N``."""
        return int(np.shape(self.parameters)[0])

    def on_device(self) -> tuple[Array, PyTree]:
        """Return ``(parameters, observations)`` transferred to the default device once."""
        return jax.device_put((self.parameters, self.observations))

    @classmethod
    def from_store(cls, store: Any, split: str, prepare: PrepareFn | None = None) -> InMemoryData:
        """Read a whole split of a simulation store and prepare it.

        Args:
            store: Object with ``read(split) -> (parameters, observations)`` (``SimulationStore``).
            split: ``"train"``, ``"validation"``, ``"test"`` or ``"all"``.
            prepare: Maps raw ``(parameters, observations)`` to the model's inputs (space
                transform, preprocessing); identity when None.

        Returns:
            The prepared split.
        """
        parameters, observations = store.read(split)
        return cls(*(prepare or _identity_prepare)(parameters, observations))


@dataclass(frozen=True)
class StreamingData:
    """Batches streamed from a store that does not fit in memory.

    Attributes:
        store: Object with ``iter_batches(split, batch_size, shuffle, seed, drop_last)`` yielding
            batches with ``.parameters`` and ``.observations`` (``PosteriorBatch``).
        split: The store split to read.
        prepare: Maps a raw batch's ``(parameters, observations)`` to the model's inputs.
    """

    store: Any
    split: str = "train"
    prepare: PrepareFn = field(default=_identity_prepare)

    def __post_init__(self) -> None:
        if not callable(getattr(self.store, "iter_batches", None)):
            raise ValueError(
                f"StreamingData.store must provide iter_batches(split, batch_size, shuffle, seed, "
                f"drop_last), got {type(self.store).__name__}"
            )

    def batches(
        self, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool, prefetch: int = 2,
        place: Callable[[Any], Any] | None = None,
    ) -> Iterator[tuple[Any, PyTree]]:
        """Yield prepared ``(parameters, observations)`` batches on the default device.

        Reading, preparing and transferring run ``prefetch`` batches ahead in a background
        thread, so store I/O overlaps the compiled steps (0 = no thread). ``place`` replaces the
        default ``jax.device_put`` (data-parallel training places batches sharded).
        """
        put = jax.device_put if place is None else place
        def produce() -> Iterator[tuple[Any, PyTree]]:
            for batch in self.store.iter_batches(
                self.split, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last
            ):
                yield put(self.prepare(batch.parameters, batch.observations))

        return prefetched(produce(), prefetch) if prefetch > 0 else produce()


_DONE = object()


def prefetched(items: Iterator[Any], size: int) -> Iterator[Any]:
    """Iterate ``items`` with up to ``size`` of them produced ahead by a daemon thread.

    An exception in the producer is re-raised in the consumer; a consumer that stops early
    (``break``, exception, garbage collection) stops the producer at its next item.

    Args:
        items: The iterator to run ahead.
        size: Maximum number of produced items waiting to be consumed (>= 1).

    Yields:
        The items of ``items``, in order.
    """
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, re-raised there
            put((_DONE, err))

    threading.Thread(target=run, daemon=True, name="sbi-prefetch").start()
    try:
        while True:
            item, err = buffer.get()
            if err is not None:
                raise err
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()


DataSource = InMemoryData | StreamingData
