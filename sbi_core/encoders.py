"""Observation encoders: one small network per block, fused into one context vector.

Every block of an observation enters its encoder as channels over its elements: the
(preprocessed) values, ``log`` of the (preprocessed) uncertainties when the schema has them, and
the validity mask (all ones when absent), so a missing element is visible to the network. The
block encoder is picked by name from :data:`BLOCK_ENCODERS`, one table:

* ``conv1d``: strided 1-D convolutions then an MLP head (spectra by default, time series),
* ``patch``: non-overlapping patches of ``encoder_patch_size`` elements, a shared linear patch
  embedding plus a learned position embedding, then an MLP head,
* ``mlp``: an MLP on the flattened channels (photometry, auxiliary features).

Spectra use ``EncoderConfig.spectrum_encoder_type``; time series use ``conv1d``; photometry and
auxiliary blocks use ``mlp``. Block embeddings are concatenated and fused by an MLP to
``embedding_dim`` (:class:`ObservationEmbeddingNet`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from sbi_core.configs import check_positive_int
from sbi_core.observation import ObservationEncoder, ObservationModality, PreStackedObservations

__all__ = [
    "BLOCK_ENCODERS",
    "EncoderConfig",
    "Conv1dBlockEncoder",
    "PatchBlockEncoder",
    "MLPBlockEncoder",
    "ObservationEmbeddingNet",
    "build_embedding_net",
    "encoder_name_for",
]

_LOG_UNCERTAINTY_FLOOR = 1e-6


@dataclass(frozen=True)
class EncoderConfig:
    """Observation-encoder settings (routed from the posterior constructor).

    Attributes:
        embedding_dim: Size of the fused observation embedding (the flow's context).
        hidden_dim: Width of the encoder MLPs (``encoder_hidden_dim`` or the model's hidden_dim).
        spectrum_encoder_type: Encoder of spectrum blocks: a key of :data:`BLOCK_ENCODERS`.
        n_wavelengths: Spectrum length of the default skeleton (before a store is seen).
        spectrum_embedding_dim: Output size of spectrum and time-series encoders.
        photometry_embedding_dim: Output size of photometry and auxiliary encoders.
        encoder_patch_size: Patch length of the ``patch`` encoder (only valid with it).
    """

    embedding_dim: int = 128
    hidden_dim: int = 128
    spectrum_encoder_type: str = "conv1d"
    n_wavelengths: int = 233
    spectrum_embedding_dim: int = 64
    photometry_embedding_dim: int = 64
    encoder_patch_size: int = 32

    def __post_init__(self) -> None:
        group = type(self).__name__
        for name in ("embedding_dim", "hidden_dim", "n_wavelengths", "spectrum_embedding_dim",
                     "photometry_embedding_dim", "encoder_patch_size"):
            check_positive_int(group, name, getattr(self, name))
        if self.spectrum_encoder_type not in BLOCK_ENCODERS:
            raise ValueError(
                f"{group}.spectrum_encoder_type must be one of {sorted(BLOCK_ENCODERS)}, "
                f"got {self.spectrum_encoder_type!r}"
            )
        if self.spectrum_encoder_type != "patch" and self.encoder_patch_size != 32:
            raise ValueError(
                f"{group}.encoder_patch_size={self.encoder_patch_size} only applies to "
                f"spectrum_encoder_type='patch' (got {self.spectrum_encoder_type!r}); leave it at 32"
            )


def _channels(
    values: Float[Array, " L"], uncertainties: Float[Array, " L"] | None, mask: Bool[Array, " L"] | None
) -> Float[Array, "C L"]:
    chans = [values]
    if uncertainties is not None:
        chans.append(jnp.log(jnp.maximum(uncertainties, _LOG_UNCERTAINTY_FLOOR)))
    chans.append(jnp.ones_like(values) if mask is None else mask.astype(values.dtype))
    return jnp.stack(chans)


class MLPBlockEncoder(ObservationEncoder):
    """MLP over the flattened ``(channels, length)`` input of one block, plus a linear shortcut.

    The shortcut gives the encoder a linear path from the inputs: where the posterior moves
    linearly with the observation (``gaussian_linear``), the MLP alone fitted it worse and started
    overfitting sooner (validation NLL 0.15 nats better with the shortcut, C2ST 0.607 -> 0.594).
    """

    mlp: eqx.nn.MLP
    skip: eqx.nn.Linear

    def __init__(self, in_channels: int, length: int, out_dim: int, hidden_dim: int, patch_size: int,
                 *, key: PRNGKeyArray) -> None:
        del patch_size
        k1, k2 = jax.random.split(key)
        self.mlp = eqx.nn.MLP(in_channels * length, out_dim, hidden_dim, depth=2,
                              activation=jax.nn.gelu, key=k1)
        self.skip = eqx.nn.Linear(in_channels * length, out_dim, key=k2)

    def __call__(self, values, uncertainties, mask):
        z = _channels(values, uncertainties, mask).reshape(-1)
        return self.mlp(z) + self.skip(z)


def _conv_out_length(length: int) -> int:
    return (length + 2 * 2 - 5) // 2 + 1


def _conv1d_channels_last(conv: eqx.nn.Conv1d, x: Float[Array, "L C"]) -> Float[Array, "J O"]:
    """``conv`` on a channels-last ``(length, channels)`` input, as strided windows + one matmul."""
    (kernel,), (stride,), ((low, high),) = conv.kernel_size, conv.stride, conv.padding
    padded = jnp.pad(x, ((low, high), (0, 0)))
    out_len = (padded.shape[0] - kernel) // stride + 1
    span = stride * (out_len - 1) + 1
    # (out_len, channels, kernel): each output position's window, contiguous in (channels, taps),
    # so the contraction is a plain (out_len, C*k) x (C*k, O) GEMM with no transposes around it.
    windows = jnp.stack([jax.lax.slice_in_dim(padded, t, t + span, stride=stride, axis=0)
                         for t in range(kernel)], axis=-1)
    out = jnp.einsum("jck,ock->jo", windows, conv.weight)
    return out if conv.bias is None else out + conv.bias[:, 0]


def _im2col_applies(conv: eqx.nn.Conv1d) -> bool:
    return conv.dilation == (1,) and conv.groups == 1 and getattr(conv, "padding_mode", "ZEROS") == "ZEROS"


def conv1d_im2col(conv: eqx.nn.Conv1d, h: Float[Array, "C L"]) -> Float[Array, "O J"]:
    """``conv(h)`` for one ``(channels, length)`` input, as strided windows and one matmul.

    Same weights, padding and stride as ``eqx.nn.Conv1d`` (zero padding, no dilation, one
    group), same result up to float summation order. Why: the encoders run per sample under
    ``vmap``, and XLA:CPU ran the weight gradient of that batched convolution ~50x slower than
    an MLP of the same size; here each of the ``kernel_size`` taps is a strided slice (its
    transpose is a cheap interior-padded pad) and the contraction over ``(channels, taps)`` is one
    ``dot_general``, which XLA:CPU runs as a GEMM, forward and backward.
    """
    if not _im2col_applies(conv):
        return conv(h)
    return _conv1d_channels_last(conv, h.T).T


class Conv1dBlockEncoder(ObservationEncoder):
    """Up to three stride-2 convolutions (kernel 5) then an MLP head on the flattened features.

    The convolutions are stored as ``eqx.nn.Conv1d`` (weights ``(out, in, 5)``, bias
    ``(out, 1)``; saved models are unchanged) and applied with :func:`conv1d_im2col`: measured
    on a 2-core CPU, the per-sample ``vmap`` of ``eqx.nn.Conv1d`` made a training epoch on the
    exo_transmission spectra ~50x slower than the ``mlp`` encoder (see benchmarks/NOTES.md).
    """

    convs: tuple[eqx.nn.Conv1d, ...]
    head: eqx.nn.MLP

    def __init__(self, in_channels: int, length: int, out_dim: int, hidden_dim: int, patch_size: int,
                 *, key: PRNGKeyArray) -> None:
        del patch_size
        width = max(8, hidden_dim // 4)
        n_layers, out_len = 0, length
        while n_layers < 3 and out_len > 16:
            n_layers, out_len = n_layers + 1, _conv_out_length(out_len)
        keys = jax.random.split(key, n_layers + 1)
        chans = [in_channels] + [width] * n_layers
        self.convs = tuple(
            eqx.nn.Conv1d(chans[i], chans[i + 1], kernel_size=5, stride=2, padding=2, key=keys[i])
            for i in range(n_layers)
        )
        self.head = eqx.nn.MLP(chans[-1] * out_len, out_dim, hidden_dim, depth=1,
                               activation=jax.nn.gelu, key=keys[-1])

    def __call__(self, values, uncertainties, mask):
        h = _channels(values, uncertainties, mask)
        if not all(_im2col_applies(conv) for conv in self.convs):
            for conv in self.convs:
                h = jax.nn.gelu(conv(h))
            return self.head(h.reshape(-1))
        # Channels-last between the layers (one transpose in, one out): the head sees the same
        # (channels, length) flattening as before.
        x = h.T
        for conv in self.convs:
            x = jax.nn.gelu(_conv1d_channels_last(conv, x))
        return self.head(x.T.reshape(-1))


class PatchBlockEncoder(ObservationEncoder):
    """Patches of ``patch_size`` elements, shared linear embedding + positions, MLP head."""

    patch_size: int = eqx.field(static=True)
    num_patches: int = eqx.field(static=True)
    embed: eqx.nn.Linear
    positions: Float[Array, "n d"]
    head: eqx.nn.MLP

    def __init__(self, in_channels: int, length: int, out_dim: int, hidden_dim: int, patch_size: int,
                 *, key: PRNGKeyArray) -> None:
        self.patch_size = min(patch_size, length)
        self.num_patches = math.ceil(length / self.patch_size)
        width = max(8, hidden_dim // 4)
        k1, k2, k3 = jax.random.split(key, 3)
        self.embed = eqx.nn.Linear(in_channels * self.patch_size, width, key=k1)
        self.positions = 0.02 * jax.random.normal(k2, (self.num_patches, width))
        self.head = eqx.nn.MLP(self.num_patches * width, out_dim, hidden_dim, depth=1,
                               activation=jax.nn.gelu, key=k3)

    def __call__(self, values, uncertainties, mask):
        h = _channels(values, uncertainties, mask)
        pad = self.num_patches * self.patch_size - h.shape[1]
        h = jnp.pad(h, ((0, 0), (0, pad)))
        patches = h.reshape(h.shape[0], self.num_patches, self.patch_size).transpose(1, 0, 2)
        tokens = jax.vmap(self.embed)(patches.reshape(self.num_patches, -1)) + self.positions
        return self.head(jax.nn.gelu(tokens).reshape(-1))


#: Block encoders by name: the one table ``spectrum_encoder_type`` and modalities select from.
BLOCK_ENCODERS: dict[str, Callable[..., ObservationEncoder]] = {
    "conv1d": Conv1dBlockEncoder,
    "patch": PatchBlockEncoder,
    "mlp": MLPBlockEncoder,
}


def encoder_name_for(modality: ObservationModality | str, config: EncoderConfig) -> str:
    """Name (key of :data:`BLOCK_ENCODERS`) of the encoder used for a block modality."""
    modality = ObservationModality.parse(modality)
    if modality is ObservationModality.SPECTRUM:
        return config.spectrum_encoder_type
    if modality is ObservationModality.TIME_SERIES:
        return "conv1d"
    return "mlp"


def _out_dim_for(modality: ObservationModality, config: EncoderConfig) -> int:
    if modality in (ObservationModality.SPECTRUM, ObservationModality.TIME_SERIES):
        return config.spectrum_embedding_dim
    return config.photometry_embedding_dim


class ObservationEmbeddingNet(eqx.Module):
    """Encodes every block of one observation and fuses the block embeddings.

    Call on a single observation (a ``PreStackedObservations`` whose arrays have no batch axis);
    :meth:`embed_batch` vmaps over a batch.
    """

    block_names: tuple[str, ...] = eqx.field(static=True)
    encoders: tuple[ObservationEncoder, ...]
    fusion: eqx.nn.MLP

    def __init__(self, schema: Any, config: EncoderConfig, *, key: PRNGKeyArray) -> None:
        specs = tuple(schema.blocks)
        if not specs:
            raise ValueError("ObservationEmbeddingNet: the observation schema has no blocks")
        keys = jax.random.split(key, len(specs) + 1)
        encoders, total = [], 0
        for spec, k in zip(specs, keys[:-1]):
            modality = ObservationModality.parse(spec.modality, f"block {spec.name!r}.modality")
            out_dim = _out_dim_for(modality, config)
            channels = 2 + int(bool(spec.has_uncertainties))
            cls = BLOCK_ENCODERS[encoder_name_for(modality, config)]
            encoders.append(cls(channels, int(spec.length), out_dim, config.hidden_dim,
                                config.encoder_patch_size, key=k))
            total += out_dim
        self.block_names = tuple(spec.name for spec in specs)
        self.encoders = tuple(encoders)
        self.fusion = eqx.nn.MLP(total, config.embedding_dim, config.hidden_dim, depth=1,
                                 activation=jax.nn.gelu, key=keys[-1])

    def __call__(self, observation: PreStackedObservations) -> Float[Array, " E"]:
        parts = [
            enc(observation.values[name], observation.uncertainties.get(name), observation.masks.get(name))
            for name, enc in zip(self.block_names, self.encoders)
        ]
        return self.fusion(jnp.concatenate(parts))

    def embed_batch(self, observations: PreStackedObservations) -> Float[Array, "B E"]:
        """Embed a batch (leading axis) in one vmapped call."""
        return jax.vmap(self)(observations)


def build_embedding_net(schema: Any, config: EncoderConfig, key: PRNGKeyArray) -> ObservationEmbeddingNet:
    """Build the embedding network for an observation schema (blocks in schema order)."""
    return ObservationEmbeddingNet(schema, config, key=key)
