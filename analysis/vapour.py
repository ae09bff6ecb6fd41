"""Rb vapour and N₂ buffer gas: densities, collision rates and diffusion (docs/physics.md §2)."""

import math
from collections.abc import Sequence

from hotspin.analysis import constants as k
from hotspin.analysis.checks import check_positive, check_range

# Melting point of Rb, where the Alcock vapour-pressure formula changes branch.
RB_MELTING_POINT_K = 312.46


def rb_vapour_pressure_Pa(temperature_K: float) -> float:
    """Return the saturated Rb vapour pressure (Alcock, as in Steck) in Pa."""
    T = check_positive("temperature_K", temperature_K, "K")
    if T < RB_MELTING_POINT_K:
        log10_torr = 2.881 + 4.857 - 4215.0 / T
    else:
        log10_torr = 2.881 + 4.312 - 4040.0 / T
    return 10.0**log10_torr * k.TORR_Pa


def rb_number_density_m3(temperature_K: float) -> float:
    """Return the saturated Rb number density n = P/(k_B T) in m⁻³."""
    return rb_vapour_pressure_Pa(temperature_K) / (k.BOLTZMANN_k * temperature_K)


def n2_number_density_m3(fill_pressure_Torr: float, fill_temperature_K: float) -> float:
    """Return the sealed-in N₂ number density from the fill pressure and fill temperature."""
    p = check_range("n2_fill_pressure_Torr", fill_pressure_Torr, 0.0, 1e5, "Torr")
    T = check_positive("n2_fill_temperature_K", fill_temperature_K, "K")
    return p * k.TORR_Pa / (k.BOLTZMANN_k * T)


def mean_relative_speed_m_per_s(temperature_K: float, mass1_kg: float, mass2_kg: float) -> float:
    """Return the mean relative speed √(8 k_B T/(π μ)) of a colliding pair."""
    T = check_positive("temperature_K", temperature_K, "K")
    reduced_mass = mass1_kg * mass2_kg / (mass1_kg + mass2_kg)
    return math.sqrt(8.0 * k.BOLTZMANN_k * T / (math.pi * reduced_mass))


def spin_exchange_rate(temperature_K: float) -> float:
    """Return the Rb–Rb spin-exchange rate R_SE = n σ_SE v in s⁻¹."""
    n = rb_number_density_m3(temperature_K)
    v = mean_relative_speed_m_per_s(temperature_K, k.RB87_MASS_kg, k.RB87_MASS_kg)
    return n * k.SIGMA_SE_RbRb_m2 * v


def spin_destruction_rate(temperature_K: float, n2_density_m3: float) -> float:
    """Return the collisional spin-destruction rate R_SD (Rb–Rb plus Rb–N₂) in s⁻¹."""
    n = rb_number_density_m3(temperature_K)
    n2 = check_range("n2_density_m3", n2_density_m3, 0.0, math.inf, "m^-3", high_open=True)
    v_rb = mean_relative_speed_m_per_s(temperature_K, k.RB87_MASS_kg, k.RB87_MASS_kg)
    v_n2 = mean_relative_speed_m_per_s(temperature_K, k.RB87_MASS_kg, k.N2_MASS_kg)
    return n * k.SIGMA_SD_RbRb_m2 * v_rb + n2 * k.SIGMA_SD_RbN2_m2 * v_n2


def diffusion_constant_m2_per_s(temperature_K: float, n2_density_m3: float) -> float:
    """Return D = D₀ (p₀/p)(T/T₀)^{3/2} of Rb in the N₂ buffer, from the sealed-in N₂ density."""
    T = check_positive("temperature_K", temperature_K, "K")
    n2 = check_positive("n2_density_m3", n2_density_m3, "m^-3")
    # p₀/p = (n₀ T₀)/(n T) for a sealed cell, so D = D₀ (n₀/n) (T/T₀)^{1/2}.
    return k.DIFFUSION_D0_m2_per_s * (k.AMAGAT_m3 / n2) * math.sqrt(T / k.ZERO_CELSIUS_K)


def diffusion_rate(
    temperature_K: float, n2_density_m3: float, cell_dimensions_m: Sequence[float]
) -> float:
    """Return the lowest-mode diffusion rate to the walls R_D = D Σᵢ (π/Lᵢ)² in s⁻¹."""
    lengths = [check_positive("cell_dimension_m", length, "m") for length in cell_dimensions_m]
    if n2_density_m3 == 0.0:
        raise ValueError("diffusion_rate needs a buffer gas: n2_density_m3 = 0 has no diffusion")
    D = diffusion_constant_m2_per_s(temperature_K, n2_density_m3)
    return D * sum((math.pi / length) ** 2 for length in lengths)


def n2_broadening_fwhm_Hz(temperature_K: float, n2_density_m3: float) -> float:
    """Return the N₂ pressure-broadened optical FWHM, 18.3 MHz/Torr at 394 K, ∝ (T/394 K)^0.3."""
    T = check_positive("temperature_K", temperature_K, "K")
    n2 = check_range("n2_density_m3", n2_density_m3, 0.0, math.inf, "m^-3", high_open=True)
    # The coefficient is per Torr measured at 394 K: express the fixed density in those Torr.
    reference_density = k.TORR_Pa / (k.BOLTZMANN_k * k.N2_BROADENING_REFERENCE_K)
    scale = (T / k.N2_BROADENING_REFERENCE_K) ** k.N2_BROADENING_EXPONENT
    return k.N2_BROADENING_FWHM_Hz_per_Torr * (n2 / reference_density) * scale
