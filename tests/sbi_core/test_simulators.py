"""Built-in simulators: registry, jit/vmap, finiteness, physics sense, exact answers."""

from __future__ import annotations

import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sbi_core.simulators import UnknownTaskError, available_tasks, get_task


@pytest.fixture(scope="module")
def exo():
    return get_task("exo_transmission")


def _row(out, i):
    return {b: {k: v[i] for k, v in entry.items()} for b, entry in out.items()}


def test_registry_and_errors():
    assert available_tasks() == ("exo_transmission", "gaussian_linear", "two_moons")
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'; available tasks: exo_transmission"):
        get_task("nope")
    with pytest.raises(KeyError):
        get_task("nope")
    with pytest.raises(ValueError, match=r"no option\(s\) \['bogus'\]"):
        get_task("gaussian_linear", bogus=1)
    assert get_task("gaussian_linear", dim=3).parameter_dim == 3
    assert get_task("gaussian_linear", dim=3).fingerprint() != get_task("gaussian_linear").fingerprint()
    assert get_task("exo_transmission").fingerprint() == get_task("exo_transmission").fingerprint()


@pytest.mark.parametrize("name", ["exo_transmission", "gaussian_linear", "two_moons"])
def test_simulate_matches_schema_and_is_finite(name):
    task = get_task(name)
    json.dumps(task.to_payload(), allow_nan=False)
    theta = task.sample_prior(jax.random.key(0), 512)
    out = task.simulate(jax.random.key(1), theta)
    assert set(out) == set(task.observation_schema.names)
    for spec in task.observation_schema.blocks:
        entry = out[spec.name]
        assert entry["values"].shape == (512, spec.length)
        assert bool(jnp.all(jnp.isfinite(entry["values"])))
        assert ("uncertainties" in entry) == spec.has_uncertainties
        if spec.has_uncertainties:
            assert bool(jnp.all(entry["uncertainties"] > 0))
        if spec.constraint is not None:
            assert spec.constraint.satisfied(np.asarray(entry["values"])).all()
    ll = task.log_likelihood_batch(theta, out)
    assert ll.shape == (512,) and bool(jnp.all(jnp.isfinite(ll)))
    if name != "exo_transmission":  # exo: gradients are checked at the prior corners below
        grad = jax.jit(jax.vmap(jax.grad(task.likelihood)))(theta[:64], jax.tree.map(lambda a: a[:64], out))
        assert bool(jnp.all(jnp.isfinite(grad)))
    # Same key, same draws (pure function of the key); different key, different noise.
    again = task.simulate(jax.random.key(1), theta)
    first = task.observation_schema.blocks[0].name
    np.testing.assert_array_equal(again[first]["values"], out[first]["values"])
    assert not np.array_equal(task.simulate(jax.random.key(2), theta)[first]["values"], out[first]["values"])


def test_exo_finite_at_prior_corners_with_finite_gradients(exo):
    bounds = [spec.prior.support for spec in exo.parameters]
    corners = jnp.array(list(itertools.product(*bounds)), jnp.float32)  # 2^9 = 512
    depth = exo.noiseless_spectrum(corners)
    assert bool(jnp.all(jnp.isfinite(depth))) and bool(jnp.all(depth > 0))
    out = exo.simulate(jax.random.key(0), corners)
    grad = jax.jit(jax.vmap(jax.grad(exo.likelihood)))(corners, out)
    assert bool(jnp.all(jnp.isfinite(grad)))
    assert bool(jnp.all(jnp.any(grad != 0, axis=0)))  # every parameter reaches the likelihood


def test_exo_grid_blocks_and_noise(exo):
    spec = exo.observation_schema.block("spectrum")
    wl = spec.coordinates
    assert spec.length == 233 and spec.modality.value == "spectrum"
    assert wl[0] == pytest.approx(0.52) and wl[-1] == pytest.approx(5.34)
    resolution = 1 / np.log(wl[1:] / wl[:-1])
    assert np.allclose(resolution, resolution[0]) and 95 < resolution[0] < 105
    assert exo.observation_schema.block("photometry").length == 4
    theta = exo.sample_prior(jax.random.key(3), 256)
    unc = np.asarray(exo.simulate(jax.random.key(4), theta)["spectrum"]["uncertainties"])
    base = unc / unc[:, :1] * unc[0, 0]
    np.testing.assert_allclose(base, np.broadcast_to(base[0], base.shape), rtol=1e-5)  # one curve, scaled
    factor = unc[:, 0] / unc[:, 0].min()
    assert factor.max() > 2.0  # the per-observation noise factor varies (log-uniform 0.5..2)
    curve = unc[0] / unc[0].min() * 30.0
    assert 1.0 < wl[np.argmin(curve)] < 2.0 and curve[0] > 150 and curve[-1] > 300


def _reference_theta():
    # R_p, T, H2O, CH4, CO2, CO, log P_cloud, log haze, haze slope: clear, little haze.
    return jnp.array([1.2, 1400.0, -4.0, -7.0, -7.0, -6.0, 2.0, -2.0, -4.0])


def _band(exo, lo, hi):
    wl = exo.wavelengths_um
    return (wl >= lo) & (wl <= hi)


def test_exo_more_water_deepens_the_1p4_micron_band(exo):
    theta = _reference_theta()
    wet = theta.at[2].set(-2.0)
    dry, moist = exo.noiseless_spectrum(jnp.stack([theta, wet]))
    band, window = _band(exo, 1.35, 1.45), _band(exo, 1.22, 1.28)
    feature = lambda d: float(jnp.mean(d[band]))
    assert feature(moist) > feature(dry) + 100.0  # ppm
    # and the band stands out above the neighbouring window
    assert feature(moist) - float(jnp.mean(moist[window])) > 50.0


def test_exo_larger_radius_larger_depth(exo):
    theta = _reference_theta()
    small, big = exo.noiseless_spectrum(jnp.stack([theta, theta.at[0].set(1.4)]))
    assert bool(jnp.all(big > small))


def test_exo_high_cloud_deck_flattens(exo):
    theta = _reference_theta().at[2].set(-2.0)
    clear, cloudy = exo.noiseless_spectrum(jnp.stack([theta, theta.at[6].set(-5.0)]))
    span = lambda d: float(jnp.max(d) - jnp.min(d))
    assert span(cloudy) < 0.1 * span(clear)
    assert bool(jnp.all(cloudy >= clear - 1.0))  # the deck only hides, never deepens the atmosphere


def test_exo_photometry_is_box_average(exo):
    theta = _reference_theta()[None]
    depth, phot = exo.noiseless_spectrum(theta)[0], exo.noiseless_photometry(theta)[0]
    assert float(phot[1]) == pytest.approx(float(jnp.mean(depth[_band(exo, 1.0, 1.7999)])), rel=1e-5)


def test_gaussian_linear_exact_posterior_and_evidence():
    task = get_task("gaussian_linear")
    x = task.simulate(jax.random.key(0), task.sample_prior(jax.random.key(1), 4))["x"]["values"]
    mean, cov = task.exact_posterior(x)
    np.testing.assert_allclose(mean, x / 2, rtol=1e-6)
    np.testing.assert_allclose(cov, 0.05 * np.eye(10), rtol=1e-6)
    # Bayes: log p(x) = log p(x|t) + log p(t) - log p(t|x) at any t.
    theta = task.sample_prior(jax.random.key(2), 4)
    log_post = jax.vmap(lambda t, m: jnp.sum(jax.scipy.stats.norm.logpdf(t, m, math.sqrt(0.05))))(theta, mean)
    rhs = task.log_likelihood_batch(theta, {"x": x}) + task.transform.log_prior(theta, "physical") - log_post
    np.testing.assert_allclose(task.log_evidence(x), rhs, rtol=1e-4)
    draws = task.reference_posterior_sample(jax.random.key(3), {"x": x[0]}, 4000)
    np.testing.assert_allclose(draws.mean(0), mean[0], atol=0.015)
    np.testing.assert_allclose(draws.var(0), 0.05, rtol=0.1)


def test_two_moons_likelihood_integrates_to_one():
    task = get_task("two_moons")
    theta = jnp.array([0.3, -0.5])
    centre = task.simulate(jax.random.key(0), theta[None])["x"]["values"][0]
    g = np.linspace(-0.2, 0.2, 801)
    xx, yy = np.meshgrid(float(centre[0]) + g, float(centre[1]) + g, indexing="ij")
    grid = jnp.asarray(np.stack([xx, yy], -1).reshape(-1, 2))
    dens = np.exp(np.asarray(jax.vmap(lambda x: task.likelihood(theta, {"x": {"values": x}}))(grid)))
    assert dens.sum() * (g[1] - g[0]) ** 2 == pytest.approx(1.0, abs=0.01)


def test_two_moons_reference_posterior_agrees_with_simulation():
    task = get_task("two_moons")
    n = 300
    theta = task.sample_prior(jax.random.key(0), n)
    x = task.simulate(jax.random.key(1), theta)["x"]["values"]
    draws = np.stack([
        np.asarray(task.reference_posterior_sample(jax.random.fold_in(jax.random.key(2), i), {"x": x[i]}, 20))
        for i in range(n)
    ])
    # Every draw has positive likelihood.
    ll = task.log_likelihood_batch(jnp.asarray(draws[:, 0]), {"x": x})
    assert bool(jnp.all(jnp.isfinite(ll)))
    # SBC: the rank of the true theta among posterior draws is uniform on 0..20.
    for d in range(2):
        ranks = (draws[:, :, d] < np.asarray(theta)[:, None, d]).sum(axis=1)
        counts = np.bincount(ranks // 3, minlength=7)  # 7 groups of 3 ranks each
        assert stats.chisquare(counts).pvalue > 1e-3
    # Data-averaged posterior = prior (uniform on [-1, 1]).
    assert stats.kstest(draws[:, 0].ravel(), stats.uniform(-1, 2).cdf).pvalue > 1e-4
