"""The residual, context-gated velocity field with its time-gated linear skip path."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.flow_matching import fm_loss
from sbi_core.flow_matching.config import VELOCITY_NETWORKS, FlowMatchingConfig
from sbi_core.flow_matching.residual_field import ResidualVelocityNet


def test_shapes_and_zero_init():
    field = ResidualVelocityNet(3, 5, hidden_dim=8, num_velocity_layers=2, key=jax.random.key(0))
    out = field(jnp.ones(3), jnp.asarray(0.5), jnp.ones(5))
    assert out.shape == (3,) and field.parameter_dim == 3
    np.testing.assert_array_equal(out, 0.0)  # an untrained field is the zero field


def test_gradients_reach_every_parameter():
    field = ResidualVelocityNet(2, 3, hidden_dim=8, num_velocity_layers=2, key=jax.random.key(0))
    theta = jax.random.normal(jax.random.key(1), (16, 2))
    context = jax.random.normal(jax.random.key(2), (16, 3))
    # One optimiser-like step away from the zero init so every path carries gradient.
    grads = eqx.filter_grad(fm_loss)(field, theta, context, jax.random.key(3))
    field = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, field, grads)
    grads = eqx.filter_grad(fm_loss)(field, theta, context, jax.random.key(4))
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert leaves and all(float(jnp.abs(g).sum()) > 0 for g in leaves)


def test_config_builds_and_rejects_networks():
    assert set(VELOCITY_NETWORKS) == {"mlp", "residual"}
    field = FlowMatchingConfig(velocity_network="residual", hidden_dim=8).build_velocity(2, 3, key=jax.random.key(0))
    assert isinstance(field, ResidualVelocityNet)
    with pytest.raises(ValueError, match="unknown velocity_network 'unet'; known: mlp, residual"):
        FlowMatchingConfig(velocity_network="unet")
    with pytest.raises(ValueError, match="num_velocity_layers"):
        ResidualVelocityNet(2, 3, num_velocity_layers=0, key=jax.random.key(0))
