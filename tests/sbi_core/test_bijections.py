"""Property tests over every hand-written bijection (small sizes: D=3, width 8)."""

from __future__ import annotations

import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from sbi_core.bijections import (
    AffineCoupling, Chain, ElementwiseAffine, MaskedAutoregressive, NeuralAutoregressive,
    Permutation, SplineCoupling, rqs_forward, rqs_inverse, spline_knots)

DIM, CONTEXT = 3, 2
# float32 throughout: round trips hold to ~1e-5; the stated tolerances leave headroom.
ROUND_TRIP_ATOL = 1e-4
LOG_DET_ATOL = 1e-4


def perturb(module, key, scale=0.3):
    """Add noise to every float leaf: moves zero-initialised output layers off the identity."""
    leaves, treedef = jax.tree_util.tree_flatten(module)
    keys = jax.random.split(key, len(leaves))
    leaves = [leaf + scale * jax.random.normal(k, leaf.shape) if eqx.is_inexact_array(leaf)
              else leaf for leaf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _spline_coupling(key, dim=DIM):
    return SplineCoupling(key, dim, CONTEXT, 8, 1, num_bins=4, spline_bound=3.0)


def _naf(key, dim=DIM):
    return NeuralAutoregressive(key, dim, CONTEXT, 8, 1, transform_units=4, min_slope=1e-3,
                                min_residual=0.05, bisection_steps=48)


BIJECTIONS = {
    "affine_coupling": lambda k: AffineCoupling(k, DIM, CONTEXT, 8, 1),
    "spline_coupling": _spline_coupling,
    "spline_coupling_d1": lambda k: _spline_coupling(k, 1),
    "masked_autoregressive": lambda k: MaskedAutoregressive(k, DIM, CONTEXT, 8, 2, 2),
    "neural_autoregressive": _naf,
    "neural_autoregressive_d1": lambda k: _naf(k, 1),
    # The layout of models saved before the transformer's offset (still loaded, so still tested).
    "neural_autoregressive_no_shift": lambda k: NeuralAutoregressive(
        k, DIM, CONTEXT, 8, 1, transform_units=4, min_slope=1e-3, min_residual=0.05, bisection_steps=48,
        shift=False),
    "permutation": lambda k: Permutation((2, 0, 1)),
    "elementwise_affine": lambda k: ElementwiseAffine(DIM),
    # Chain and Repeated are exercised through every flow in test_flows.py.
}


def _loss(bijection, xs, context):
    z, log_det = jax.vmap(bijection.forward, (0, None))(xs, context)
    x, _ = jax.vmap(bijection.inverse, (0, None))(z + 0.1, context)
    return jnp.sum(z**2) + jnp.sum(log_det) + jnp.sum(x**2)


@eqx.filter_jit
def _properties(bijection, xs, context):
    """Everything the property tests check, in one compiled call per bijection (compile time
    dominates these tests)."""
    z, fwd = jax.vmap(bijection.forward, (0, None))(xs, context)
    x, inv = jax.vmap(bijection.inverse, (0, None))(z, context)
    jac = jax.vmap(jax.jacobian(lambda v: bijection.forward(v, context)[0]))(xs)
    jac_inv = jax.vmap(jax.jacobian(lambda v: bijection.inverse(v, context)[0]))(z)
    params, static = eqx.partition(bijection, eqx.is_inexact_array)
    grads = jax.grad(lambda p: _loss(eqx.combine(p, static), xs, context))(params)
    return dict(x=x, fwd=fwd, inv=inv, jac=jac, slogdet=jnp.linalg.slogdet(jac)[1],
                slogdet_inv=jnp.linalg.slogdet(jac_inv)[1], grads=grads)


@pytest.fixture(scope="module", params=sorted(BIJECTIONS))
def case(request):
    key = jax.random.PRNGKey(sum(map(ord, request.param)))
    bijection = perturb(BIJECTIONS[request.param](key), jax.random.fold_in(key, 1))
    dim = 1 if request.param.endswith("_d1") else DIM
    xs = 2.0 * jax.random.normal(jax.random.fold_in(key, 2), (4, dim))  # some beyond the bound
    context = jax.random.normal(jax.random.fold_in(key, 3), (CONTEXT,))
    return request.param, xs, _properties(bijection, xs, context)


def test_inverse_undoes_forward(case):
    _, xs, out = case
    np.testing.assert_allclose(out["x"], xs, atol=ROUND_TRIP_ATOL)
    np.testing.assert_allclose(out["fwd"], -out["inv"], atol=LOG_DET_ATOL, rtol=1e-4)


def test_log_det_matches_jacobian(case):
    name, xs, out = case
    np.testing.assert_allclose(out["fwd"], out["slogdet"], atol=LOG_DET_ATOL, rtol=1e-4)
    np.testing.assert_allclose(out["inv"], out["slogdet_inv"], atol=LOG_DET_ATOL, rtol=1e-4)
    if "autoregressive" in name and xs.shape[1] > 1:
        # Autoregressive: z_i depends on x_{<=i} only -> lower-triangular Jacobian.
        np.testing.assert_array_equal(np.triu(np.asarray(out["jac"]), k=1), 0.0)


def test_gradients_reach_every_parameter(case):
    _, _, out = case
    leaves = jax.tree_util.tree_leaves_with_path(out["grads"])
    for path, leaf in leaves:
        assert jnp.all(jnp.isfinite(leaf)), path
        assert jnp.any(leaf != 0), f"zero gradient at {jax.tree_util.keystr(path)}"


@eqx.filter_jit
def _batched_and_vmapped(bijection, xs, contexts):
    """``forward_batch`` / ``inverse_batch`` (per-sample and shared context) next to the vmapped
    one-sample methods, with the gradients of one loss through each."""
    shared = contexts[0]
    params, static = eqx.partition(bijection, eqx.is_inexact_array)

    def loss(p, batched):
        b = eqx.combine(p, static)
        if batched:
            z, log_det = b.forward_batch(xs, contexts)
            x, inv = b.inverse_batch(z + 0.1, contexts)
        else:
            z, log_det = jax.vmap(b.forward)(xs, contexts)
            x, inv = jax.vmap(b.inverse)(z + 0.1, contexts)
        return jnp.sum(z**2) + jnp.sum(log_det) + jnp.sum(x**2) + jnp.sum(inv)

    return dict(
        batched=(bijection.forward_batch(xs, contexts), bijection.inverse_batch(xs, contexts),
                 bijection.forward_batch(xs, shared), bijection.inverse_batch(xs, shared)),
        vmapped=(jax.vmap(bijection.forward)(xs, contexts), jax.vmap(bijection.inverse)(xs, contexts),
                 jax.vmap(bijection.forward, (0, None))(xs, shared),
                 jax.vmap(bijection.inverse, (0, None))(xs, shared)),
        grad_batched=jax.grad(loss)(params, True), grad_vmapped=jax.grad(loss)(params, False))


@pytest.mark.parametrize("name", sorted(BIJECTIONS))
def test_batched_methods_match_the_vmapped_ones(name):
    """The batch forms (the spline coupling's own, bins-major implementation; the others the
    default vmap) give the one-sample methods' values and gradients, with a context per sample or
    one shared context."""
    key = jax.random.PRNGKey(sum(map(ord, name)) + 1)
    bijection = perturb(BIJECTIONS[name](key), jax.random.fold_in(key, 1))
    dim = 1 if name.endswith("_d1") else DIM
    xs = 2.0 * jax.random.normal(jax.random.fold_in(key, 2), (6, dim))  # some beyond the bound
    contexts = jax.random.normal(jax.random.fold_in(key, 3), (6, CONTEXT))
    out = _batched_and_vmapped(bijection, xs, contexts)
    for batched, vmapped in zip(out["batched"], out["vmapped"]):
        assert batched[0].shape == xs.shape and batched[1].shape == (6,)
        np.testing.assert_allclose(batched[0], vmapped[0], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(batched[1], vmapped[1], atol=1e-5, rtol=1e-5)
    flat = jax.tree_util.tree_leaves(out["grad_batched"]), jax.tree_util.tree_leaves(out["grad_vmapped"])
    for a, b in zip(*flat):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_spline_functions_take_a_batch_of_splines_with_the_bins_leading():
    """``spline_knots`` / ``rqs_forward`` / ``rqs_inverse`` on knots ``(K + 1, *S)`` equal the
    one-spline calls, spline by spline."""
    raw = jax.random.normal(jax.random.PRNGKey(4), (17, 3, 5))  # 6 bins; a (3, 5) batch of splines
    xs = 3.0 * jax.random.normal(jax.random.PRNGKey(5), (3, 5))
    knots = spline_knots(raw[:6], raw[6:12], raw[12:], 4.0)
    y, log_det = rqs_forward(xs, knots, 4.0)
    back, inv_log_det = rqs_inverse(y, knots, 4.0)
    for i in range(3):
        for j in range(5):
            one = spline_knots(raw[:6, i, j], raw[6:12, i, j], raw[12:, i, j], 4.0)
            y1, ld1 = rqs_forward(xs[i, j], one, 4.0)
            b1, ild1 = rqs_inverse(y1, one, 4.0)
            np.testing.assert_allclose([y[i, j], log_det[i, j], back[i, j], inv_log_det[i, j]],
                                       [y1, ld1, b1, ild1], atol=1e-6)


def test_zero_initialised_couplings_are_identity():
    key = jax.random.PRNGKey(0)
    x, context = jnp.array([0.5, -2.0, 7.0]), jnp.ones(CONTEXT)
    for bijection in (AffineCoupling(key, DIM, CONTEXT, 8, 1), _spline_coupling(key),
                      MaskedAutoregressive(key, DIM, CONTEXT, 8, 1, 2)):
        z, log_det = eqx.filter_jit(lambda b: b.forward(x, context))(bijection)
        np.testing.assert_allclose(z, x, atol=1e-5)
        np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


def test_spline_statistics_shapes():
    bijection = _spline_coupling(jax.random.PRNGKey(0))
    _, _, stats = eqx.filter_jit(lambda b: b.forward_with_statistics(jnp.ones(DIM),
                                                                     jnp.ones(CONTEXT)))(bijection)
    assert stats["min_bin_width_ratio"].shape == (DIM - DIM // 2,)
    assert stats["knot_derivatives"].shape == (DIM - DIM // 2, 3)
    np.testing.assert_allclose(stats["bin_width_entropy"], 1.0, atol=1e-5)  # uniform at init


@eqx.filter_jit
def _spline_round_trip(raw, x):
    knots = spline_knots(raw[:6], raw[6:12], raw[12:], 4.0)
    y, log_det = rqs_forward(x, knots, 4.0)
    back, inv_log_det = rqs_inverse(y, knots, 4.0)
    slope = jax.grad(lambda v: rqs_forward(v, knots, 4.0)[0])(x)
    return y, log_det, back, inv_log_det, slope


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), x=st.floats(-6.0, 6.0), scale=st.floats(0.0, 5.0))
def test_rq_spline_round_trip_and_slope(seed, x, scale):
    raw = scale * jax.random.normal(jax.random.PRNGKey(seed), (17,))  # 6 bins: 6 + 6 + 5
    y, log_det, back, inv_log_det, slope = _spline_round_trip(raw, jnp.float32(x))
    # Inverting a map of slope s loses a factor 1/s: float32 rounding of y (~5e-7 near the bound)
    # becomes an x error of ~5e-7 / s, so the x tolerance is scaled by the conditioning. Large raw
    # scales (> 1) make bins at the 1e-3 floor next to wide ones, where even the log-det closure is
    # limited by float32 resolution of y inside a tiny bin; there we only ask for 2e-3 / finiteness.
    assert abs(float(back) - x) * min(1.0, float(slope)) < 2e-3 * max(1.0, abs(x))
    if scale <= 1.0:
        assert abs(float(back) - x) * min(1.0, float(slope)) < 1e-4 * max(1.0, abs(x))
        assert abs(float(log_det + inv_log_det)) < 5e-3
    assert np.isfinite(float(log_det)) and np.isfinite(float(inv_log_det))
    np.testing.assert_allclose(np.log(slope), log_det, atol=1e-3)
    if abs(x) >= 4.0:  # identity tails
        assert float(y) == pytest.approx(x) and float(log_det) == 0.0
    else:
        assert -4.0 <= float(y) <= 4.0


def test_rq_spline_is_increasing():
    raw = jax.random.normal(jax.random.PRNGKey(3), (17,))
    knots = spline_knots(raw[:6], raw[6:12], raw[12:], 4.0)
    ys = jax.jit(jax.vmap(lambda v: rqs_forward(v, knots, 4.0)[0]))(jnp.linspace(-5.0, 5.0, 2001))
    assert jnp.all(jnp.diff(ys) > 0)


@pytest.mark.parametrize("build, message", [
    (lambda k: AffineCoupling(k, 0, 2, 8, 1), "dim"),
    (lambda k: AffineCoupling(k, 3, -1, 8, 1), "context_dim"),
    (lambda k: AffineCoupling(k, 3, 2, 0, 1), "hidden_dim"),
    (lambda k: AffineCoupling(k, 3, 2, 8, 0), "conditioner_depth"),
    (lambda k: SplineCoupling(k, 3, 2, 8, 1, 0, 3.0), "num_spline_bins"),
    (lambda k: SplineCoupling(k, 3, 2, 8, 1, 4, 0.0), "spline_bound"),
    (lambda k: SplineCoupling(k, 3, 2, 8, 1, 4, float("nan")), "spline_bound"),
    (lambda k: MaskedAutoregressive(k, 3, 2, 8, 1, 0), "autoregressive_transform_units"),
    (lambda k: NeuralAutoregressive(k, 3, 2, 8, 1, 4, 0.0, 0.05, 48), "min_slope"),
    (lambda k: NeuralAutoregressive(k, 3, 2, 8, 1, 4, 1e-3, 1.0, 48), "min_residual"),
    (lambda k: NeuralAutoregressive(k, 3, 2, 8, 1, 4, 1e-3, 0.05, 0), "bisection_steps"),
    (lambda k: NeuralAutoregressive(k, 3, 2, 8, 1, 4, 1e-3, 0.05, 48, shift=1), "shift must be a bool"),
    (lambda k: Permutation((0, 0, 1)), "permutation"),
    (lambda k: Chain([]), "non-empty"),
])
def test_bad_options_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build(jax.random.PRNGKey(0))


def test_conditioner_context_split_matches_the_concatenated_input():
    """``MLP(x, context)`` is ``MLP(concatenate([x, context]))``, also with an empty ``x``
    (the dim-1 coupling), and its context product stays unbatched under vmap over draws."""
    import jax
    import jax.numpy as jnp

    from sbi_core.bijections.conditioner import MLP

    for split in (0, 1, 3):
        mlp = MLP(jax.random.PRNGKey(split), split + 5, 7, 16, 2)
        # The output layer is zero-initialised: give it weights so the check is not 0 == 0.
        mlp = eqx.tree_at(lambda m: m.weights[-1], mlp, jnp.ones_like(mlp.weights[-1]))
        x = jax.random.normal(jax.random.PRNGKey(10), (4, split))
        context = jax.random.normal(jax.random.PRNGKey(11), (5,))
        split_out = jax.vmap(lambda xi: mlp(xi, context))(x)
        joined = jax.vmap(lambda xi: mlp(jnp.concatenate([xi, context])))(x)
        np.testing.assert_allclose(split_out, joined, rtol=1e-5, atol=1e-5)
        jaxpr = jax.make_jaxpr(jax.vmap(lambda xi: mlp(xi, context)))(x)
        shapes = [tuple(v.aval.shape) for e in jaxpr.eqns if e.primitive.name == "dot_general"
                  for v in e.outvars]
        assert (16,) in shapes, shapes  # the context product: one (hidden,) vector, not (4, hidden)
