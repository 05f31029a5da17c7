"""Flow-matching numerics: velocity fields, OT paths, loss, ODE solvers, densities.

References: Lipman et al. 2023 (flow matching); Dax et al. 2023 (FMPE: time prior
exponent, sigma_min); Gebhard et al. 2024 (FMPE for exoplanet retrievals);
Chen et al. 2018 and Grathwohl et al. 2019 (instantaneous change of variables,
Hutchinson's estimator).
"""

from .analytic import GaussianTargetVelocity
from .config import FlowMatchingConfig
from .coordinates import Standardization, flow_space_for
from .density import log_prob, push_forward, sample, sample_and_log_prob, standard_normal_log_prob
from .divergence import (
    DIVERGENCES,
    AbstractDivergence,
    ExactDivergence,
    HutchinsonDivergence,
    build_divergence,
)
from .loss import fm_loss
from .model import FlowMatchingNetwork
from .paths import (
    interpolate,
    sample_time,
    target_velocity,
    time_prior_log_density,
    validate_sigma_min,
    validate_time_prior_exponent,
)
from .solvers import (
    SOLVERS,
    AbstractODESolver,
    AdaptiveSolver,
    MidpointSolver,
    RK4Solver,
    build_solver,
    validate_integration_steps,
)
from .vector_field import AbstractVelocityField, FourierTimeEmbedding, VelocityMLP

__all__ = [
    "AbstractDivergence", "AbstractODESolver", "AbstractVelocityField", "AdaptiveSolver",
    "DIVERGENCES", "ExactDivergence", "FlowMatchingConfig", "FlowMatchingNetwork", "Standardization",
    "flow_space_for", "FourierTimeEmbedding", "GaussianTargetVelocity",
    "HutchinsonDivergence", "MidpointSolver", "RK4Solver", "SOLVERS", "VelocityMLP",
    "build_divergence", "build_solver", "fm_loss", "interpolate", "log_prob", "push_forward",
    "sample", "sample_and_log_prob", "sample_time", "standard_normal_log_prob",
    "target_velocity", "time_prior_log_density", "validate_integration_steps",
    "validate_sigma_min", "validate_time_prior_exponent",
]
