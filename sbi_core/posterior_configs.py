"""Config groups of the conditional-flow posterior and the façade that routes keywords into them.

``ConditionalFlowPosterior``'s wide constructor (the user's reference signature) routes every
keyword into one frozen, validated group by concern:

* flow -> :class:`sbi_core.flows.FlowConfig`
* encoder -> :class:`sbi_core.encoders.EncoderConfig`
* optimisation / early stopping / checkpointing -> :mod:`sbi_core.configs`
* regularisation -> :class:`RegularizationConfig`
* stability gate -> :class:`StabilityConfig`
* training diagnostics -> :class:`DiagnosticsConfig`

An invalid value raises ``ValueError`` naming the keyword; so does an option that does not apply
to the chosen family or setting (e.g. ``num_spline_bins`` changed with ``flow_family='affine'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sbi_core.configs import (
    CheckpointConfig,
    EarlyStoppingConfig,
    OptimizationConfig,
    check_positive_int,
    check_real,
)
from sbi_core.encoders import EncoderConfig
from sbi_core.flows import FLOW_FAMILIES, FlowConfig

__all__ = [
    "TRAINING_OBJECTIVES",
    "RegularizationConfig",
    "StabilityConfig",
    "DiagnosticsConfig",
    "FlowPosteriorConfigs",
    "route_flow_posterior_options",
]

TRAINING_OBJECTIVES = ("npe", "elbo")

#: Options that only apply to some flow families: option -> families it applies to.
FAMILY_SPECIFIC_OPTIONS: dict[str, tuple[str, ...]] = {
    "num_spline_bins": ("spline",),
    "spline_bound": ("spline",),
    "spline_small_bin_regularization_weight": ("spline",),
    "spline_min_bin_ratio_target": ("spline",),
    "spline_entropy_regularization_weight": ("spline",),
    "spline_derivative_regularization_weight": ("spline",),
    "spline_entropy_floor": ("spline",),
    "spline_min_derivative_target": ("spline",),
    "spline_max_derivative_target": ("spline",),
    "autoregressive_transform_units": ("autoregressive", "neural_autoregressive"),
    "neural_autoregressive_min_slope": ("neural_autoregressive",),
    "neural_autoregressive_min_residual": ("neural_autoregressive",),
    "neural_autoregressive_inverse_bisection_steps": ("neural_autoregressive",),
}


@dataclass(frozen=True)
class RegularizationConfig:
    """Training-time regularisers of the conditional-flow posterior.

    Attributes:
        embedding_noise_std: Multiplier of the observational noise injected into observation
            values before encoding (0 = off; 1 = exactly the recorded uncertainties).
        embedding_noise_min_scale: Floor of the injected noise, as a fraction of the block's
            typical (median) preprocessed uncertainty; needs ``embedding_noise_std > 0``.
        aux_scale_loss_weight: Weight of the auxiliary Gaussian NLL of a linear head predicting
            each parameter's (standardised flow-space) mean and log-scale from the embedding.
        aux_parameter_loss_weight: Weight of the auxiliary mean-squared error of that head's mean.
        parameter_noise_floor: Std of the Gaussian jitter added to the training targets in
            unconstrained (logit) space; in standardised units for ``parameter_space='physical'``.
        spline_small_bin_regularization_weight: Weight of the penalty on bins narrower than
            ``spline_min_bin_ratio_target`` of a uniform bin (None or 0 = off).
        spline_min_bin_ratio_target: Smallest tolerated bin size over the uniform one, in (0, 1].
        spline_entropy_regularization_weight: Weight of the penalty on normalised bin entropy
            below ``spline_entropy_floor``.
        spline_derivative_regularization_weight: Weight of the penalty on knot derivatives
            outside ``[spline_min_derivative_target, spline_max_derivative_target]``.
        spline_entropy_floor: Normalised entropy floor, in [0, 1].
        spline_min_derivative_target: Lower derivative target (> 0).
        spline_max_derivative_target: Upper derivative target (> lower).
    """

    embedding_noise_std: float = 0.0
    embedding_noise_min_scale: float = 0.0
    aux_scale_loss_weight: float = 0.0
    aux_parameter_loss_weight: float = 0.0
    parameter_noise_floor: float = 0.0
    spline_small_bin_regularization_weight: float | None = None
    spline_min_bin_ratio_target: float = 0.2
    spline_entropy_regularization_weight: float = 0.0
    spline_derivative_regularization_weight: float = 0.0
    spline_entropy_floor: float = 0.6
    spline_min_derivative_target: float = 0.25
    spline_max_derivative_target: float = 5.0

    def __post_init__(self) -> None:
        group = type(self).__name__
        for name in ("embedding_noise_std", "embedding_noise_min_scale", "aux_scale_loss_weight",
                     "aux_parameter_loss_weight", "parameter_noise_floor",
                     "spline_entropy_regularization_weight", "spline_derivative_regularization_weight"):
            check_real(group, name, getattr(self, name), low=0.0)
        if self.spline_small_bin_regularization_weight is not None:
            check_real(group, "spline_small_bin_regularization_weight",
                       self.spline_small_bin_regularization_weight, low=0.0)
        check_real(group, "spline_min_bin_ratio_target", self.spline_min_bin_ratio_target,
                   low=0.0, high=1.0, low_inclusive=False)
        check_real(group, "spline_entropy_floor", self.spline_entropy_floor, low=0.0, high=1.0)
        check_real(group, "spline_min_derivative_target", self.spline_min_derivative_target,
                   low=0.0, low_inclusive=False)
        check_real(group, "spline_max_derivative_target", self.spline_max_derivative_target,
                   low=float(self.spline_min_derivative_target), low_inclusive=False)
        if self.embedding_noise_min_scale > 0 and self.embedding_noise_std == 0:
            raise ValueError(
                f"{group}.embedding_noise_min_scale={self.embedding_noise_min_scale} only applies "
                "when embedding_noise_std > 0 (noise injection is off)"
            )

    @property
    def small_bin_weight(self) -> float:
        """Small-bin penalty weight (None means off)."""
        return float(self.spline_small_bin_regularization_weight or 0.0)

    @property
    def uses_spline_regularization(self) -> bool:
        """Whether any spline regulariser is active."""
        return (self.small_bin_weight > 0 or self.spline_entropy_regularization_weight > 0
                or self.spline_derivative_regularization_weight > 0)

    @property
    def uses_aux_head(self) -> bool:
        """Whether the auxiliary parameter head is trained."""
        return self.aux_scale_loss_weight > 0 or self.aux_parameter_loss_weight > 0


@dataclass(frozen=True)
class StabilityConfig:
    """Thresholds a checkpoint must pass on validation to be selected (None = not checked).

    Attributes:
        inverse_forward_max_abs_error: max |inverse(forward(x)) - x| (standardised flow units).
        logdet_closure_max_abs_error: max |log det forward + log det inverse|.
        cube_edge_hit_rate: fraction of posterior draws whose cube coordinate saturates to 0 or 1
            (checked for ``cube`` and ``unconstrained`` spaces).
    """

    inverse_forward_max_abs_error: float | None = 1e-4
    logdet_closure_max_abs_error: float | None = 1e-4
    cube_edge_hit_rate: float | None = 0.0

    def __post_init__(self) -> None:
        for name in ("inverse_forward_max_abs_error", "logdet_closure_max_abs_error", "cube_edge_hit_rate"):
            value = getattr(self, name)
            if value is not None:
                check_real(type(self).__name__, name, value, low=0.0)

    def passes(self, metrics: Mapping[str, float]) -> bool:
        """True when every configured threshold is met (a missing or NaN metric is not checked)."""
        for metric, threshold in self.thresholds().items():
            value = metrics.get(metric)
            if threshold is None or value is None or value != value:
                continue
            if value > threshold:
                return False
        return True

    def thresholds(self) -> dict[str, float | None]:
        """Diagnostic name -> threshold."""
        return {
            "inverse_forward_max_abs_error": self.inverse_forward_max_abs_error,
            "logdet_closure_max_abs_error": self.logdet_closure_max_abs_error,
            "cube_edge_hit_rate": self.cube_edge_hit_rate,
        }


@dataclass(frozen=True)
class DiagnosticsConfig:
    """Training-time diagnostic plots.

    Attributes:
        verbose_diagnostics: Write loss/diagnostic plots during training.
        diagnostics_output_directory: Where plots go (required when verbose).
        diagnostics_plot_interval: Plot every this many epochs (>= 1).
    """

    verbose_diagnostics: bool = False
    diagnostics_output_directory: str | None = None
    diagnostics_plot_interval: int = 1

    def __post_init__(self) -> None:
        group = type(self).__name__
        if not isinstance(self.verbose_diagnostics, bool):
            raise ValueError(f"{group}.verbose_diagnostics must be a bool, got {self.verbose_diagnostics!r}")
        check_positive_int(group, "diagnostics_plot_interval", self.diagnostics_plot_interval)
        if self.verbose_diagnostics and not self.diagnostics_output_directory:
            raise ValueError(f"{group}: verbose_diagnostics=True needs diagnostics_output_directory")
        if not self.verbose_diagnostics and (
            self.diagnostics_output_directory is not None or self.diagnostics_plot_interval != 1
        ):
            raise ValueError(
                f"{group}: diagnostics_output_directory / diagnostics_plot_interval only apply "
                "with verbose_diagnostics=True"
            )


@dataclass(frozen=True)
class FlowPosteriorConfigs:
    """Every config group of one ``ConditionalFlowPosterior``."""

    flow: FlowConfig
    encoder: EncoderConfig
    optimization: OptimizationConfig
    early_stopping: EarlyStoppingConfig
    checkpoint: CheckpointConfig
    regularization: RegularizationConfig
    stability: StabilityConfig
    diagnostics: DiagnosticsConfig
    training_objective: str


def _check_applicability(options: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    family = options["flow_family"]
    if family not in FLOW_FAMILIES:
        raise ValueError(f"flow_family must be one of {sorted(FLOW_FAMILIES)}, got {family!r}")
    for name, families in FAMILY_SPECIFIC_OPTIONS.items():
        if family not in families and options[name] != defaults[name]:
            raise ValueError(
                f"{name}={options[name]!r} does not apply to flow_family={family!r} (it applies to "
                f"{list(families)}); leave it at its default {defaults[name]!r}"
            )
    objective = options["training_objective"]
    if objective not in TRAINING_OBJECTIVES:
        raise ValueError(f"training_objective must be one of {list(TRAINING_OBJECTIVES)}, got {objective!r}")
    if objective == "elbo" and options["parameter_space"] != "cube":
        raise ValueError(
            f"training_objective='elbo' needs parameter_space='cube', got {options['parameter_space']!r}"
        )


def route_flow_posterior_options(options: Mapping[str, Any], defaults: Mapping[str, Any]) -> FlowPosteriorConfigs:
    """Route the wide constructor's keywords into validated config groups.

    Args:
        options: Every constructor keyword and its value.
        defaults: The constructor defaults (to detect options changed for an inapplicable family).

    Raises:
        ValueError: On an invalid value or an inapplicable option.
    """
    o = options
    _check_applicability(o, defaults)
    flow = FlowConfig(
        family=o["flow_family"], num_layers=o["num_coupling_layers"], hidden_dim=o["hidden_dim"],
        conditioner_depth=o["conditioner_depth"], num_spline_bins=o["num_spline_bins"],
        spline_bound=o["spline_bound"], autoregressive_transform_units=o["autoregressive_transform_units"],
        neural_autoregressive_min_slope=o["neural_autoregressive_min_slope"],
        neural_autoregressive_min_residual=o["neural_autoregressive_min_residual"],
        neural_autoregressive_inverse_bisection_steps=o["neural_autoregressive_inverse_bisection_steps"],
        base_distribution=o["base_distribution"], use_base_affine=o["use_base_affine"],
    )
    hidden = o["encoder_hidden_dim"] if o["encoder_hidden_dim"] is not None else o["hidden_dim"]
    encoder = EncoderConfig(
        embedding_dim=o["embedding_dim"], hidden_dim=hidden, spectrum_encoder_type=o["spectrum_encoder_type"],
        n_wavelengths=o["n_wavelengths"], spectrum_embedding_dim=o["spectrum_embedding_dim"],
        photometry_embedding_dim=o["photometry_embedding_dim"], encoder_patch_size=o["encoder_patch_size"],
    )
    optimization = OptimizationConfig(**{k: o[k] for k in (
        "learning_rate", "batch_size", "num_epochs", "weight_decay", "gradient_clip_norm",
        "use_cosine_schedule", "warmup_fraction", "warmup_epochs", "min_learning_rate",
        "lr_schedule_total_epochs")})
    early = EarlyStoppingConfig(patience=o["early_stopping_patience"], min_delta=o["early_stopping_min_delta"])
    checkpoint = CheckpointConfig(directory=o["checkpoint_directory"], backend=o["checkpoint_backend"],
                                  resume=o["resume_from_checkpoint"])
    regularization = RegularizationConfig(**{k: o[k] for k in RegularizationConfig.__dataclass_fields__})
    stability = StabilityConfig(
        inverse_forward_max_abs_error=o["stable_inverse_forward_max_abs_error_threshold"],
        logdet_closure_max_abs_error=o["stable_inverse_forward_logdet_closure_max_abs_error_threshold"],
        cube_edge_hit_rate=o["stable_cube_edge_hit_rate_threshold"],
    )
    diagnostics = DiagnosticsConfig(**{k: o[k] for k in DiagnosticsConfig.__dataclass_fields__})
    return FlowPosteriorConfigs(flow, encoder, optimization, early, checkpoint, regularization,
                                stability, diagnostics, o["training_objective"])
