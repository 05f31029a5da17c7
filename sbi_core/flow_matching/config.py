"""Frozen, validated configuration of the flow-matching model and its ODE numerics."""

from __future__ import annotations

from dataclasses import dataclass

from .divergence import DIVERGENCES, AbstractDivergence, build_divergence
from .paths import validate_sigma_min, validate_time_prior_exponent
from .residual_field import ResidualVelocityNet
from .solvers import SOLVERS, AbstractODESolver, build_solver, validate_integration_steps
from .vector_field import AbstractVelocityField, VelocityMLP

#: Velocity-network families by name (the ``velocity_network`` option).
VELOCITY_NETWORKS: dict[str, type[AbstractVelocityField]] = {
    "mlp": VelocityMLP,
    "residual": ResidualVelocityNet,
}


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"FlowMatchingConfig.{name} must be a positive integer, got {value!r}")


def _positive_real(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"FlowMatchingConfig.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class FlowMatchingConfig:
    """Velocity network, probability path and ODE solver settings.

    Attributes:
        velocity_network: ``'mlp'`` (plain MLP on ``[theta_t, fourier(t), context]``, the
            default) or ``'residual'`` (gated residual blocks plus a time-gated linear skip
            path, :mod:`~.residual_field`); a key of :data:`VELOCITY_NETWORKS`.
        hidden_dim: Width of the velocity network.
        num_velocity_layers: Hidden layers (``'mlp'``) or residual blocks (``'residual'``).
        num_time_frequencies: Fourier frequencies of the time embedding.
        sigma_min: Terminal width of the conditional OT path, in [0, 1).
        time_prior_exponent: alpha of the FMPE time prior (t = u^(1/(1+alpha))), > -1.
        solver: ``'midpoint'`` (reference default), ``'rk4'`` or ``'adaptive'``.
        integration_steps: Steps of the fixed-grid solvers.
        rtol: Relative tolerance of the adaptive solver.
        atol: Absolute tolerance of the adaptive solver.
        max_steps: Step budget of the adaptive solver.
        divergence: ``'exact'`` or ``'hutchinson'`` for ``log_prob``.
        num_hutchinson_probes: Probes per trajectory for ``'hutchinson'``.
    """

    velocity_network: str = "mlp"
    hidden_dim: int = 128
    num_velocity_layers: int = 3
    num_time_frequencies: int = 8
    sigma_min: float = 0.0
    time_prior_exponent: float = 0.0
    solver: str = "midpoint"
    integration_steps: int = 32
    rtol: float = 1e-5
    atol: float = 1e-5
    max_steps: int = 4096
    divergence: str = "exact"
    num_hutchinson_probes: int = 1

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "num_velocity_layers", "num_time_frequencies",
                     "max_steps", "num_hutchinson_probes"):
            _positive_int(name, getattr(self, name))
        validate_integration_steps(self.integration_steps)
        _positive_real("rtol", self.rtol)
        _positive_real("atol", self.atol)
        validate_sigma_min(self.sigma_min)
        validate_time_prior_exponent(self.time_prior_exponent)
        if self.velocity_network not in VELOCITY_NETWORKS:
            raise ValueError(
                f"unknown velocity_network {self.velocity_network!r}; known: "
                f"{', '.join(sorted(VELOCITY_NETWORKS))}"
            )
        if self.solver not in SOLVERS:
            raise ValueError(
                f"unknown solver {self.solver!r}; known solvers: {', '.join(sorted(SOLVERS))}"
            )
        if self.divergence not in DIVERGENCES:
            raise ValueError(
                f"unknown divergence {self.divergence!r}; known: {', '.join(sorted(DIVERGENCES))}"
            )

    def build_velocity(self, parameter_dim: int, context_dim: int, *, key) -> AbstractVelocityField:
        """The configured velocity network for ``parameter_dim`` parameters."""
        return VELOCITY_NETWORKS[self.velocity_network](
            parameter_dim, context_dim, hidden_dim=self.hidden_dim,
            num_velocity_layers=self.num_velocity_layers,
            num_time_frequencies=self.num_time_frequencies, key=key,
        )

    def build_solver(self, name: str | None = None) -> AbstractODESolver:
        """The configured solver, or the registry entry ``name`` with these settings."""
        return build_solver(
            self.solver if name is None else name, integration_steps=self.integration_steps,
            rtol=self.rtol, atol=self.atol, max_steps=self.max_steps,
        )

    def build_divergence(self, name: str | None = None) -> AbstractDivergence:
        """The configured divergence estimator (or ``name``)."""
        return build_divergence(
            self.divergence if name is None else name, num_probes=self.num_hutchinson_probes
        )
