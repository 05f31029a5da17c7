"""XLA:CPU's legacy fusion emitter, for the kernels where it was measured to pay.

On CPU, XLA 0.10 generates fused elementwise code with its newer (MLIR) fusion emitters by
default. ``xla_cpu_use_fusion_emitters=False`` selects the legacy elemental emitter instead.
Measured on the two_moons bench models (2 shared cores; ``docs/decisions.md``, "XLA:CPU fusion
emitters"; ``benchmarks/NOTES.md``, section 9):

- compilation is faster for every model we train (first epoch 0.7-1.2 s shorter);
- the spline flow's epochs run faster (0.141 -> 0.114-0.121 s), the other flow families' and flow
  matching's run 3-16% slower.

So the choice is per kernel: the spline flow's training kernels take these options (via
``SBITrainer(compiler_options=...)``), and so do kernels that run a handful of times per fit and
are dominated by their compile (:func:`legacy_fusion_jit`). Everything else keeps XLA's defaults.

The options are passed per compilation, not through ``XLA_FLAGS``: a library must not change the
process-wide compiler configuration of its caller, and ``XLA_FLAGS`` only takes effect before the
backend starts. They apply only where the default backend is the CPU, only when this jaxlib
accepts them (a probe compile: later XLA releases retire the legacy emitter), and not when
``SBI_OPS_XLA_CPU_FUSION_EMITTERS=1`` asks for XLA's own defaults everywhere.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["FUSION_EMITTERS_ENV", "LEGACY_CPU_FUSION", "legacy_fusion_jit", "legacy_fusion_options"]

#: The compiler option that selects XLA:CPU's legacy fusion emitter.
LEGACY_CPU_FUSION: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}
#: Set to ``1`` to compile every kernel with XLA's default (MLIR) fusion emitters.
FUSION_EMITTERS_ENV = "SBI_OPS_XLA_CPU_FUSION_EMITTERS"


def legacy_fusion_options(**extra: Any) -> dict[str, Any]:
    """:data:`LEGACY_CPU_FUSION` where it applies (see the module docstring), merged with ``extra``.

    Returns a fresh dict, empty (apart from ``extra``) off the CPU, when opted out, or when this
    jaxlib refuses the option; ready for ``jax.jit(..., compiler_options=...)``.
    """
    return {**_applicable_options(), **extra}


@functools.cache
def _applicable_options() -> dict[str, Any]:
    if os.environ.get(FUSION_EMITTERS_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return {}
    if jax.default_backend() != "cpu" or not _accepted(LEGACY_CPU_FUSION):
        return {}
    return dict(LEGACY_CPU_FUSION)


def _accepted(options: dict[str, Any]) -> bool:
    try:
        jax.jit(jnp.negative, compiler_options=options).lower(jnp.zeros((), jnp.float32)).compile()
    except Exception:  # noqa: BLE001 - an unknown or retired option: compile with XLA's defaults
        return False
    return True


class _LegacyFusionJit:
    """The ``eqx.filter_jit`` of ``fn`` with :func:`legacy_fusion_options`, built on first call.

    Built lazily because the options depend on the default backend, which a module-level
    decorator must not start at import time.
    """

    def __init__(self, fn: Callable, jit_kwargs: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._jit_kwargs = jit_kwargs
        self._jitted: Callable | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        jitted = self._jitted
        if jitted is None:
            # Two threads may both build one; either is correct and one is kept.
            options = legacy_fusion_options()
            jitted = self._jitted = eqx.filter_jit(self._fn, compiler_options=options or None, **self._jit_kwargs)
        return jitted(*args, **kwargs)


def legacy_fusion_jit(fn: Callable | None = None, **jit_kwargs: Any) -> Any:
    """``eqx.filter_jit(fn, **jit_kwargs)`` compiled with :func:`legacy_fusion_options`.

    For kernels whose compile outweighs their run time; usable as ``@legacy_fusion_jit`` or
    ``legacy_fusion_jit(fn, donate=...)``.
    """
    if fn is None:
        return functools.partial(legacy_fusion_jit, **jit_kwargs)
    return _LegacyFusionJit(fn, jit_kwargs)
