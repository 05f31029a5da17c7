"""Concrete amortized posteriors with a conditional normalising-flow backend.

:class:`ConditionalFlowPosterior` follows the user's reference signature exactly; its wide
constructor is a façade over the config groups of :mod:`sbi_core.posterior_configs`. The spline,
autoregressive and neural-autoregressive presets force ``flow_family``.

Coordinates (see :mod:`sbi_core.flow_losses`): the flow models standardised ``physical``
coordinates for ``parameter_space='physical'`` and standardised logit coordinates otherwise;
``sample_posterior``/``log_prob`` speak the configured space with exact Jacobians, and
:meth:`~sbi_core.posterior_base.PersistentPosteriorEstimator.to_physical` converts samples to
physical units.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
from dataclasses import dataclass
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from sbi_core.batch import PosteriorBatch
from sbi_core.encoders import build_embedding_net
from sbi_core.flow_losses import (
    PosteriorModel,
    batch_key,
    elbo_loss,
    flow_space_for,
    inject_observation_noise,
    jitter_parameters,
    npe_loss,
    to_flow_space,
)
from sbi_core.flow_posterior_io import FlowPosteriorIOMixin
from sbi_core.flows import build_flow
from sbi_core.posterior_base import PersistentPosteriorEstimator, TrainingArtifacts
from sbi_core.posterior_configs import FlowPosteriorConfigs, route_flow_posterior_options
from sbi_core.training.xla_options import legacy_fusion_options

__all__ = [
    "ConditionalFlowPosterior",
    "ConditionalSplineFlowPosterior",
    "ConditionalAutoregressiveFlowPosterior",
    "ConditionalNeuralAutoregressiveFlowPosterior",
]

_PosteriorModel = PosteriorModel


class ConditionalFlowPosterior(FlowPosteriorIOMixin, PersistentPosteriorEstimator):
    """Concrete amortized posterior using a conditional flow backend.

    Args:
        parameter_dim: Number of inferred free parameters represented by the posterior.
        embedding_dim: Size of the learned observation embedding consumed by the flow.
        num_coupling_layers: Number of conditional coupling or spline-transform layers.
        hidden_dim: Hidden width of encoder-side and flow-side MLP conditioners.
        learning_rate: Optimizer learning rate used by :class:`~sbi_core.training.SBITrainer`.
        batch_size: Simulations per optimisation step.
        num_epochs: Maximum number of passes through the training split.
        parameter_space: ``'physical'``, ``'cube'`` or ``'unconstrained'``.
        flow_family: ``'spline'``, ``'affine'``, ``'autoregressive'``, ``'neural_autoregressive'``.
        num_spline_bins: Rational-quadratic spline bins (``flow_family='spline'`` only).
        spline_bound: Finite support bound of each spline transform in latent space.
        early_stopping_patience: Non-improving epochs tolerated before stopping (None = off).
        early_stopping_min_delta: Minimum improvement for early-stopping comparisons.
        checkpoint_directory: Directory for resumable trainer checkpoints (None = off).
        checkpoint_backend: ``'auto'`` (Orbax when importable, else Equinox), ``'orbax'``,
            ``'equinox'``.
        resume_from_checkpoint: Resume ``fit`` from the latest checkpoint.
        seed: Base random seed for initialisation and sampling.
        task_metadata: User metadata persisted alongside the trained model.

    Every other keyword is documented on its config group in :mod:`sbi_core.posterior_configs`
    (regularisation, stability thresholds, diagnostics), :class:`sbi_core.flows.FlowConfig`,
    :class:`sbi_core.encoders.EncoderConfig` and :mod:`sbi_core.configs`.

    Notes:
        The posterior caches the task fingerprint, observation schema and preprocessing payload
        of the training store; inference reuses them (an observation that does not fit the
        schema raises ``TaskCompatibilityError``). ``n_wavelengths`` only sizes the default
        model skeleton built before any store is seen; ``fit`` rebuilds the model for the
        store's schema.
    """

    estimator_family = "conditional_flow"
    _forced_flow_family: str | None = None

    def __init__(
        self,
        parameter_dim: int,
        embedding_dim: int = 128,
        num_coupling_layers: int = 4,
        hidden_dim: int = 128,
        conditioner_depth: int = 2,
        autoregressive_transform_units: int = 16,
        neural_autoregressive_min_slope: float = 0.001,
        neural_autoregressive_min_residual: float = 0.05,
        neural_autoregressive_inverse_bisection_steps: int = 48,
        learning_rate: float = 0.001,
        batch_size: int = 32,
        num_epochs: int = 5,
        parameter_space: str = "unconstrained",
        flow_family: str = "spline",
        num_spline_bins: int = 8,
        spline_bound: float = 10.0,
        base_distribution: str = "gaussian",
        use_base_affine: bool = False,
        training_objective: str = "npe",
        early_stopping_patience: int | None = None,
        early_stopping_min_delta: float = 0.0,
        checkpoint_directory: str | None = None,
        checkpoint_backend: str = "auto",
        resume_from_checkpoint: bool = False,
        gradient_clip_norm: float | None = 1.0,
        embedding_noise_std: float = 0.0,
        embedding_noise_min_scale: float = 0.0,
        aux_scale_loss_weight: float = 0.0,
        aux_parameter_loss_weight: float = 0.0,
        parameter_noise_floor: float = 0.0,
        spline_small_bin_regularization_weight: float | None = None,
        spline_min_bin_ratio_target: float = 0.2,
        spline_entropy_regularization_weight: float = 0.0,
        spline_derivative_regularization_weight: float = 0.0,
        spline_entropy_floor: float = 0.6,
        spline_min_derivative_target: float = 0.25,
        spline_max_derivative_target: float = 5.0,
        weight_decay: float = 0.0,
        use_cosine_schedule: bool = False,
        warmup_fraction: float = 0.02,
        warmup_epochs: float | None = None,
        min_learning_rate: float = 1e-06,
        lr_schedule_total_epochs: float | None = None,
        stable_inverse_forward_max_abs_error_threshold: float | None = 0.0001,
        stable_inverse_forward_logdet_closure_max_abs_error_threshold: float | None = 0.0001,
        stable_cube_edge_hit_rate_threshold: float | None = 0.0,
        spectrum_encoder_type: str = "conv1d",
        n_wavelengths: int = 233,
        spectrum_embedding_dim: int = 64,
        photometry_embedding_dim: int = 64,
        encoder_hidden_dim: int | None = None,
        encoder_patch_size: int = 32,
        seed: int = 0,
        task_metadata: Mapping[str, Any] | None = None,
        verbose_diagnostics: bool = False,
        diagnostics_output_directory: str | None = None,
        diagnostics_plot_interval: int = 1,
    ) -> None:
        options = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__(parameter_dim, parameter_space, seed, task_metadata)
        if checkpoint_directory is not None:
            options["checkpoint_directory"] = str(checkpoint_directory)
        if diagnostics_output_directory is not None:
            options["diagnostics_output_directory"] = str(diagnostics_output_directory)
        self.configs: FlowPosteriorConfigs = route_flow_posterior_options(options, constructor_defaults())
        self._options = {k: v for k, v in options.items() if k != "task_metadata"}
        for name, value in self._options.items():
            if name not in ("parameter_dim", "parameter_space", "seed"):
                setattr(self, name, value)
        self.effective_flow_family = self.configs.flow.family
        self._model: PosteriorModel | None = None
        self._preprocessor: Any = None
        self._standardization: tuple[tuple[float, ...], tuple[float, ...]] = (
            (0.0,) * self.parameter_dim, (1.0,) * self.parameter_dim)

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> PosteriorModel:
        """The trainable pytree (embedding net + flow); a default skeleton until ``fit``."""
        if self._model is None:
            self._model = self._build_model(self._schema_object() or self._default_schema())
        return self._model

    @model.setter
    def model(self, value: PosteriorModel) -> None:
        self._model = value

    @property
    def flow_space(self) -> str:
        """The space the flow models: ``physical`` or ``unconstrained``."""
        return flow_space_for(self.parameter_space)

    def _build_flow(self, key: jax.Array) -> Any:
        return build_flow(key, self.parameter_dim, self.configs.encoder.embedding_dim, self.configs.flow)

    def _build_model(self, schema: Any, standardization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
                     *, abstract: bool = False) -> PosteriorModel:
        """Initialise the model for ``schema`` (``abstract=True``: shapes only, for loading).

        Initialisation runs as one compiled program with an ``rbg`` key: far cheaper to compile
        than eager per-layer threefry draws (the weights are saved, so the init stream only has
        to be deterministic on one platform).
        """
        shift, scale = standardization or self._standardization
        schema = self._network_schema(schema)  # + derived blocks of the preprocessing (idempotent)
        spec = _ModelSpec(schema=schema, parameter_dim=self.parameter_dim, flow=self.configs.flow,
                          encoder=self.configs.encoder, regularization=self.configs.regularization,
                          shift=tuple(shift), scale=tuple(scale), flow_space=self.flow_space)
        key = jax.random.key(self.seed, impl="rbg")
        if abstract:
            return eqx.filter_eval_shape(_init_model, spec, key)
        return _init_model_jit(spec, key)

    # ------------------------------------------------------------------ losses (reference API)
    @staticmethod
    def _batch_embeddings(model: PosteriorModel, observations: Any) -> jnp.ndarray:
        return model.embed(observations)

    @staticmethod
    def _loss(model: PosteriorModel, batch: PosteriorBatch) -> jnp.ndarray:
        """Mean NLL of a prepared batch (flow-space parameters, preprocessed observations)."""
        return ConditionalFlowPosterior._loss_from_observations(
            model, batch.parameters, batch.observations, model.flow_space, include_spline_regularization=False)

    @staticmethod
    def _training_loss(model: PosteriorModel, batch: PosteriorBatch) -> jnp.ndarray:
        """:meth:`_loss` plus the auxiliary and spline regularisers."""
        return ConditionalFlowPosterior._loss_from_observations(
            model, batch.parameters, batch.observations, model.flow_space, include_spline_regularization=True)

    @staticmethod
    def _loss_from_observations(model: PosteriorModel, parameters: jnp.ndarray, observations: Any,
                                parameter_space: str, *, include_spline_regularization: bool) -> jnp.ndarray:
        x, _ = to_flow_space(jnp.asarray(parameters), parameter_space, model.flow_space)
        return npe_loss(model, x, observations, include_regularization=include_spline_regularization)

    @staticmethod
    def _make_parameter_noise_loss(base_loss_fn: Callable, noise_floor: float, parameter_space: str) -> Callable:
        """Wrap a training loss so the parameter *targets* are jittered.

        Minimizing the conditional NLL in a very-low-noise regime with a highly
        parameter-predictive embedding drives the learned conditional density toward a delta,
        which an over-sharp flow realizes as exploded transforms (and cube-edge collapse). A
        small Gaussian jitter on the targets gives the conditional a hard minimum width. The
        jitter is applied in *unconstrained* (logit) space -- symmetric and boundary-free --
        (for ``physical`` in standardised units). Training only; evaluation and checkpoint
        selection use the clean targets.
        """

        def loss(model: PosteriorModel, batch: PosteriorBatch) -> jnp.ndarray:
            key = jax.random.fold_in(batch_key(batch), 1)
            params = jitter_parameters(model, jnp.asarray(batch.parameters), key, noise_floor, parameter_space)
            return base_loss_fn(model, PosteriorBatch(params, batch.observations, batch.metadata))

        return loss

    @staticmethod
    def _make_elbo_loss(log_likelihood_fn: Callable, parameter_space: str, *, num_samples: int = 1) -> Callable:
        """Return an amortized-variational (ELBO) training loss (``parameter_space='cube'``).

        ``-E_q[log p(x|theta) + log p(theta) - log q(theta|x)]`` with ``num_samples``
        reparameterised draws per observation pushed through the flow; ``log p(theta_cube) = 0``
        (uniform on the cube). ``log_likelihood_fn(theta_cube (B, P), observations) -> (B,)``
        receives the batch's raw prestacked observations (``metadata['raw_observations']``).
        """
        if parameter_space != "cube":
            raise ValueError(f"the ELBO objective needs parameter_space='cube', got {parameter_space!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"elbo_num_samples must be an integer >= 1, got {num_samples!r}")

        def loss(model: PosteriorModel, batch: PosteriorBatch) -> jnp.ndarray:
            raw = batch.metadata.get("raw_observations", batch.observations)
            return elbo_loss(model, batch.observations, raw, batch_key(batch), log_likelihood_fn, num_samples)

        return loss

    @staticmethod
    def _make_noisy_loss(noise_std: float, preprocessing_metadata: Any = None, *, noise_min_scale: float = 0.0,
                         include_spline_regularization: bool = True) -> Callable:
        """Return a loss that injects Gaussian noise into the observations before encoding.

        Preprocessed uncertainties are in the same transformed units as the values, so noise is
        ``noise_std * max(sigma, noise_min_scale * typical_sigma)`` per element, with
        ``typical_sigma`` the block's median preprocessed uncertainty from
        ``preprocessing_metadata['typical_uncertainty']`` (``noise_std`` multiplies the
        observational noise; 1.0 = exact). Blocks without uncertainties, or everything when
        ``preprocessing_metadata`` is None, get flat noise of scale ``noise_std``.
        """
        typical = None
        if isinstance(preprocessing_metadata, Mapping):
            typical = dict(preprocessing_metadata.get("typical_uncertainty") or {})

        def loss(model: PosteriorModel, batch: PosteriorBatch) -> jnp.ndarray:
            obs = batch.observations
            if noise_std > 0:
                key = jax.random.fold_in(batch_key(batch), 2)
                obs = inject_observation_noise(obs, key, noise_std, typical, noise_min_scale)
            return ConditionalFlowPosterior._loss_from_observations(
                model, batch.parameters, obs, model.flow_space,
                include_spline_regularization=include_spline_regularization)

        return loss

    def _validation_diagnostics(self, model: PosteriorModel, batch: PosteriorBatch) -> dict[str, float]:
        """Stability diagnostics on a prepared batch (see :func:`flow_losses.stability_diagnostics`)."""
        from sbi_core.flow_training import make_diagnostics_fn

        return make_diagnostics_fn(self.seed)(model, batch.parameters, batch.observations)

    # ------------------------------------------------------------------ training
    def fit(self, dataset: Any, *, elbo_log_likelihood_fn: Callable | None = None,
            elbo_num_samples: int = 1, center_spectrum_levels: bool = True,
            parameter_average_decay: float | None = None) -> TrainingArtifacts:
        """Train the posterior on one normalized simulation dataset reader.

        Args:
            dataset: A ``SimulationStore`` (``sbi_core.dataset.open_store``) or any reader with
                the same interface (``read``, ``iter_chunks``, ``iter_batches``, manifest).
            elbo_log_likelihood_fn: Required when ``training_objective='elbo'``:
                ``(theta_cube (B, P), raw observations) -> (B,)`` differentiable log-likelihood.
            elbo_num_samples: Reparameterised draws per observation for the ELBO (default 1).
            center_spectrum_levels: Subtract each spectrum's per-sample level before the
                per-element standardisation and feed it as a derived ``"<block>.level"`` block
                (default; ``False``: plain per-element standardisation). Saved with the model.
            parameter_average_decay: Validate, select and keep an exponential moving average of
                the weights with this decay in (0, 1) instead of the raw weights (less gradient
                noise in the selected model; ``training/parameter_average.py``). None (default):
                the raw weights, as the reference describes. Recorded in the training metadata.

        Returns:
            Training history, validation metrics and trainer metadata.
        """
        from sbi_core.flow_fit import run_fit

        return run_fit(self, dataset, elbo_log_likelihood_fn, elbo_num_samples, center_spectrum_levels,
                       parameter_average_decay)


@dataclass(frozen=True)
class _ModelSpec:
    """Everything (hashable) that fixes the model's structure."""

    schema: Any
    parameter_dim: int
    flow: Any
    encoder: Any
    regularization: Any
    shift: tuple[float, ...]
    scale: tuple[float, ...]
    flow_space: str


def _init_model(spec: _ModelSpec, key: jax.Array) -> PosteriorModel:
    k_enc, k_flow, k_aux = jax.random.split(key, 3)
    embedding_dim = spec.encoder.embedding_dim
    aux = (eqx.nn.Linear(embedding_dim, 2 * spec.parameter_dim, key=k_aux)
           if spec.regularization.uses_aux_head else None)
    return PosteriorModel(
        embedding_net=build_embedding_net(spec.schema, spec.encoder, k_enc),
        flow=build_flow(k_flow, spec.parameter_dim, embedding_dim, spec.flow), aux_head=aux,
        shift=spec.shift, scale=spec.scale, flow_space=spec.flow_space, regularization=spec.regularization,
    )


#: Initialisation runs once: compile it without the expensive optimisation passes.
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_INIT_CACHE: dict[_ModelSpec, Any] = {}
_STATIC_CACHE: dict[_ModelSpec, Any] = {}


def _weights_spec(spec: _ModelSpec) -> _ModelSpec:
    """``spec`` without the standardisation: the initial weights do not depend on it (shift and
    scale are static fields of the model), so one compiled initialiser serves every store."""
    unit = (0.0,) * spec.parameter_dim, (1.0,) * spec.parameter_dim
    return dataclasses.replace(spec, shift=unit[0], scale=unit[1])


def _compiled_initialiser(spec: _ModelSpec) -> Any:
    """The compiled ``key -> weights`` of :func:`_init_model` for ``spec`` (cached)."""
    weights_spec = _weights_spec(spec)
    compiled = _INIT_CACHE.get(weights_spec)
    if compiled is None:
        key = jax.random.key(0, impl="rbg")
        # Leaves only: the tree structure carries the (placeholder) standardisation.
        lowered = jax.jit(lambda k: jax.tree.leaves(eqx.filter(_init_model(weights_spec, k), eqx.is_array))).lower(key)
        try:
            compiled = lowered.compile(compiler_options=legacy_fusion_options(**_INIT_COMPILER_OPTIONS))
        except Exception:  # noqa: BLE001 - a backend without these options: default compile
            compiled = lowered.compile()
        compiled = _INIT_CACHE[weights_spec] = compiled
    return compiled


def _init_model_jit(spec: _ModelSpec, key: jax.Array) -> PosteriorModel:
    """:func:`_init_model` compiled once per structure at low optimisation (3x cheaper to compile).

    The static part (including the standardisation) comes from an abstract evaluation of
    ``spec`` itself; the weights from the compiled initialiser shared across standardisations.
    """
    cached = _STATIC_CACHE.get(spec)
    if cached is None:
        shapes = eqx.filter_eval_shape(_init_model, spec, key)
        is_array = lambda leaf: isinstance(leaf, jax.ShapeDtypeStruct)  # noqa: E731
        cached = _STATIC_CACHE[spec] = (jax.tree.structure(eqx.filter(shapes, is_array)),
                                        eqx.filter(shapes, is_array, inverse=True))
    arrays_def, static = cached
    return eqx.combine(jax.tree.unflatten(arrays_def, _compiled_initialiser(spec)(key)), static)


def precompile_initialiser(posterior: ConditionalFlowPosterior, schema: Any) -> threading.Thread:
    """Compile ``posterior``'s model initialiser for ``schema`` in a background thread.

    ``fit`` starts this before reading and preparing the training data (the standardisation is
    not needed for the weights) and joins it before building the model, so the compile overlaps
    the data preparation. Errors are left to the real call.
    """
    spec = _ModelSpec(schema=schema, parameter_dim=posterior.parameter_dim, flow=posterior.configs.flow,
                      encoder=posterior.configs.encoder, regularization=posterior.configs.regularization,
                      shift=(0.0,) * posterior.parameter_dim, scale=(1.0,) * posterior.parameter_dim,
                      flow_space=posterior.flow_space)

    def run() -> None:
        try:
            _compiled_initialiser(spec)
        except Exception:  # noqa: BLE001 - the real call raises it
            pass

    thread = threading.Thread(target=run, daemon=True, name="sbi-init-compile")
    thread.start()
    return thread


def constructor_defaults() -> dict[str, Any]:
    """Defaults of :class:`ConditionalFlowPosterior`'s constructor keywords."""
    sig = inspect.signature(ConditionalFlowPosterior.__init__)
    return {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def constructor_keywords() -> tuple[str, ...]:
    """Every constructor keyword of :class:`ConditionalFlowPosterior`, in order."""
    return tuple(n for n in inspect.signature(ConditionalFlowPosterior.__init__).parameters if n != "self")


_FLOW_FAMILY_POSITION = constructor_keywords().index("flow_family")


def _preset(name: str, family: str, doc: str) -> type[ConditionalFlowPosterior]:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        positional = len(args) > _FLOW_FAMILY_POSITION
        given = args[_FLOW_FAMILY_POSITION] if positional else kwargs.get("flow_family", family)
        if given != family:
            raise ValueError(f"{name} forces flow_family={family!r}; got flow_family={given!r}")
        if not positional:
            kwargs["flow_family"] = family
        ConditionalFlowPosterior.__init__(self, *args, **kwargs)

    cls = type(name, (ConditionalFlowPosterior,), {"__init__": __init__, "__doc__": doc,
                                                    "_forced_flow_family": family, "__module__": __name__})
    return cls


ConditionalSplineFlowPosterior = _preset(
    "ConditionalSplineFlowPosterior", "spline",
    "Posterior estimator specialized to the spline flow backend.\n\n"
    "This convenience subclass forces ``flow_family='spline'`` while keeping the rest of the\n"
    ":class:`ConditionalFlowPosterior` API unchanged.")
ConditionalAutoregressiveFlowPosterior = _preset(
    "ConditionalAutoregressiveFlowPosterior", "autoregressive",
    "Posterior estimator specialized to the autoregressive flow backend.")
ConditionalNeuralAutoregressiveFlowPosterior = _preset(
    "ConditionalNeuralAutoregressiveFlowPosterior", "neural_autoregressive",
    "Posterior estimator specialized to the neural autoregressive backend.")
