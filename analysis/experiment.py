"""From the apparatus to the model: every rate, the atom number, the couplings and the noise floor.

`CellGeometry` is the vapour cell and probe beam, declared here once: the analysis
(`ApparatusParameters`), the simulated lab (`LabConfig`) and the station file's `[cell]` table
(`CellConfig`) each extend it and are handed one another's geometry whole.
`ApparatusParameters` is what a physicist sets (temperature, field, probe, cell, detector);
`derive` turns it into the `SpinModel` of docs/physics.md §3 and the observation of §4. The
simulator is driven by it and the analysis reports fits against it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
from hotspin.analysis import constants as k
from hotspin.analysis import optics, vapour
from hotspin.analysis.checks import ParameterError, check_positive, check_range, check_vector
from hotspin.analysis.spin_model import (
    QUADRATIC_ZEEMAN_TOLERANCE,
    SpinModel,
    quadratic_zeeman_peak_change,
)
from scipy import optimize

# The probe's 1/e² intensity radius when none is given (the station example's measured beam).
DEFAULT_BEAM_WAIST_m = 1.0e-3


def effective_beam_area_m2(beam_waist_m: float) -> float:
    """Return the spin-noise area (∫I)²/∫I² = π w² of a Gaussian beam of 1/e² intensity radius w."""
    return math.pi * check_positive("beam_waist_m", beam_waist_m, "m") ** 2


def settle_beam(
    beam_waist_m: float | None, beam_area_m2: float | None, prefix: str = ""
) -> tuple[float, float]:
    """Return (w, π w²) from either; refuse the two when they disagree, naming them.

    Neither given: DEFAULT_BEAM_WAIST_m. ``prefix`` names where they came from ("cell.").
    """
    waist, area = beam_waist_m, beam_area_m2
    if waist is None and area is None:
        waist = DEFAULT_BEAM_WAIST_m
    if waist is None:
        waist = math.sqrt(check_positive(f"{prefix}beam_area_m2", area, "m^2") / math.pi)
    expected = math.pi * check_positive(f"{prefix}beam_waist_m", waist, "m") ** 2
    if area is None:
        return float(waist), float(expected)
    check_positive(f"{prefix}beam_area_m2", area, "m^2")
    if not math.isclose(area, expected, rel_tol=1e-9):
        raise ParameterError(
            f"{prefix}beam_area_m2 = {area:g} disagrees with {prefix}beam_waist_m = {waist:g}: "
            f"the area must be π w² = {expected:g} m^2 (give one of the two)"
        )
    return float(waist), float(area)


def transit_time_s(beam_waist_m: float, diffusion_constant_m2_per_s: float) -> float:
    """Return τ_D = w²/(4D): the correlation of the beam-weighted spin falls as 1/(1 + τ/τ_D)."""
    w = check_positive("beam_waist_m", beam_waist_m, "m")
    return (
        w * w / (4.0 * check_positive("diffusion_constant_m2_per_s", diffusion_constant_m2_per_s))
    )


@dataclass(frozen=True, kw_only=True)
class CellGeometry:
    """The vapour cell and probe beam: inner size, N₂ fill and the beam's waist (or area), in SI.

    The one declaration of these settings, their defaults and their checks. Its fields are
    keyword-only, so a class that extends it keeps its own positional order.
    """

    cell_dimensions_m: tuple[float, float, float] = (0.03, 0.03, 0.03)  # z is along the probe
    n2_fill_pressure_Torr: float = 100.0  # at the fill temperature (the cell's certificate)
    n2_fill_temperature_K: float = 293.15
    # The probe beam: its 1/e² intensity radius w, or its effective area π w² (give either; the
    # other follows; neither: DEFAULT_BEAM_WAIST_m). w also sets the transit time τ_D = w²/(4D).
    beam_waist_m: float | None = None
    beam_area_m2: float | None = None

    #: Where the settings come from, prefixed to their names in errors ("cell." in a station file).
    where: ClassVar[str] = ""

    def __post_init__(self) -> None:
        name = self.where
        dims = check_vector(f"{name}cell_dimensions_m", self.cell_dimensions_m, 3, "m")
        if np.any(dims <= 0):
            raise ParameterError(
                f"{name}cell_dimensions_m = {dims.tolist()} must all lie in (0, inf) m"
            )
        object.__setattr__(self, "cell_dimensions_m", tuple(dims.tolist()))
        check_range(
            f"{name}n2_fill_pressure_Torr",
            self.n2_fill_pressure_Torr,
            0.0,
            3000.0,
            "Torr",
            low_open=True,
        )
        check_positive(f"{name}n2_fill_temperature_K", self.n2_fill_temperature_K, "K")
        waist, area = settle_beam(self.beam_waist_m, self.beam_area_m2, prefix=name)
        object.__setattr__(self, "beam_waist_m", waist)
        object.__setattr__(self, "beam_area_m2", area)

    def geometry_values(self) -> dict[str, Any]:
        """Return the geometry's settings by name (beam settled), to build another holder of it."""
        return {f.name: getattr(self, f.name) for f in fields(CellGeometry)}

    @property
    def geometry(self) -> CellGeometry:
        """Return the cell geometry alone, whatever class holds it."""
        return CellGeometry(**self.geometry_values())


@dataclass(frozen=True)
class ApparatusParameters(CellGeometry):
    """The physical settings of the vapour cell, field, probe and detector, in SI units.

    The cell and beam are its `CellGeometry` (keyword-only fields).
    """

    temperature_K: float = 450.0
    field_T: tuple[float, float, float] = (500e-9, 0.0, 0.0)
    probe_power_W: float = 1.0e-3  # into the cell
    probe_detuning_Hz: float = 60e9  # from the D1 line of F = 2; positive is blue
    # False holds the atoms in place across the beam (the model without transit, to compare).
    beam_transit: bool = True
    responsivity_A_per_W: float = 0.52  # PDB450A (Si) at 795 nm
    nep_W_per_rtHz: float = 5e-12  # detector noise-equivalent power in the difference signal
    optics_transmission: float = 0.95  # exit window, half-wave plate and PBS losses

    def __post_init__(self) -> None:
        check_range("temperature_K", self.temperature_K, 250.0, 700.0, "K")
        object.__setattr__(
            self, "field_T", tuple(check_vector("field_T", self.field_T, 3, "T").tolist())
        )
        if max(abs(b) for b in self.field_T) > 1e-3:
            raise ParameterError(
                f"field_T = {list(self.field_T)} exceeds the model's range: each component must "
                "lie in [-1e-03, 1e-03] T (the linear Zeeman regime)"
            )
        check_range("probe_power_W", self.probe_power_W, 0.0, 1.0, "W")
        check_range("probe_detuning_Hz", self.probe_detuning_Hz, -1e12, 1e12, "Hz")
        super().__post_init__()
        check_positive("responsivity_A_per_W", self.responsivity_A_per_W, "A/W")
        check_range("nep_W_per_rtHz", self.nep_W_per_rtHz, 0.0, 1e-6, "W/√Hz")
        check_range("optics_transmission", self.optics_transmission, 0.0, 1.0, low_open=True)

    def with_changes(self, **changes: object) -> ApparatusParameters:
        """Return a copy with some parameters changed (validated again)."""
        # A new waist (or area) replaces the beam: the other one follows from it.
        if "beam_waist_m" in changes and "beam_area_m2" not in changes:
            changes["beam_area_m2"] = None
        if "beam_area_m2" in changes and "beam_waist_m" not in changes:
            changes["beam_waist_m"] = None
        return replace(self, **changes)

    @classmethod
    def names(cls) -> list[str]:
        """Return the parameter names."""
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class DerivedQuantities:
    """Everything the model needs and the truth a simulated record is made from."""

    parameters: ApparatusParameters
    number_density_m3: float
    n2_density_m3: float
    spin_exchange_rate: float
    collisional_spin_destruction_rate: float
    probe_pumping_rate: float
    diffusion_rate: float
    diffusion_constant_m2_per_s: float
    transit_time_s: float  # τ_D = w²/(4D) across the probe beam
    atom_number: float  # of the beam-weighted mode: n π w² L
    optical_fwhm_D1_Hz: float
    cross_section_m2: float
    cell_transmission: float
    detected_power_W: float
    probe_frequency_Hz: float
    coupling_upper_rad: float
    coupling_lower_rad: float
    shot_noise_psd_rad2_per_Hz: float
    electronic_noise_psd_rad2_per_Hz: float
    model: SpinModel = field(repr=False)

    @property
    def spin_destruction_rate(self) -> float:
        """Return R_SD′ = R_SD + R_pr in s⁻¹."""
        return self.collisional_spin_destruction_rate + self.probe_pumping_rate

    @property
    def white_noise_psd_rad2_per_Hz(self) -> float:
        """Return the flat floor of the angle PSD: photon shot noise plus detector noise."""
        return self.shot_noise_psd_rad2_per_Hz + self.electronic_noise_psd_rad2_per_Hz

    @property
    def field_magnitude_T(self) -> float:
        """Return |B| in T."""
        return float(np.linalg.norm(self.parameters.field_T))

    def atomic_psd(self, frequency_Hz: np.ndarray) -> np.ndarray:
        """Return the atomic part of the one-sided angle PSD in rad²/Hz."""
        return self.model.psd(frequency_Hz, self.coupling_upper_rad, self.coupling_lower_rad)

    def total_psd(self, frequency_Hz: np.ndarray) -> np.ndarray:
        """Return the one-sided angle PSD, atoms plus white noise, in rad²/Hz."""
        return self.atomic_psd(frequency_Hz) + self.white_noise_psd_rad2_per_Hz

    def angle_variance_rad2(self) -> float:
        """Return the variance of the atomic rotation angle in rad²."""
        return self.model.variance(self.coupling_upper_rad, self.coupling_lower_rad)

    def truth_attributes(self) -> dict[str, float | list[float]]:
        """Return every parameter and derived value, with its unit in its name, for a data file."""
        p = self.parameters
        attributes: dict[str, float | list[float]] = {}
        for key, value in asdict(p).items():
            attributes[key] = list(value) if isinstance(value, tuple) else value
        attributes["field_nT"] = [1e9 * b for b in p.field_T]
        serf = (k.GAMMA_UPPER_rad_per_sT * 5 + k.GAMMA_LOWER_rad_per_sT) / 6
        attributes.update(
            number_density_m3=self.number_density_m3,
            number_density_cm3=self.number_density_m3 * 1e-6,
            n2_density_m3=self.n2_density_m3,
            spin_exchange_rate_per_s=self.spin_exchange_rate,
            collisional_spin_destruction_rate_per_s=self.collisional_spin_destruction_rate,
            probe_pumping_rate_per_s=self.probe_pumping_rate,
            spin_destruction_rate_per_s=self.spin_destruction_rate,
            diffusion_rate_per_s=self.diffusion_rate,
            diffusion_constant_m2_per_s=self.diffusion_constant_m2_per_s,
            transit_time_s=self.transit_time_s,
            atom_number=self.atom_number,
            optical_fwhm_D1_Hz=self.optical_fwhm_D1_Hz,
            cross_section_m2=self.cross_section_m2,
            cell_transmission=self.cell_transmission,
            detected_power_W=self.detected_power_W,
            probe_frequency_Hz=self.probe_frequency_Hz,
            coupling_upper_rad=self.coupling_upper_rad,
            coupling_lower_rad=self.coupling_lower_rad,
            shot_noise_psd_rad2_per_Hz=self.shot_noise_psd_rad2_per_Hz,
            electronic_noise_psd_rad2_per_Hz=self.electronic_noise_psd_rad2_per_Hz,
            white_noise_psd_rad2_per_Hz=self.white_noise_psd_rad2_per_Hz,
            angle_variance_rad2=self.angle_variance_rad2(),
            serf_larmor_frequency_Hz=serf * self.field_magnitude_T / (2 * math.pi),
        )
        return attributes


def _refuse_quadratic_zeeman(model: SpinModel, c_a: float, c_b: float) -> None:
    """Raise ParameterError where the neglected quadratic Zeeman term changes the spectrum > 1 %."""
    ratio = model.quadratic_zeeman_ratio(c_a, c_b)
    error = quadratic_zeeman_peak_change(ratio)
    if error <= QUADRATIC_ZEEMAN_TOLERANCE:
        return
    b = float(np.linalg.norm(model.field_T))
    # The spread grows as B² at a fixed line width: the largest field at this width.
    largest_ratio = optimize.brentq(
        lambda r: quadratic_zeeman_peak_change(r) - QUADRATIC_ZEEMAN_TOLERANCE, 0.0, ratio
    )
    limit = b * math.sqrt(largest_ratio / ratio)
    raise ParameterError(
        f"field_T = {model.field_T.tolist()} (|B| = {b:.3g} T) is outside the model's range: the "
        f"quadratic Zeeman splitting would change the spectrum by {100 * error:.2g} % "
        f"(> {100 * QUADRATIC_ZEEMAN_TOLERANCE:g} %), which the model leaves out; at this "
        f"temperature and probe |B| must lie in [0, {limit:.3g}] T"
    )


def derive(parameters: ApparatusParameters) -> DerivedQuantities:
    """Return the rates, atom number, couplings, noise floor and spin model of an apparatus."""
    p = parameters
    T = p.temperature_K
    n = vapour.rb_number_density_m3(T)
    n2 = vapour.n2_number_density_m3(p.n2_fill_pressure_Torr, p.n2_fill_temperature_K)
    broadening = vapour.n2_broadening_fwhm_Hz(T, n2)
    fwhm_d1, _ = optics.optical_fwhm_Hz(broadening)
    sigma = optics.absorption_cross_section_m2(p.probe_detuning_Hz, broadening)
    length = p.cell_dimensions_m[2]
    cell_transmission = optics.transmission(n, sigma, length)
    nu = optics.probe_frequency_Hz(p.probe_detuning_Hz)
    # The probe is attenuated along the cell; the mean power the atoms see sets R_pr.
    optical_depth = n * sigma * length
    mean_fraction = 1.0 if optical_depth < 1e-12 else (1 - cell_transmission) / optical_depth
    r_pr = optics.probe_pumping_rate(p.probe_power_W * mean_fraction, nu, sigma, p.beam_area_m2)
    r_sd = vapour.spin_destruction_rate(T, n2)
    r_se = vapour.spin_exchange_rate(T)
    r_d = vapour.diffusion_rate(T, n2, p.cell_dimensions_m)
    diffusion = vapour.diffusion_constant_m2_per_s(T, n2)
    assert p.beam_waist_m is not None  # settled in ApparatusParameters
    tau_d = transit_time_s(p.beam_waist_m, diffusion) if p.beam_transit else math.inf
    atom_number = n * p.beam_area_m2 * length
    c_a, c_b = optics.faraday_couplings_rad(p.probe_detuning_Hz, broadening, p.beam_area_m2)
    detected = p.probe_power_W * cell_transmission * p.optics_transmission
    model = SpinModel(
        field_T=np.array(p.field_T),
        spin_exchange_rate=r_se,
        spin_destruction_rate=r_sd + r_pr,
        diffusion_rate=r_d,
        atom_number=atom_number,
        transit_time_s=tau_d,
    )
    _refuse_quadratic_zeeman(model, c_a, c_b)
    return DerivedQuantities(
        parameters=p,
        number_density_m3=n,
        n2_density_m3=n2,
        spin_exchange_rate=r_se,
        collisional_spin_destruction_rate=r_sd,
        probe_pumping_rate=r_pr,
        diffusion_rate=r_d,
        diffusion_constant_m2_per_s=diffusion,
        transit_time_s=tau_d,
        atom_number=atom_number,
        optical_fwhm_D1_Hz=fwhm_d1,
        cross_section_m2=sigma,
        cell_transmission=cell_transmission,
        detected_power_W=detected,
        probe_frequency_Hz=nu,
        coupling_upper_rad=c_a,
        coupling_lower_rad=c_b,
        # Without light the angle is not measured at all: its noise floor is infinite.
        shot_noise_psd_rad2_per_Hz=(
            optics.shot_noise_psd_rad2_per_Hz(detected, p.responsivity_A_per_W)
            if detected > 0
            else math.inf
        ),
        electronic_noise_psd_rad2_per_Hz=(
            optics.electronic_noise_psd_rad2_per_Hz(p.nep_W_per_rtHz, detected)
            if detected > 0
            else math.inf
        ),
        model=model,
    )
