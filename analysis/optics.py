"""Probe light and atoms: line shapes, absorption, Faraday couplings, shot noise (PHYSICS §2, §4).

The probe is specified by its detuning Δ from the D1 line of the F = 2 ground level; the F = 1
level lies 6.8347 GHz lower, so its transition is at Δ_b = Δ − ν_hfs. Excited-state hyperfine
structure is not resolved under the pressure broadening, and Doppler broadening (≈0.5 GHz) is left
out: it matters only within about a gigahertz of resonance, where nobody probes a dense vapour.
"""

import math

from hotspin.analysis import constants as k
from hotspin.analysis.checks import check_positive, check_range

# The PDB450A output swing into a high-impedance load, beyond which it saturates (Thorlabs spec).
DETECTOR_SATURATION_V = 10.0


def lorentzian_per_Hz(detuning_Hz: float, fwhm_Hz: float) -> float:
    """Return the area-normalised Lorentzian (γ/2π)/(Δ² + (γ/2)²) in 1/Hz."""
    return (fwhm_Hz / (2 * math.pi)) / (detuning_Hz**2 + (fwhm_Hz / 2) ** 2)


def dispersion_per_Hz(detuning_Hz: float, fwhm_Hz: float) -> float:
    """Return the dispersive line shape D(Δ) = Δ/(Δ² + (γ/2)²) in 1/Hz."""
    return detuning_Hz / (detuning_Hz**2 + (fwhm_Hz / 2) ** 2)


def probe_frequency_Hz(detuning_Hz: float) -> float:
    """Return the optical frequency of a probe detuned by Δ from the D1 F=2 line."""
    # The D1 centroid lies 3/8·ν_hfs above the F = 2 line (the F = 2 level is 3/8·ν_hfs above
    # the centroid of the ground state).
    return k.D1_FREQUENCY_Hz - 3.0 / 8.0 * k.HYPERFINE_SPLITTING_Hz + detuning_Hz


def _line_detunings(detuning_Hz: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Return (Δ_a, Δ_b) for the D1 and the D2 line, from the D1 F=2 detuning."""
    d1 = (detuning_Hz, detuning_Hz - k.HYPERFINE_SPLITTING_Hz)
    offset = k.D2_FREQUENCY_Hz - k.D1_FREQUENCY_Hz
    d2 = (d1[0] - offset, d1[1] - offset)
    return d1, d2


def optical_fwhm_Hz(n2_broadening_Hz: float) -> tuple[float, float]:
    """Return the Lorentzian FWHM of D1 and D2: natural width plus N₂ pressure broadening."""
    return k.D1_NATURAL_FWHM_Hz + n2_broadening_Hz, k.D2_NATURAL_FWHM_Hz + n2_broadening_Hz


def absorption_cross_section_m2(detuning_Hz: float, n2_broadening_Hz: float) -> float:
    """Return σ(ν) = π r_e c f L(Δ) averaged over the thermal hyperfine populations (D1 + D2)."""
    fwhm_d1, fwhm_d2 = optical_fwhm_Hz(n2_broadening_Hz)
    (d1a, d1b), (d2a, d2b) = _line_detunings(detuning_Hz)
    strength = math.pi * k.CLASSICAL_ELECTRON_RADIUS_m * k.SPEED_OF_LIGHT_c
    d1 = k.D1_OSCILLATOR_STRENGTH * (
        k.POPULATION_UPPER * lorentzian_per_Hz(d1a, fwhm_d1)
        + k.POPULATION_LOWER * lorentzian_per_Hz(d1b, fwhm_d1)
    )
    d2 = k.D2_OSCILLATOR_STRENGTH * (
        k.POPULATION_UPPER * lorentzian_per_Hz(d2a, fwhm_d2)
        + k.POPULATION_LOWER * lorentzian_per_Hz(d2b, fwhm_d2)
    )
    return strength * (d1 + d2)


def faraday_couplings_rad(
    detuning_Hz: float, n2_broadening_Hz: float, beam_area_m2: float
) -> tuple[float, float]:
    """Return (c_a, c_b) with θ = c_a F⁽ᵃ⁾_z − c_b F⁽ᵇ⁾_z, in rad per unit of collective spin.

    c_x = r_e c / (A (2I+1)) · [f_D1 D(Δ_x,D1) − ½ f_D2 D(Δ_x,D2)]: near D2 the vector
    coupling has the opposite sign and half the weight per unit oscillator strength, so that far
    from both lines the two cancel to leading order, as the electron spin's vector light shift does.
    """
    area = check_positive("beam_area_m2", beam_area_m2, "m^2")
    fwhm_d1, fwhm_d2 = optical_fwhm_Hz(n2_broadening_Hz)
    (d1a, d1b), (d2a, d2b) = _line_detunings(detuning_Hz)
    prefactor = (
        k.CLASSICAL_ELECTRON_RADIUS_m * k.SPEED_OF_LIGHT_c / (area * (2 * k.NUCLEAR_SPIN_I + 1))
    )

    def weight(delta_d1: float, delta_d2: float) -> float:
        return k.D1_OSCILLATOR_STRENGTH * dispersion_per_Hz(
            delta_d1, fwhm_d1
        ) - 0.5 * k.D2_OSCILLATOR_STRENGTH * dispersion_per_Hz(delta_d2, fwhm_d2)

    return prefactor * weight(d1a, d2a), prefactor * weight(d1b, d2b)


def transmission(number_density_m3: float, cross_section_m2: float, length_m: float) -> float:
    """Return the Beer–Lambert transmission exp(−n σ L)."""
    return math.exp(-number_density_m3 * cross_section_m2 * length_m)


def photon_flux_per_s(power_W: float, frequency_Hz: float) -> float:
    """Return the photon flux P/(hν) in photons per second."""
    return check_range("power_W", power_W, 0.0, math.inf, "W") / (k.PLANCK_h * frequency_Hz)


def probe_pumping_rate(
    power_W: float, frequency_Hz: float, cross_section_m2: float, beam_area_m2: float
) -> float:
    """Return the probe's spin-randomising scattering rate R_pr = Φ σ(ν)/A in s⁻¹."""
    return photon_flux_per_s(power_W, frequency_Hz) * cross_section_m2 / beam_area_m2


def shot_noise_psd_rad2_per_Hz(detected_power_W: float, responsivity_A_per_W: float) -> float:
    """Return the one-sided photon shot-noise PSD of the polarimeter angle, 1/(2Φ) in rad²/Hz.

    Φ = η P/(hν) = ℛ P/e is the flux of detected photons (ℛ the detector responsivity).
    """
    power = check_positive("detected_power_W", detected_power_W, "W")
    responsivity = check_positive("responsivity_A_per_W", responsivity_A_per_W, "A/W")
    detected_flux = responsivity * power / k.ELEMENTARY_CHARGE_e
    return 1.0 / (2.0 * detected_flux)


def electronic_noise_psd_rad2_per_Hz(nep_W_per_rtHz: float, detected_power_W: float) -> float:
    """Return the detector's electronic noise referred to the angle: NEP²/(2P)² in rad²/Hz.

    At balance V_diff ≈ 2 G ℛ P θ, so a noise-equivalent power NEP in the difference signal
    reads as an angle noise NEP/(2P).
    """
    nep = check_range("nep_W_per_rtHz", nep_W_per_rtHz, 0.0, math.inf, "W/√Hz")
    power = check_positive("detected_power_W", detected_power_W, "W")
    return (nep / (2.0 * power)) ** 2
