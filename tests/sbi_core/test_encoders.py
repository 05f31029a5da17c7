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
