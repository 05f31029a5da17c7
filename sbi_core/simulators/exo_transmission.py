"""``exo_transmission``: retrieval of an isothermal hot giant from a PRISM-like spectrum.

Parameters (physical units, retrieval-style priors):

==================  ==========  ======================  ===========================================
name                unit        prior                   meaning
==================  ==========  ======================  ===========================================
R_p                 R_jup       uniform(0.8, 1.6)       radius at the 10 bar reference pressure
T                   K           uniform(500, 2500)      isothermal temperature
log_X_H2O           dex         uniform(-8, -1)         log10 volume mixing ratio of H2O
log_X_CH4           dex         uniform(-8, -1)         log10 volume mixing ratio of CH4
log_X_CO2           dex         uniform(-8, -1)         log10 volume mixing ratio of CO2
log_X_CO            dex         uniform(-8, -1)         log10 volume mixing ratio of CO
log_P_cloud         log10(bar)  uniform(-6, 2)          grey cloud-top pressure
log_haze            dex         uniform(-2, 6)          haze enhancement over H2 Rayleigh at 0.35 um
haze_slope          (none)      uniform(-12, 0)         haze power-law slope (Rayleigh = -4)
==================  ==========  ======================  ===========================================

Blocks:

* ``spectrum`` (modality ``spectrum``, 233 values, uncertainties): transit depth in **ppm**
  on the geometric 0.52-5.34 micron grid (coordinates = bin centres in micron). Uncertainties
  follow a PRISM-like curve (30 ppm at 1.4 micron rising to 250 / 350 ppm at the blue / red
  ends) times a per-observation noise factor ``f ~ log-uniform(0.5, 2)``, so a posterior
  trained on these simulations is noise-conditional; values = noiseless depth + Gaussian noise.
* ``photometry`` (modality ``photometry``, 4 values, uncertainties): box-averaged noiseless
  depths [ppm] over 0.6-1.0, 1.0-1.8, 1.8-3.0 and 3.0-5.0 micron (coordinates = band centres),
  uncertainties ``f x (60, 30, 30, 60)`` ppm, plus Gaussian noise.

The likelihood is the matching Gaussian of both blocks given the observed uncertainties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from sbi_core.observation import ObservationModality
from sbi_core.priors import UniformPrior
from sbi_core.simulators.transmission import (
    TransmissionModel,
    photometric_band_weights,
    prism_noise_curve_ppm,
    wavelength_grid,
)
from sbi_core.task import (
    NoiseModelConfig,
    ObservationBlockSpec,
    ObservationSchema,
    ObservationValueConstraint,
    ParameterSpec,
    SBITask,
)

__all__ = ["ExoTransmissionTask", "exo_transmission", "PARAMETERS"]

VERSION = "1.0"
PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("R_p", "R_jup", UniformPrior(0.8, 1.6)),
    ParameterSpec("T", "K", UniformPrior(500.0, 2500.0)),
    ParameterSpec("log_X_H2O", "dex", UniformPrior(-8.0, -1.0)),
    ParameterSpec("log_X_CH4", "dex", UniformPrior(-8.0, -1.0)),
    ParameterSpec("log_X_CO2", "dex", UniformPrior(-8.0, -1.0)),
    ParameterSpec("log_X_CO", "dex", UniformPrior(-8.0, -1.0)),
    ParameterSpec("log_P_cloud", "log10(bar)", UniformPrior(-6.0, 2.0)),
    ParameterSpec("log_haze", "dex", UniformPrior(-2.0, 6.0)),
    ParameterSpec("haze_slope", "", UniformPrior(-12.0, 0.0)),
)
PHOTOMETRIC_BANDS_UM = ((0.6, 1.0), (1.0, 1.8), (1.8, 3.0), (3.0, 5.0))
PHOTOMETRIC_ERRORS_PPM = (60.0, 30.0, 30.0, 60.0)


@dataclass(frozen=True, eq=False)
class ExoTransmissionTask(SBITask):
    """SBITask with access to the noiseless forward model."""

    model: TransmissionModel | None = None
    band_weights: np.ndarray | None = None

    @property
    def wavelengths_um(self) -> np.ndarray:
        """Spectral bin centres [micron]."""
        return self.model.wavelengths_um

    def noiseless_spectrum(self, theta: Float[Array, "*b 9"]) -> Float[Array, "*b 233"]:
        """Noiseless transit depth [ppm] for physical ``theta`` (any leading batch axes)."""
        theta = jnp.asarray(theta, dtype=jnp.result_type(float))
        if theta.ndim == 0 or theta.shape[-1] != self.parameter_dim:
            raise ValueError(f"exo_transmission: theta has shape {theta.shape}, expected (..., {self.parameter_dim})")
        out = self._depth_batch(theta.reshape(-1, theta.shape[-1]))
        return out.reshape(*theta.shape[:-1], out.shape[-1])

    @cached_property
    def _depth_batch(self):
        return jax.jit(jax.vmap(self.model.depth_ppm))

    def noiseless_photometry(self, theta: Float[Array, "*b 9"]) -> Float[Array, "*b 4"]:
        """Noiseless band-averaged depths [ppm]."""
        return self.noiseless_spectrum(theta) @ jnp.asarray(self.band_weights.T, jnp.result_type(float))


def _gaussian_log_density(x: Array, mean: Array, sigma: Array) -> Array:
    z = (x - mean) / sigma
    return jnp.sum(-0.5 * z**2 - jnp.log(sigma) - 0.5 * math.log(2 * math.pi))


def _check_config(noise_factor_range, stellar_radius_rsun, planet_mass_mjup, reference_pressure_bar, oversample):
    lo, hi = (float(v) for v in noise_factor_range)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"exo_transmission: noise_factor_range must satisfy 0 < low <= high, got {noise_factor_range!r}")
    for name, value in (("stellar_radius_rsun", stellar_radius_rsun), ("planet_mass_mjup", planet_mass_mjup),
                        ("reference_pressure_bar", reference_pressure_bar)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"exo_transmission: {name} must be a finite positive number, got {value!r}")
    if isinstance(oversample, bool) or not isinstance(oversample, int) or oversample < 1:
        raise ValueError(f"exo_transmission: oversample must be a positive integer, got {oversample!r}")
    return lo, hi


def _schema(wl: np.ndarray) -> ObservationSchema:
    """``spectrum`` (233 bins, coordinates = micron) and ``photometry`` (band centres) blocks."""
    positive = ObservationValueConstraint(min_value=0.0)  # transit depths are non-negative
    centres = np.array([(lo + hi) / 2 for lo, hi in PHOTOMETRIC_BANDS_UM])
    return ObservationSchema((
        ObservationBlockSpec("spectrum", ObservationModality.SPECTRUM, len(wl), True, wl, positive),
        ObservationBlockSpec("photometry", ObservationModality.PHOTOMETRY, len(centres), True, centres, positive),
    ))


def _noise_model(f_lo: float, f_hi: float) -> NoiseModelConfig:
    return NoiseModelConfig("observational", {
        "kind": "gaussian",
        "noise_factor": {"kind": "log_uniform", "low": f_lo, "high": f_hi},
        "spectrum_sigma_ppm": {"curve": "prism_noise_curve_ppm", "floor_ppm": 30.0, "best_um": 1.4,
                               "blue_edge_ppm": 250.0, "red_edge_ppm": 350.0},
        "photometry_sigma_ppm": list(PHOTOMETRIC_ERRORS_PPM),
    })


def exo_transmission(
    noise_factor_range: tuple[float, float] = (0.5, 2.0),
    stellar_radius_rsun: float = 1.0,
    planet_mass_mjup: float = 1.0,
    reference_pressure_bar: float = 10.0,
    oversample: int = 4,
) -> ExoTransmissionTask:
    """Build the ``exo_transmission`` task (see the module docstring)."""
    f_lo, f_hi = _check_config(noise_factor_range, stellar_radius_rsun, planet_mass_mjup,
                               reference_pressure_bar, oversample)
    wl = wavelength_grid()
    model = TransmissionModel.build(wl, oversample=oversample, stellar_radius_rsun=stellar_radius_rsun,
                                    planet_mass_mjup=planet_mass_mjup, reference_pressure_bar=reference_pressure_bar)
    weights = photometric_band_weights(wl, PHOTOMETRIC_BANDS_UM)
    spec_sigma = prism_noise_curve_ppm(wl)
    phot_sigma = np.asarray(PHOTOMETRIC_ERRORS_PPM)

    def simulate_one(key: PRNGKeyArray, theta: Float[Array, " 9"]) -> dict:
        kf, ks, kp = jax.random.split(key, 3)
        log_f = jax.random.uniform(kf, (), theta.dtype, math.log(f_lo), math.log(f_hi))
        depth = model.depth_ppm(theta)
        phot = jnp.asarray(weights, theta.dtype) @ depth
        s_unc = jnp.exp(log_f) * jnp.asarray(spec_sigma, theta.dtype)
        p_unc = jnp.exp(log_f) * jnp.asarray(phot_sigma, theta.dtype)
        return {
            "spectrum": {"values": depth + s_unc * jax.random.normal(ks, depth.shape, theta.dtype),
                         "uncertainties": s_unc},
            "photometry": {"values": phot + p_unc * jax.random.normal(kp, phot.shape, theta.dtype),
                           "uncertainties": p_unc},
        }

    def log_likelihood(theta: Float[Array, " 9"], obs: dict) -> Float[Array, ""]:
        depth = model.depth_ppm(theta)
        phot = jnp.asarray(weights, depth.dtype) @ depth
        spec, ph = obs["spectrum"], obs["photometry"]
        return (_gaussian_log_density(spec["values"], depth, spec["uncertainties"])
                + _gaussian_log_density(ph["values"], phot, ph["uncertainties"]))

    return ExoTransmissionTask(
        name="exo_transmission", version=VERSION, parameters=PARAMETERS, observation_schema=_schema(wl),
        noise_model=_noise_model(f_lo, f_hi), simulator=simulate_one, likelihood=log_likelihood,
        config={"stellar_radius_rsun": stellar_radius_rsun, "planet_mass_mjup": planet_mass_mjup,
                "reference_pressure_bar": reference_pressure_bar, "oversample": oversample,
                "depth_unit": "ppm", "photometric_bands_um": [list(b) for b in PHOTOMETRIC_BANDS_UM]},
        description="isothermal hot-giant transmission spectrum (Heng & Kitzmann 2017), PRISM-like noise",
        model=model, band_weights=weights,
    )
