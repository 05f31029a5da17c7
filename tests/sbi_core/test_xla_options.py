"""XLA:CPU legacy-fusion options: where they apply, that the spline fit uses them, and that they
compute the same thing."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.training import xla_options as kj


@pytest.fixture(autouse=True)
def _fresh_option_cache():
    kj._applicable_options.cache_clear()
    yield
    kj._applicable_options.cache_clear()


def test_cpu_kernels_get_the_legacy_fusion_emitter_option():
    assert jax.default_backend() == "cpu"
    assert kj.legacy_fusion_options() == kj.LEGACY_CPU_FUSION
    merged = kj.legacy_fusion_options(xla_backend_optimization_level=0)
    assert merged == {**kj.LEGACY_CPU_FUSION, "xla_backend_optimization_level": 0}
    merged["mutated"] = 1  # a fresh dict every call: callers cannot poison the cache
    assert "mutated" not in kj.legacy_fusion_options()


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_environment_opt_out_keeps_xla_defaults(monkeypatch, value):
    monkeypatch.setenv(kj.FUSION_EMITTERS_ENV, value)
    assert kj.legacy_fusion_options() == {}
    assert kj.legacy_fusion_options(xla_backend_optimization_level=0) == {"xla_backend_optimization_level": 0}


def test_options_this_jaxlib_refuses_are_dropped(monkeypatch):
    monkeypatch.setattr(kj, "LEGACY_CPU_FUSION", {"xla_no_such_option_in_any_release": True})
    assert kj.legacy_fusion_options() == {}


def test_other_backends_get_no_options(monkeypatch):
    monkeypatch.setattr(kj.jax, "default_backend", lambda: "gpu")
    assert kj.legacy_fusion_options() == {}


def test_legacy_fusion_jit_passes_the_options_and_keywords_to_filter_jit(monkeypatch):
    seen = {}

    def fake_filter_jit(fn, **kwargs):
        seen.update(kwargs)
        return fn

    monkeypatch.setattr(kj.eqx, "filter_jit", fake_filter_jit)
    kernel = kj.legacy_fusion_jit(lambda x: x + 1, donate="all-except-first")
    assert seen == {}  # built on first call, not at decoration (no backend start at import)
    assert kernel(1) == 2
    assert seen == {"compiler_options": kj.LEGACY_CPU_FUSION, "donate": "all-except-first"}


def test_legacy_fusion_jit_matches_filter_jit_on_a_flow_like_kernel():
    key = jax.random.key(0)
    mlp = eqx.nn.MLP(3, 2, 16, 2, key=key)
    x = jax.random.normal(jax.random.key(1), (64, 3))

    def loss(model, batch):
        out = jax.vmap(model)(batch)
        return jnp.mean(jnp.tanh(out) ** 2 + jnp.log1p(jnp.exp(out)))

    grad = eqx.filter_grad(loss)
    ours = kj.legacy_fusion_jit(grad)(mlp, x)
    reference = eqx.filter_jit(grad)(mlp, x)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_decorator_form_keeps_the_name():
    @kj.legacy_fusion_jit
    def doubled(x):
        return 2 * x

    assert doubled.__name__ == "doubled"
    np.testing.assert_allclose(doubled(jnp.arange(3.0)), [0.0, 2.0, 4.0])


# -- where the options are used ---------------------------------------------------------------


def test_only_the_spline_flow_trains_with_the_legacy_emitter():
    from sbi_core.flow_fit import LEGACY_FUSION_FAMILIES, training_compiler_options

    assert LEGACY_FUSION_FAMILIES == {"spline"}
    assert training_compiler_options("spline") == kj.LEGACY_CPU_FUSION
    for family in ("affine", "autoregressive", "neural_autoregressive"):
        assert training_compiler_options(family) == {}


def test_trainer_with_compiler_options_trains_the_same_model():
    from sbi_core.configs import OptimizationConfig
    from sbi_core.training import InMemoryData, SBITrainer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 3)).astype(np.float32)
    y = np.sin(x[:, :1]).astype(np.float32)
    train, validation = InMemoryData(y[:128], {"x": x[:128]}), InMemoryData(y[128:], {"x": x[128:]})

    def loss(model, parameters, observations, key):
        return jnp.mean((jax.vmap(model)(observations["x"]) - parameters) ** 2)

    def eval_loss(model, parameters, observations):
        return loss(model, parameters, observations, None)

    optimization = OptimizationConfig(learning_rate=1e-2, batch_size=32, num_epochs=4)
    results = []
    for options in (None, kj.legacy_fusion_options()):
        trainer = SBITrainer(optimization, progress=False, compiler_options=options)
        model = eqx.nn.MLP(3, 1, 16, 1, key=jax.random.key(0))
        results.append(trainer.fit(model, train_loss=loss, eval_loss=eval_loss, train_data=train,
                                   validation_data=validation))
    default, legacy = results
    np.testing.assert_allclose(legacy.history["train_loss"], default.history["train_loss"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(eqx.filter(legacy.model, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(default.model, eqx.is_array)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_trainer_refuses_compiler_options_that_are_not_a_mapping():
    from sbi_core.training import SBITrainer

    with pytest.raises(ValueError, match="compiler_options must be a mapping"):
        SBITrainer(compiler_options=["xla_cpu_use_fusion_emitters"])


class _StopBeforeTraining(Exception):
    pass


@pytest.mark.parametrize(("family", "expected"), [("spline", kj.LEGACY_CPU_FUSION), ("affine", {})])
def test_fit_hands_the_family_options_to_the_trainer_and_diagnostics(tmp_path, monkeypatch, family, expected):
    from sbi_core import flow_fit
    from sbi_core.posterior import ConditionalFlowPosterior
    from tests.sbi_core.posterior_helpers import toy_store

    seen = {}
    real_diagnostics = flow_fit.make_diagnostics_fn

    def diagnostics_spy(*args, **kwargs):
        seen["diagnostics"] = kwargs.get("compiler_options")
        return real_diagnostics(*args, **kwargs)

    class TrainerSpy(flow_fit.SBITrainer):
        def fit(self, *args, **kwargs):
            seen["trainer"] = dict(self.compiler_options)
            raise _StopBeforeTraining

    monkeypatch.setattr(flow_fit, "make_diagnostics_fn", diagnostics_spy)
    monkeypatch.setattr(flow_fit, "SBITrainer", TrainerSpy)
    store = toy_store(tmp_path / "toy.zarr", n=64)
    posterior = ConditionalFlowPosterior(parameter_dim=store.parameter_dim, flow_family=family,
                                         num_coupling_layers=2, hidden_dim=8, num_epochs=1)
    with pytest.raises(_StopBeforeTraining):
        posterior.fit(store)
    assert seen == {"diagnostics": expected, "trainer": expected}
