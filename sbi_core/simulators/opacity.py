"""Opacity sources of the ``exo_transmission`` model: absorbers, Rayleigh scattering, haze.

Nothing is downloaded: the molecular cross-sections are *designed* band models, a sum of
Gaussian bands in ``ln(lambda)`` at the known band centres of each absorber plus a weak floor
(line wings / pseudo-continuum). Peak strengths are order-of-magnitude, band-averaged values at
R ~ 100 for hot (1000-2000 K) gas; relative strengths follow the familiar shape of hot-Jupiter
spectra (H2O bands rising towards 2.7 micron, the strong CO2 4.3 and CH4 3.3 micron bands, the
CO 4.6 micron band). They are good enough to make retrievals physically meaningful (features
where a retrieval scientist expects them, degeneracies with clouds and hazes); they are not a
line list.

There is no collision-induced absorption (the issue asks for Rayleigh + four absorbers + cloud
+ haze), so the infrared continuum of a cloud-free, haze-free atmosphere is the very weak
Rayleigh tail and even trace absorbers (1e-8) leave features there; in retrievals the grey
cloud deck and the haze provide the continuum.

References:
    Tennyson & Yurchenko (2012), ExoMol (band positions); Rothman et al. (2010), HITEMP.
    Dalgarno & Williams (1962), ApJ 136, 690 (H2 Rayleigh); Chan & Dalgarno (1965) (He Rayleigh).
    MacDonald & Madhusudhan (2017), MNRAS 469, 1979 (haze power law ``a sigma_0 (lambda/lambda_0)^gamma``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ABSORBERS",
    "BANDS",
    "MOLECULAR_MASS_AMU",
    "HAZE_REFERENCE_WAVELENGTH_UM",
    "absorber_cross_sections",
    "rayleigh_cross_section_h2",
    "rayleigh_cross_section_he",
]

ABSORBERS: tuple[str, ...] = ("H2O", "CH4", "CO2", "CO")

# (centre [micron], peak cross-section [m^2 / molecule], width as sigma of ln(lambda)).
BANDS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "H2O": (
        (0.94, 2.0e-27, 0.035),
        (1.14, 6.0e-27, 0.040),
        (1.40, 3.0e-26, 0.050),
        (1.88, 6.0e-26, 0.050),
        (2.70, 2.0e-25, 0.060),
        (6.30, 3.0e-25, 0.080),
    ),
    "CH4": (
        (1.67, 1.5e-26, 0.035),
        (2.32, 4.0e-26, 0.040),
        (3.31, 4.0e-25, 0.040),
    ),
    "CO2": (
        (2.01, 1.5e-26, 0.020),
        (2.72, 8.0e-26, 0.025),
        (4.26, 3.0e-24, 0.020),
    ),
    "CO": (
        (2.35, 3.0e-27, 0.025),
        (4.63, 3.0e-25, 0.025),
    ),
}
# Weak floor between bands [m^2 / molecule], relative to each molecule's strongest band.
FLOOR_FRACTION = 1.0e-4

MOLECULAR_MASS_AMU: dict[str, float] = {
    "H2": 2.016, "He": 4.0026, "H2O": 18.015, "CH4": 16.043, "CO2": 44.01, "CO": 28.01,
}
HAZE_REFERENCE_WAVELENGTH_UM = 0.35


def absorber_cross_sections(wavelength_um: np.ndarray) -> np.ndarray:
    """Band-model cross-sections, shape ``(len(ABSORBERS), *wavelength.shape)`` in m^2/molecule."""
    lam = np.asarray(wavelength_um, dtype=np.float64)
    out = []
    for name in ABSORBERS:
        bands = BANDS[name]
        sigma = np.zeros_like(lam)
        for centre, peak, width in bands:
            sigma += peak * np.exp(-0.5 * (np.log(lam / centre) / width) ** 2)
        sigma += FLOOR_FRACTION * max(peak for _, peak, _ in bands)
        out.append(sigma)
    return np.stack(out)


def rayleigh_cross_section_h2(wavelength_um: np.ndarray) -> np.ndarray:
    """H2 Rayleigh cross-section [m^2/molecule] (Dalgarno & Williams 1962 series)."""
    lam_a = np.asarray(wavelength_um, dtype=np.float64) * 1.0e4  # Angstrom
    sigma_cm2 = 8.14e-13 / lam_a**4 + 1.28e-6 / lam_a**6 + 1.61 / lam_a**8
    return sigma_cm2 * 1.0e-4


def rayleigh_cross_section_he(wavelength_um: np.ndarray) -> np.ndarray:
    """He Rayleigh cross-section [m^2/atom] (leading term of Chan & Dalgarno 1965)."""
    lam_a = np.asarray(wavelength_um, dtype=np.float64) * 1.0e4
    return 5.484e-14 / lam_a**4 * (1.0 + 2.44e5 / lam_a**2) * 1.0e-4
