"""Analytic transmission spectrum of an isothermal hot giant (the ``exo_transmission`` physics).

Transit radius (Heng & Kitzmann 2017, eq. 12, isothermal, hydrostatic, constant gravity)::

    R(lambda) = R0 + H [gamma_E + ln(P0 kappa(lambda) / g * sqrt(2 pi R0 / H))],
    H = k T / (mu m_u g),   g = G M_p / R0^2,   gamma_E = 0.57721...

``R0`` is the radius at the reference pressure ``P0`` (10 bar by default) and ``kappa`` the
opacity per unit mass: H2/He Rayleigh scattering, the four band-model absorbers of
:mod:`sbi_core.simulators.opacity` and a haze power law ``a sigma_0 (lambda / 0.35 um)^gamma``
per H2 molecule. The mean molecular weight follows the composition (H2/He background at
solar He/H2 = 0.15/0.85 by number plus the absorbers).

A grey cloud deck at ``P_c`` hides everything below the radius ``R_c = R0 + H ln(P0 / P_c)``;
the transit radius is a smooth maximum ``R_c + s softplus((R - R_c) / s)`` with ``s = 0.1 H``
(differentiable, and a high deck flattens the spectrum).

Opacities are combined in log space (``logsumexp``): cross-section x mixing ratio reaches 1e-40
m^2, below float32's normal range.

Wavelength grid: 233 geometric bins from 0.52 to 5.34 micron (R = lambda / d lambda ~ 100, a
JWST NIRSpec PRISM-like grid); depths are averaged over ``oversample`` points per bin.

References:
    Heng & Kitzmann (2017), MNRAS 470, 2972, "The theory of transmission spectra revisited".
    de Wit & Seager (2013), Science 342, 1473 (scale height and transit radius).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from sbi_core.simulators.opacity import (
    ABSORBERS,
    HAZE_REFERENCE_WAVELENGTH_UM,
    MOLECULAR_MASS_AMU,
    absorber_cross_sections,
    rayleigh_cross_section_h2,
    rayleigh_cross_section_he,
)

__all__ = ["TransmissionModel", "wavelength_grid", "prism_noise_curve_ppm", "photometric_band_weights"]

EULER_GAMMA = 0.5772156649015329
GAS_CONSTANT_PER_AMU = 8314.462618  # k_B / m_u  [J / (kg K)]
GM_JUPITER = 1.26686534e17  # [m^3 s^-2]
R_JUPITER_M = 7.1492e7
R_SUN_M = 6.957e8
HE_FRACTION, H2_FRACTION = 0.15, 0.85  # background composition by number
CLOUD_SOFTNESS = 0.1  # width of the smooth cloud-top maximum, in scale heights


def wavelength_grid(n_bins: int = 233, low_um: float = 0.52, high_um: float = 5.34) -> np.ndarray:
    """Bin centres [micron], geometric: R = 1 / (ln(high/low)/(n-1)) ~ 100 for the defaults."""
    return np.geomspace(low_um, high_um, n_bins)


def _subgrid(centres: np.ndarray, oversample: int) -> np.ndarray:
    """``oversample`` geometric points inside each bin, shape ``(n_bins, oversample)``."""
    dlog = np.log(centres[1] / centres[0])
    offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
    return centres[:, None] * np.exp(offsets[None, :] * dlog)


def prism_noise_curve_ppm(
    wavelength_um: np.ndarray,
    floor_ppm: float = 30.0,
    best_um: float = 1.4,
    blue_edge_ppm: float = 250.0,
    red_edge_ppm: float = 350.0,
) -> np.ndarray:
    """Per-bin 1-sigma depth uncertainty shaped like a NIRSpec PRISM noise curve [ppm].

    Lowest (``floor_ppm``) at ``best_um``, rising as a Gaussian in ``ln(lambda)`` to
    ``blue_edge_ppm`` at the blue end and ``red_edge_ppm`` at the red end of the grid (low
    throughput below ~0.8 micron, falling stellar flux and throughput beyond ~4 micron).
    """
    lam = np.asarray(wavelength_um, dtype=np.float64)
    x = np.log(lam / best_um)
    a_blue = math.log(blue_edge_ppm / floor_ppm) / math.log(lam.min() / best_um) ** 2
    a_red = math.log(red_edge_ppm / floor_ppm) / math.log(lam.max() / best_um) ** 2
    return floor_ppm * np.exp(np.where(x < 0, a_blue, a_red) * x**2)


def photometric_band_weights(centres: np.ndarray, bands_um: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Box-average weights ``(n_bands, n_bins)`` over the bins whose centre lies in each band."""
    w = np.array([(centres >= lo) & (centres < hi) for lo, hi in bands_um], dtype=np.float64)
    empty = np.where(w.sum(axis=1) == 0)[0]
    if empty.size:
        raise ValueError(f"photometric band(s) {[bands_um[i] for i in empty]} contain no spectral bin")
    return w / w.sum(axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class TransmissionModel:
    """Precomputed opacity tables and the pure-JAX forward model (see the module docstring)."""

    wavelengths_um: np.ndarray
    log_sigma_absorbers: np.ndarray  # (4, n_bins, oversample), ln m^2
    log_sigma_background: np.ndarray  # (n_bins, oversample): H2/He Rayleigh per background molecule
    log_haze_shape: np.ndarray  # (n_bins, oversample): ln(H2 frac * sigma_0 * 1) without (lambda/lambda0)^gamma
    log_lambda_ratio: np.ndarray  # (n_bins, oversample): ln(lambda / lambda_0)
    stellar_radius_m: float
    planet_mass_mjup: float
    reference_pressure_pa: float

    @classmethod
    def build(cls, wavelengths_um: np.ndarray, *, oversample: int = 4, stellar_radius_rsun: float = 1.0,
              planet_mass_mjup: float = 1.0, reference_pressure_bar: float = 10.0) -> TransmissionModel:
        sub = _subgrid(np.asarray(wavelengths_um, np.float64), oversample)
        background = H2_FRACTION * rayleigh_cross_section_h2(sub) + HE_FRACTION * rayleigh_cross_section_he(sub)
        sigma0 = float(rayleigh_cross_section_h2(np.array(HAZE_REFERENCE_WAVELENGTH_UM)))
        return cls(
            wavelengths_um=np.asarray(wavelengths_um, np.float64),
            log_sigma_absorbers=np.log(absorber_cross_sections(sub)),
            log_sigma_background=np.log(background),
            log_haze_shape=np.full(sub.shape, math.log(H2_FRACTION * sigma0)),
            log_lambda_ratio=np.log(sub / HAZE_REFERENCE_WAVELENGTH_UM),
            stellar_radius_m=stellar_radius_rsun * R_SUN_M,
            planet_mass_mjup=planet_mass_mjup,
            reference_pressure_pa=reference_pressure_bar * 1.0e5,
        )

    def transit_radius(self, theta: Float[Array, " 9"]) -> Float[Array, "n_bins oversample"]:
        """Transit radius [m] on the oversampled grid for one physical parameter vector."""
        r_p, temp, log_x, log_pc, log_haze, slope = (
            theta[0], theta[1], theta[2:6], theta[6], theta[7], theta[8])
        ln10 = math.log(10.0)
        x_abs = jnp.exp(ln10 * log_x)
        x_bg = jnp.maximum(1.0 - jnp.sum(x_abs), 1e-6)  # priors keep sum(x) <= 0.4
        m_abs = jnp.array([MOLECULAR_MASS_AMU[a] for a in ABSORBERS], theta.dtype)
        m_bg = H2_FRACTION * MOLECULAR_MASS_AMU["H2"] + HE_FRACTION * MOLECULAR_MASS_AMU["He"]
        mu = x_bg * m_bg + jnp.sum(x_abs * m_abs)
        r0 = r_p * R_JUPITER_M
        gravity = GM_JUPITER * self.planet_mass_mjup / r0**2
        scale_height = GAS_CONSTANT_PER_AMU * temp / (mu * gravity)
        log_terms = jnp.concatenate([
            (ln10 * log_x)[:, None, None] + self.log_sigma_absorbers,
            (jnp.log(x_bg) + self.log_sigma_background)[None],
            (jnp.log(x_bg) + ln10 * log_haze + self.log_haze_shape + slope * self.log_lambda_ratio)[None],
        ])
        log_sigma = jax.scipy.special.logsumexp(log_terms, axis=0)
        log_kappa = log_sigma - jnp.log(mu) - math.log(1.66053906660e-27)
        log_arg = (math.log(self.reference_pressure_pa) + log_kappa - jnp.log(gravity)
                   + 0.5 * jnp.log(2 * math.pi * r0 / scale_height))
        r_clear = r0 + scale_height * (EULER_GAMMA + log_arg)
        r_cloud = r0 + scale_height * (math.log(self.reference_pressure_pa / 1.0e5) - ln10 * log_pc)
        s = CLOUD_SOFTNESS * scale_height
        return r_cloud + s * jax.nn.softplus((r_clear - r_cloud) / s)

    def depth_ppm(self, theta: Float[Array, " 9"]) -> Float[Array, " n_bins"]:
        """Bin-averaged transit depth ``(R / R_star)^2`` in ppm (parts per million)."""
        ratio = self.transit_radius(theta) / self.stellar_radius_m
        return 1.0e6 * jnp.mean(ratio**2, axis=-1)
