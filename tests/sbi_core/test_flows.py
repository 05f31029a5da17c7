"""Property tests over every flow family (tiny sizes: D=3, width 8, 2 layers)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.flows import FLOW_FAMILIES, ConditionalFlow, FlowConfig, build_flow

DIM, CONTEXT = 3, 2
ROUND_TRIP_ATOL = 1e-4  # float32
LOG_DET_ATOL = 2e-4
TINY = dict(num_layers=2, hidden_dim=8, conditioner_depth=1, num_spline_bins=4, spline_bound=4.0,
            autoregressive_transform_units=3, neural_autoregressive_inverse_bisection_steps=40)
# One case per family; the affine case also covers the Student-t base and the base affine (each
# case costs a few seconds of compilation, so options ride along instead of multiplying cases).
CASES = {family: FlowConfig(family=family, **TINY) for family in FLOW_FAMILIES}
CASES["affine"] = FlowConfig(family="affine", base_distribution="student_t", use_base_affine=True,
                             **TINY)


def perturb(module, key, scale=0.3):
    """Noise on every float leaf, so zero-initialised output layers leave the identity."""
    leaves, treedef = jax.tree_util.tree_flatten(module)
    keys = jax.random.split(key, len(leaves))
    leaves = [leaf + scale * jax.random.normal(k, leaf.shape) if eqx.is_inexact_array(leaf)
              else leaf for leaf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _make(config, dim=DIM, context_dim=CONTEXT, seed=0):
    key = jax.random.PRNGKey(seed)
    return perturb(build_flow(key, dim, context_dim, config), jax.random.fold_in(key, 1))


@eqx.filter_jit
def _properties(flow: ConditionalFlow, xs, context, key):
    """All per-family checks in one compiled call (compile time dominates these tests)."""
    z, fwd = jax.vmap(flow.forward, (0, None))(xs, context)
    x, inv = jax.vmap(flow.inverse, (0, None))(z, context)
    jac = jax.vmap(jax.jacfwd(lambda v: flow.forward(v, context)[0]))(xs)
    params, static = eqx.partition(flow, eqx.is_inexact_array)

    def loss(p):
        return -jnp.sum(jax.vmap(eqx.combine(p, static).log_prob, (0, None))(xs, context))

    samples, sample_log_probs = flow.sample_and_log_prob(key, context, 8)
    contexts = context + jnp.arange(xs.shape[0])[:, None] * 0.5  # one context per sample
    return dict(x=x, fwd=fwd, inv=inv, slogdet=jnp.linalg.slogdet(jac)[1],
                batch=(flow.forward_batch(xs, context), flow.inverse_batch(z, context),
                       flow.batch_log_prob(xs, context), flow.batch_log_prob(xs, contexts)),
                per_sample_context_log_probs=jax.vmap(flow.log_prob)(xs, contexts),
                grads=jax.grad(loss)(params), samples=samples,
                sample_log_probs=sample_log_probs,
                log_probs=jax.vmap(flow.log_prob, (0, None))(xs, context),
                resampled_log_probs=jax.vmap(flow.log_prob, (0, None))(samples, context))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    flow = _make(CASES[request.param])
    xs = 2.0 * jax.random.normal(jax.random.PRNGKey(7), (4, DIM))
    context = jax.random.normal(jax.random.PRNGKey(8), (CONTEXT,))
    key = jax.random.PRNGKey(9)
    return request.param, flow, (xs, context, key), _properties(flow, xs, context, key)


def test_inverse_undoes_forward(case):
    _, _, (xs, _, _), out = case
    np.testing.assert_allclose(out["x"], xs, atol=ROUND_TRIP_ATOL)
    np.testing.assert_allclose(out["fwd"], -out["inv"], atol=LOG_DET_ATOL, rtol=1e-4)


def test_log_det_matches_jacobian(case):
    _, _, _, out = case
    np.testing.assert_allclose(out["fwd"], out["slogdet"], atol=LOG_DET_ATOL, rtol=1e-4)


def test_gradients_of_log_prob_reach_every_parameter(case):
    _, _, _, out = case
    for path, leaf in jax.tree_util.tree_leaves_with_path(out["grads"]):
        assert jnp.all(jnp.isfinite(leaf)), path
        assert jnp.any(leaf != 0), f"zero gradient at {jax.tree_util.keystr(path)}"


def test_sample_and_log_prob_agree_with_log_prob(case):
    _, _, _, out = case
    assert out["samples"].shape == (8, DIM) and out["sample_log_probs"].shape == (8,)
    np.testing.assert_allclose(out["sample_log_probs"], out["resampled_log_probs"], atol=1e-3)


def test_serialisation_round_trip(case, tmp_path):
    name, flow, args, out = case
    path = tmp_path / "flow.eqx"
    eqx.tree_serialise_leaves(path, flow)
    skeleton = build_flow(jax.random.PRNGKey(123), DIM, CONTEXT, CASES[name])
    loaded = eqx.tree_deserialise_leaves(path, skeleton)
    again = _properties(loaded, *args)  # same structure: reuses the compiled function
    np.testing.assert_array_equal(again["log_probs"], out["log_probs"])
    np.testing.assert_array_equal(again["samples"], out["samples"])


@eqx.filter_jit
def _grid_log_probs(flow, grid, context):
    return jax.vmap(flow.log_prob, (0, None))(grid, context)


@pytest.mark.parametrize("family, dim", [("spline", 2), ("neural_autoregressive", 1)])
def test_density_integrates_to_one(family, dim):
    flow = _make(FlowConfig(family=family, **TINY), dim=dim)
    context = jnp.array([0.5, -0.5])
    axis = jnp.linspace(-12.0, 12.0, 2001 if dim == 1 else 301)
    grid = jnp.stack(jnp.meshgrid(*[axis] * dim, indexing="ij"), -1).reshape(-1, dim)
    density = np.exp(np.asarray(_grid_log_probs(flow, grid, context), dtype=np.float64))
    cell = float(axis[1] - axis[0]) ** dim
    assert abs(density.sum() * cell - 1.0) < 1e-2


@eqx.filter_jit
def _statistics(flow, x, context):
    return flow.regularization_statistics(x, context)


def test_regularization_statistics():
    flow = build_flow(jax.random.PRNGKey(0), DIM, CONTEXT, CASES["spline"])
    stats = _statistics(flow, jnp.ones(DIM), jnp.ones(CONTEXT))
    n_t = DIM - DIM // 2
    assert stats["min_bin_width_ratio"].shape == (2, n_t)
    assert stats["bin_width_entropy"].shape == (2, n_t)
    assert stats["knot_derivatives"].shape == (2, n_t, 3)
    # Zero-initialised conditioners: uniform bins, unit derivatives.
    np.testing.assert_allclose(stats["min_bin_width_ratio"], 1.0, atol=1e-5)
    np.testing.assert_allclose(stats["bin_width_entropy"], 1.0, atol=1e-5)
    np.testing.assert_allclose(stats["knot_derivatives"], 1.0, atol=1e-5)
    affine = build_flow(jax.random.PRNGKey(0), DIM, CONTEXT, FlowConfig(family="affine", **TINY))
    assert _statistics(affine, jnp.ones(DIM), jnp.ones(CONTEXT)) == {}


@pytest.mark.parametrize("family", sorted(FLOW_FAMILIES))
def test_one_dimensional_and_unconditional_flows(family):
    flow = _make(FlowConfig(family=family, **TINY), dim=1, context_dim=0)
    x = jnp.array([[0.7], [-3.0]])

    @eqx.filter_jit
    def round_trip_and_sample(flow):
        back = jax.vmap(lambda v: flow.inverse(flow.forward(v)[0])[0])(x)
        return back, flow.sample(jax.random.PRNGKey(0), None, 5)

    back, samples = round_trip_and_sample(flow)
    np.testing.assert_allclose(back, x, atol=ROUND_TRIP_ATOL)
    assert samples.shape == (5, 1)


def test_config_payload_round_trip():
    config = CASES["affine"]
    assert FlowConfig(**config.to_payload()) == config


@pytest.mark.parametrize("options, message", [
    (dict(family="glow"), r"unknown flow family 'glow'; known families: \['affine', "
                          r"'autoregressive', 'neural_autoregressive', 'spline'\]"),
    (dict(num_layers=0), "num_layers"),
    (dict(hidden_dim=-1), "hidden_dim"),
    (dict(conditioner_depth=0), "conditioner_depth"),
    (dict(num_spline_bins=0), "num_spline_bins"),
    (dict(num_spline_bins=2.5), "num_spline_bins"),
    (dict(num_spline_bins=1000), "num_spline_bins"),
    (dict(spline_bound=0.0), "spline_bound"),
    (dict(spline_bound=-1.0), "spline_bound"),
    (dict(autoregressive_transform_units=0), "autoregressive_transform_units"),
    (dict(neural_autoregressive_min_slope=0.0), "neural_autoregressive_min_slope"),
    (dict(neural_autoregressive_min_residual=1.0), "neural_autoregressive_min_residual"),
    (dict(neural_autoregressive_inverse_bisection_steps=0), "bisection_steps"),
    (dict(base_distribution="cauchy"), "base_distribution"),
    (dict(use_base_affine="yes"), "use_base_affine"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        FlowConfig(**options)


def test_batched_methods_match_the_one_sample_methods(case):
    _, _, (xs, _, _), out = case
    (z, fwd), (x, inv), log_probs, per_sample = out["batch"]
    np.testing.assert_allclose(fwd, out["fwd"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(x, out["x"], atol=ROUND_TRIP_ATOL)
    np.testing.assert_allclose(inv, out["inv"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(log_probs, out["log_probs"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(per_sample, out["per_sample_context_log_probs"], atol=1e-5, rtol=1e-5)


def test_bad_dimensions_and_shapes_raise():
    config = CASES["affine"]
    with pytest.raises(ValueError, match="dim"):
        build_flow(jax.random.PRNGKey(0), 0, CONTEXT, config)
    with pytest.raises(ValueError, match="context_dim"):
        build_flow(jax.random.PRNGKey(0), DIM, -1, config)
    with pytest.raises(ValueError, match="FlowConfig"):
        build_flow(jax.random.PRNGKey(0), DIM, CONTEXT, {"family": "affine"})
    flow = build_flow(jax.random.PRNGKey(0), DIM, CONTEXT, config)
    with pytest.raises(ValueError, match=r"x must have shape \(3,\), got \(5, 3\)"):
        flow.log_prob(jnp.zeros((5, DIM)), jnp.zeros(CONTEXT))
    with pytest.raises(ValueError, match=r"context must have shape \(2,\), got \(4,\)"):
        flow.log_prob(jnp.zeros(DIM), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3\), got \(3,\)"):
        flow.batch_log_prob(jnp.zeros(DIM), jnp.zeros(CONTEXT))
    with pytest.raises(ValueError, match=r"context must have shape \(5, 2\) \(one row per sample\)"):
        flow.forward_batch(jnp.zeros((5, DIM)), jnp.zeros((4, CONTEXT)))
    with pytest.raises(ValueError, match="context of shape"):
        flow.sample(jax.random.PRNGKey(0), None, 3)
    with pytest.raises(ValueError, match="n must be"):
        flow.sample(jax.random.PRNGKey(0), jnp.zeros(CONTEXT), 0)
