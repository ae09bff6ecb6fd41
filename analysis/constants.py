"""Physical constants and ⁸⁷Rb atomic data in SI units (docs/physics.md §1).

Sources: CODATA 2018 for the fundamental constants, D. A. Steck, "Rubidium 87 D Line Data"
for the atom, and the collision cross-sections quoted in docs/physics.md.
"""

import math

# Fundamental constants (CODATA 2018, exact where the SI defines them).
PLANCK_h = 6.626_070_15e-34  # J s
HBAR = PLANCK_h / (2 * math.pi)  # J s
BOLTZMANN_k = 1.380_649e-23  # J/K
SPEED_OF_LIGHT_c = 299_792_458.0  # m/s
ELEMENTARY_CHARGE_e = 1.602_176_634e-19  # C
ATOMIC_MASS_UNIT_kg = 1.660_539_066_60e-27  # kg
CLASSICAL_ELECTRON_RADIUS_m = 2.817_940_3e-15  # m
BOHR_MAGNETON_OVER_h_Hz_per_T = 13.996_244_936e9  # Hz/T
TORR_Pa = 101_325.0 / 760.0  # Pa
AMAGAT_m3 = 2.686_780_111e25  # number density of an ideal gas at 273.15 K, 1 atm, in m⁻³
ZERO_CELSIUS_K = 273.15

# ⁸⁷Rb ground state.
NUCLEAR_SPIN_I = 1.5
HYPERFINE_SPLITTING_Hz = 6.834_682_610_904e9  # ground-state F=2 ↔ F=1
G_J = 2.002_331_13
G_I = -0.000_995_141_4
RB87_MASS_kg = 86.909_180_520 * ATOMIC_MASS_UNIT_kg
N2_MASS_kg = 28.013_4 * ATOMIC_MASS_UNIT_kg


def lande_g_factor(F: float, J: float = 0.5, I: float = NUCLEAR_SPIN_I) -> float:  # noqa: E741
    """Return the hyperfine Landé factor g_F of level F, including the nuclear moment."""
    ff, jj, ii = F * (F + 1), J * (J + 1), I * (I + 1)
    return G_J * (ff - ii + jj) / (2 * ff) + G_I * (ff + ii - jj) / (2 * ff)


G_F_UPPER = lande_g_factor(2.0)  # F = a = 2, ≈ +0.499 836
G_F_LOWER = lande_g_factor(1.0)  # F = b = 1, ≈ −0.501 827
# Gyromagnetic ratios γ = g_F μ_B/ħ in rad s⁻¹ T⁻¹; γ_a > 0, γ_b < 0 (opposite senses).
GAMMA_UPPER_rad_per_sT = 2 * math.pi * G_F_UPPER * BOHR_MAGNETON_OVER_h_Hz_per_T
GAMMA_LOWER_rad_per_sT = 2 * math.pi * G_F_LOWER * BOHR_MAGNETON_OVER_h_Hz_per_T
GAMMA_ELECTRON_rad_per_sT = 2 * math.pi * G_J * BOHR_MAGNETON_OVER_h_Hz_per_T

# Optical D lines (vacuum wavelengths, oscillator strengths, natural FWHM).
D1_WAVELENGTH_m = 794.978_85e-9
D2_WAVELENGTH_m = 780.241_209_686e-9
D1_FREQUENCY_Hz = SPEED_OF_LIGHT_c / D1_WAVELENGTH_m
D2_FREQUENCY_Hz = SPEED_OF_LIGHT_c / D2_WAVELENGTH_m
D1_OSCILLATOR_STRENGTH = 0.342
D2_OSCILLATOR_STRENGTH = 0.696
D1_NATURAL_FWHM_Hz = 5.746e6
D2_NATURAL_FWHM_Hz = 6.065e6

# Collision data.
SIGMA_SE_RbRb_m2 = 1.9e-18  # spin exchange
SIGMA_SD_RbRb_m2 = 1.6e-21  # spin destruction, Rb–Rb
SIGMA_SD_RbN2_m2 = 1.0e-26  # spin destruction, Rb–N₂
DIFFUSION_D0_m2_per_s = 0.19e-4  # Rb in N₂ at 1 amagat and 273.15 K (sources differ by ~40 %)
N2_BROADENING_FWHM_Hz_per_Torr = 18.3e6  # at 394 K, ∝ (T/394 K)^0.3
N2_BROADENING_REFERENCE_K = 394.0
N2_BROADENING_EXPONENT = 0.3

# Thermal hyperfine populations: 5/8 of the atoms in F=2, 3/8 in F=1.
POPULATION_UPPER = (2 * 2 + 1) / (2 * (2 * NUCLEAR_SPIN_I + 1))
POPULATION_LOWER = (2 * 1 + 1) / (2 * (2 * NUCLEAR_SPIN_I + 1))
