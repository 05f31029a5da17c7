"""The ConditionalFlowPosterior façade: reference signature, config routing, option errors."""

from __future__ import annotations

import inspect

import pytest

from sbi_core import posterior as posterior_module
from sbi_core.flow_posterior import (
    ConditionalAutoregressiveFlowPosterior,
    ConditionalFlowPosterior,
    ConditionalNeuralAutoregressiveFlowPosterior,
    ConditionalSplineFlowPosterior,
)
from sbi_core.posterior_base import PersistentPosteriorEstimator, PosteriorEstimator

# The user's reference signature (posterior-api.rst), in order.
REFERENCE_SIGNATURE = (
    "parameter_dim: int, embedding_dim: int = 128, num_coupling_layers: int = 4, hidden_dim: int = 128, "
    "conditioner_depth: int = 2, autoregressive_transform_units: int = 16, "
    "neural_autoregressive_min_slope: float = 0.001, neural_autoregressive_min_residual: float = 0.05, "
    "neural_autoregressive_inverse_bisection_steps: int = 48, learning_rate: float = 0.001, batch_size: int = 32, "
    "num_epochs: int = 5, parameter_space: str = 'unconstrained', flow_family: str = 'spline', "
    "num_spline_bins: int = 8, spline_bound: float = 10.0, base_distribution: str = 'gaussian', "
    "use_base_affine: bool = False, training_objective: str = 'npe', early_stopping_patience: int | None = None, "
    "early_stopping_min_delta: float = 0.0, checkpoint_directory: str | None = None, "
    "checkpoint_backend: str = 'auto', resume_from_checkpoint: bool = False, "
    "gradient_clip_norm: float | None = 1.0, embedding_noise_std: float = 0.0, "
    "embedding_noise_min_scale: float = 0.0, aux_scale_loss_weight: float = 0.0, "
    "aux_parameter_loss_weight: float = 0.0, parameter_noise_floor: float = 0.0, "
    "spline_small_bin_regularization_weight: float | None = None, spline_min_bin_ratio_target: float = 0.2, "
    "spline_entropy_regularization_weight: float = 0.0, spline_derivative_regularization_weight: float = 0.0, "
    "spline_entropy_floor: float = 0.6, spline_min_derivative_target: float = 0.25, "
    "spline_max_derivative_target: float = 5.0, weight_decay: float = 0.0, use_cosine_schedule: bool = False, "
    "warmup_fraction: float = 0.02, warmup_epochs: float | None = None, min_learning_rate: float = 1e-06, "
    "lr_schedule_total_epochs: float | None = None, "
    "stable_inverse_forward_max_abs_error_threshold: float | None = 0.0001, "
    "stable_inverse_forward_logdet_closure_max_abs_error_threshold: float | None = 0.0001, "
    "stable_cube_edge_hit_rate_threshold: float | None = 0.0, spectrum_encoder_type: str = 'conv1d', "
    "n_wavelengths: int = 233, spectrum_embedding_dim: int = 64, photometry_embedding_dim: int = 64, "
    "encoder_hidden_dim: int | None = None, encoder_patch_size: int = 32, seed: int = 0, "
    "task_metadata: Mapping[str, Any] | None = None, verbose_diagnostics: bool = False, "
    "diagnostics_output_directory: str | None = None, diagnostics_plot_interval: int = 1"
)


def _reference_parameters() -> list[tuple[str, str | None]]:
    out = []
    depth, item = 0, ""
    for ch in REFERENCE_SIGNATURE + ",":
        if ch == "," and depth == 0:
            name, _, rest = item.strip().partition(":")
            default = rest.partition("=")[2].strip() or None
            out.append((name.strip(), default))
            item = ""
            continue
        depth += ch in "[(" and 1 or (ch in "])" and -1 or 0)
        item += ch
    return out


def test_signature_matches_reference_names_order_and_defaults():
    params = [p for p in inspect.signature(ConditionalFlowPosterior.__init__).parameters.values() if p.name != "self"]
    reference = _reference_parameters()
    assert [p.name for p in params] == [name for name, _ in reference]
    for p, (name, default) in zip(params, reference):
        if default is None:
            assert p.default is inspect.Parameter.empty, name
        else:
            assert p.default == eval(default), name  # noqa: S307 - literal defaults from the reference


def test_reference_attributes_and_class_tree():
    post = ConditionalFlowPosterior(parameter_dim=3)
    assert isinstance(post, PersistentPosteriorEstimator) and isinstance(post, PosteriorEstimator)
    assert post.estimator_family == "conditional_flow" and post.metadata_schema_version == "0.2.0"
    for name in ("embedding_dim", "num_coupling_layers", "hidden_dim", "flow_family", "effective_flow_family",
                 "base_distribution", "training_objective", "num_spline_bins", "gradient_clip_norm",
                 "spectrum_encoder_type", "n_wavelengths", "verbose_diagnostics", "checkpoint_backend",
                 "training_artifacts", "task_name", "task_version", "task_fingerprint", "observation_schema",
                 "preprocessing_metadata_payload", "artifact_metadata", "task_metadata", "seed"):
        assert hasattr(post, name), name
    assert post.effective_flow_family == "spline" and post.batch_size == 32 and post.num_epochs == 5
    assert post.configs.optimization.learning_rate == 1e-3
    assert post.configs.encoder.hidden_dim == 128  # encoder_hidden_dim=None -> hidden_dim
    for name in ("FlowMatchingPosterior", "ConditionalFlowPosterior", "PosteriorSamples", "PosteriorBatch",
                 "TrainingArtifacts", "POSTERIOR_METADATA_SCHEMA_VERSION"):
        if name != "FlowMatchingPosterior" or hasattr(posterior_module, name):
            assert hasattr(posterior_module, name)


@pytest.mark.parametrize(
    ("cls", "family"),
    [(ConditionalSplineFlowPosterior, "spline"), (ConditionalAutoregressiveFlowPosterior, "autoregressive"),
     (ConditionalNeuralAutoregressiveFlowPosterior, "neural_autoregressive")],
)
def test_presets_force_the_family(cls, family):
    post = cls(parameter_dim=2)
    assert post.effective_flow_family == family and post.flow_family == family
    assert isinstance(post, ConditionalFlowPosterior)
    with pytest.raises(ValueError, match=f"forces flow_family='{family}'"):
        cls(parameter_dim=2, flow_family="affine")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flow_family": "glow"}, "flow_family must be one of"),
        ({"parameter_space": "log"}, "parameter_space must be one of"),
        ({"flow_family": "affine", "num_spline_bins": 12}, "num_spline_bins=12 does not apply to flow_family='affine'"),
        ({"flow_family": "affine", "spline_entropy_regularization_weight": 0.1}, "does not apply"),
        ({"flow_family": "spline", "neural_autoregressive_min_slope": 0.01}, "does not apply"),
        ({"flow_family": "spline", "autoregressive_transform_units": 4}, "does not apply"),
        ({"training_objective": "elbo"}, "needs parameter_space='cube'"),
        ({"training_objective": "fm"}, "training_objective must be one of"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_spline_bins": 1}, "num_spline_bins"),
        ({"base_distribution": "laplace"}, "base_distribution"),
        ({"checkpoint_backend": "pickle"}, "backend"),
        ({"resume_from_checkpoint": True}, "needs a checkpoint directory"),
        ({"embedding_noise_min_scale": 0.5}, "only applies when embedding_noise_std > 0"),
        ({"spectrum_encoder_type": "rnn"}, "spectrum_encoder_type"),
        ({"encoder_patch_size": 16}, "only applies to spectrum_encoder_type='patch'"),
        ({"stable_cube_edge_hit_rate_threshold": -0.1}, "cube_edge_hit_rate"),
        ({"verbose_diagnostics": True}, "needs diagnostics_output_directory"),
        ({"diagnostics_plot_interval": 5}, "only apply with verbose_diagnostics=True"),
        ({"spline_max_derivative_target": 0.1}, "spline_max_derivative_target"),
        ({"parameter_dim": 0}, "parameter_dim"),
    ],
)
def test_bad_or_inapplicable_options_raise_at_construction(kwargs, message):
    kwargs = {"parameter_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        ConditionalFlowPosterior(**kwargs)


def test_family_specific_options_accepted_for_their_family():
    ConditionalFlowPosterior(parameter_dim=2, flow_family="neural_autoregressive",
                             neural_autoregressive_min_slope=0.01, autoregressive_transform_units=4)
    ConditionalFlowPosterior(parameter_dim=2, flow_family="spline", num_spline_bins=12,
                             spline_small_bin_regularization_weight=0.1)
    ConditionalFlowPosterior(parameter_dim=2, parameter_space="cube", training_objective="elbo")
    ConditionalFlowPosterior(parameter_dim=2, spectrum_encoder_type="patch", encoder_patch_size=16)


def test_model_initialiser_is_shared_across_standardisations():
    """fit precompiles the initialiser before the standardisation is known: the weights must not
    depend on it, and must equal a direct initialisation."""
    import equinox as eqx
    import jax
    import numpy as np

    from sbi_core import flow_posterior as fp

    post = ConditionalFlowPosterior(parameter_dim=2, embedding_dim=8, hidden_dim=8, num_coupling_layers=2,
                                    spectrum_encoder_type="mlp", n_wavelengths=5)
    fp.precompile_initialiser(post, post._encoding_schema()).join()
    a = post._build_model(post._encoding_schema(), ((0.5, -1.0), (2.0, 3.0)))
    b = post._build_model(post._encoding_schema(), ((0.0, 0.0), (1.0, 1.0)))
    assert (a.shift, a.scale, b.shift, b.scale) == ((0.5, -1.0), (2.0, 3.0), (0.0, 0.0), (1.0, 1.0))
    spec = fp._ModelSpec(schema=post._encoding_schema(), parameter_dim=2, flow=post.configs.flow,
                         encoder=post.configs.encoder, regularization=post.configs.regularization,
                         shift=(0.5, -1.0), scale=(2.0, 3.0), flow_space=post.flow_space)
    key = jax.random.key(post.seed, impl="rbg")
    # The initialisation as it was compiled before (per full spec, same compiler options).
    lowered = jax.jit(lambda k: eqx.filter(fp._init_model(spec, k), eqx.is_array)).lower(key)
    direct = lowered.compile(compiler_options=fp._INIT_COMPILER_OPTIONS)(key)
    for x, y, z in zip(jax.tree.leaves(eqx.filter(a, eqx.is_array)), jax.tree.leaves(eqx.filter(b, eqx.is_array)),
                       jax.tree.leaves(direct)):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
