"""Block encoders, the encoder table and the fused observation embedding."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.encoders import (
    BLOCK_ENCODERS,
    EncoderConfig,
    ObservationEmbeddingNet,
    build_embedding_net,
    encoder_name_for,
)
from sbi_core.observation import PreStackedObservations
from sbi_core.posterior_metadata import BlockSpecView, SchemaView

SCHEMA = SchemaView((
    BlockSpecView("spec", "spectrum", 40, True),
    BlockSpecView("phot", "photometry", 3, False),
    BlockSpecView("lc", "time_series", 20, True),
    BlockSpecView("aux", "auxiliary", 2, False),
))


_embed = eqx.filter_jit(lambda net, obs: net.embed_batch(obs))


def _obs(n: int = 3, seed: int = 0, with_mask: bool = False) -> PreStackedObservations:
    rng = np.random.default_rng(seed)
    values = {s.name: jnp.asarray(rng.standard_normal((n, s.length)), jnp.float32) for s in SCHEMA.blocks}
    unc = {s.name: jnp.full((n, s.length), 0.5, jnp.float32) for s in SCHEMA.blocks if s.has_uncertainties}
    masks = {"spec": jnp.ones((n, 40), bool).at[:, :5].set(False)} if with_mask else {}
    return PreStackedObservations(values=values, uncertainties=unc, masks=masks)


@pytest.mark.parametrize("kind", sorted(BLOCK_ENCODERS))
def test_each_spectrum_encoder_embeds_every_block(kind):
    cfg = EncoderConfig(embedding_dim=12, hidden_dim=16, spectrum_encoder_type=kind,
                        spectrum_embedding_dim=6, photometry_embedding_dim=4,
                        encoder_patch_size=8 if kind == "patch" else 32)
    net = build_embedding_net(SCHEMA, cfg, jax.random.PRNGKey(0))
    assert isinstance(net, ObservationEmbeddingNet)
    out = _embed(net, _obs())
    assert out.shape == (3, 12) and bool(jnp.all(jnp.isfinite(out)))
    # A batch is the vmap of single observations.
    single = eqx.filter_jit(lambda m, o: m(o))(net, _obs()[0])
    np.testing.assert_allclose(out[0], single, rtol=1e-5, atol=1e-6)


def test_uncertainties_and_mask_enter_the_embedding():
    net = build_embedding_net(SCHEMA, EncoderConfig(embedding_dim=8, hidden_dim=16), jax.random.PRNGKey(1))
    base = _embed(net, _obs())
    obs = _obs()
    doubled = PreStackedObservations(values=obs.values, uncertainties={k: 2 * v for k, v in obs.uncertainties.items()},
                                     masks=obs.masks)
    assert not np.allclose(_embed(net, doubled), base)
    assert not np.allclose(_embed(net, _obs(with_mask=True)), base)


def test_modality_picks_the_encoder():
    cfg = EncoderConfig(spectrum_encoder_type="patch", encoder_patch_size=16)
    assert encoder_name_for("spectrum", cfg) == "patch"
    assert encoder_name_for("time_series", cfg) == "conv1d"
    assert encoder_name_for("photometry", cfg) == "mlp"
    assert encoder_name_for("auxiliary", cfg) == "mlp"
    net = eqx.filter_eval_shape(build_embedding_net, SCHEMA, cfg, jax.random.PRNGKey(0))  # no compile
    kinds = [type(e).__name__ for e in net.encoders]
    assert kinds == ["PatchBlockEncoder", "MLPBlockEncoder", "Conv1dBlockEncoder", "MLPBlockEncoder"]


@pytest.mark.slow
def test_gradients_reach_every_encoder_parameter():
    net = build_embedding_net(SCHEMA, EncoderConfig(embedding_dim=8, hidden_dim=16), jax.random.PRNGKey(2))
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.sum(m.embed_batch(_obs()) ** 2)))(net)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert leaves and all(bool(jnp.any(g != 0)) for g in leaves)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spectrum_encoder_type": "transformer"}, "spectrum_encoder_type must be one of"),
        ({"encoder_patch_size": 8}, "only applies to spectrum_encoder_type='patch'"),
        ({"embedding_dim": 0}, "embedding_dim must be an integer >= 1"),
        ({"spectrum_embedding_dim": 2.5}, "spectrum_embedding_dim"),
    ],
)
def test_bad_encoder_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**kwargs)


def _conv1d_reference_call(enc, values, uncertainties, mask):
    """The Conv1dBlockEncoder forward as it was before im2col: ``eqx.nn.Conv1d`` applied directly."""
    from sbi_core.encoders import _channels

    h = _channels(values, uncertainties, mask)
    for conv in enc.convs:
        h = jax.nn.gelu(conv(h))
    return enc.head(h.reshape(-1))


@pytest.mark.parametrize("length", [17, 40, 233])
def test_conv1d_im2col_matches_the_convolution(length):
    """Same architecture and parameter shapes; outputs and gradients equal the eqx.nn.Conv1d path."""
    from sbi_core.encoders import Conv1dBlockEncoder, conv1d_im2col

    enc = Conv1dBlockEncoder(3, length, 6, 32, 32, key=jax.random.PRNGKey(3))
    assert [c.weight.shape for c in enc.convs][0] == (8, 3, 5)
    rng = np.random.default_rng(length)
    values = jnp.asarray(rng.standard_normal((7, length)), jnp.float32)
    unc = jnp.asarray(rng.uniform(0.1, 2.0, (7, length)), jnp.float32)
    mask = jnp.asarray(rng.uniform(size=(7, length)) > 0.2)
    for conv in enc.convs:
        h = jnp.asarray(rng.standard_normal((conv.in_channels, length)), jnp.float32)
        np.testing.assert_allclose(conv1d_im2col(conv, h), conv(h), rtol=1e-5, atol=1e-5)
    new = jax.jit(jax.vmap(enc))(values, unc, mask)
    ref = jax.jit(jax.vmap(lambda v, u, m: _conv1d_reference_call(enc, v, u, m)))(values, unc, mask)
    np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-5)

    def loss(model, fn):
        return jnp.sum(jax.vmap(lambda v, u, m: fn(model, v, u, m))(values, unc, mask) ** 2)

    g_new = eqx.filter_grad(lambda m: loss(m, lambda e, v, u, k: e(v, u, k)))(enc)
    g_ref = eqx.filter_grad(lambda m: loss(m, _conv1d_reference_call))(enc)
    for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
