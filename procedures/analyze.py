"""`hotspin analyze FILE.h5`: re-run the spin-noise analysis of a run file and write it back.

Two kinds of file are understood:
* a continuous record (`hotspin simulate`, the `record` procedure): the angle is calibrated from
  `records/polarimeter` (V_diff and V_sum codes × their volts per code) or, in older files, from
  `traces/v_diff` and `traces/v_sum`, with the detector gains in `parameters` (or read from
  `traces/theta` when the gains or the sum channel are missing); its Welch spectrum is computed
  and stored under `spectra/` if the file has none, and fitted;
* a saved run with `spectra/psd` rows: every row is fitted. The apparatus comes from the run's
  `parameters`, stored under the names of `ApparatusParameters`; a `results/<name>` column
  named like a scalar apparatus parameter (e.g. `temperature_K`) overrides it row by row, and
  the `results/coil_field_{x,y,z}_nT` columns give the row's field vector (its direction sets
  how much of the precession the probe sees).

Each spectrum gets the spin-noise model fit, the single-Lorentzian fit and the atom number it
implies, the spin-noise-to-shot-noise ratio, the densities from R_SE and from the temperature,
and the entanglement witness of a QND readout at that operating point (ξ², the entangled atoms
and their lifetime τ_ent after the readout stops, under the separable bound b = 1 + p_a = 13/8
of the thermal hyperfine populations and under b = 1, which assumes nothing about them). A
converged fit is kept when something derived from it fails; the failure is named in the fit's
flags. The results go to group
`analysis` (one entry per spectrum, `units` on every dataset, `<name>_uncertainty` beside each
value) and are printed as a table. A run that never finished (status `running`) is reported as
such and what it saved is analysed.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.detection import DetectionChain
from hotspin.analysis.experiment import ApparatusParameters, DerivedQuantities, derive
from hotspin.analysis.fits import (
    SPIN_NOISE_PARAMETERS,
    Estimate,
    FlickerTest,
    LorentzianFit,
    ProbeGeometry,
    SpinNoiseFit,
    fit_lorentzian,
    fit_spin_noise_testing_flicker,
    initial_values,
    split_white_floor,
)
from hotspin.analysis.magnetometry import (
    FieldSweepAnalysis,
    TemperatureSweepAnalysis,
    analyse_field_sweep,
    analyse_temperature_sweep,
    density_from_spin_exchange,
    density_from_temperature,
    field_resolution_fT_per_rtHz,
    spin_noise_to_shot_noise,
)
from hotspin.analysis.optics import DETECTOR_SATURATION_V
from hotspin.analysis.qnd import (
    WITNESS_QUANTITIES,
    ContinuousKalmanFilter,
    ContinuousReadout,
    WitnessResult,
    entanglement_witness,
)
from hotspin.analysis.spectra import (
    Spectrum,
    StreamingPSD,
    angle_from_difference_and_sum,
    segment_length_for,
)
from hotspin.procedures import __version__
from hotspin.procedures.recorder import now_iso
from hotspin.procedures.run_file import plain
from scipy import signal

# The per-step result each sweep was swept in (field magnitude in nT, temperature in K).
SWEPT_COLUMN = {"field_sweep": "applied_field_nT", "temperature_sweep": "temperature_K"}
# Per-step results holding the field the coils were set to: the field vector of a row's refit.
FIELD_COLUMNS = ("coil_field_x_nT", "coil_field_y_nT", "coil_field_z_nT")
BLOCK_SAMPLES = 1 << 20
MAX_SEGMENT_LENGTH = 1 << 14  # 8193 bins: the size the live monitor refits at 10 Hz
WINDOW = "hann"
OVERLAP = 0.5
# What a spectrum's analysis may raise; anything else is a bug and propagates.
_ANALYSIS_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError)


@dataclass
class SpectrumAnalysis:
    """Everything derived from one spectrum (or why it could not be)."""

    label: str
    apparatus: ApparatusParameters
    fit: SpinNoiseFit | None = None
    lorentzian: LorentzianFit | None = None
    snr: Estimate | None = None
    density_from_rate: Estimate | None = None
    witness: WitnessResult | None = None
    field_resolution_fT_per_rtHz: float = math.nan
    error: str | None = None
    flicker_test: FlickerTest | None = None  # whether the spectrum called for A/f
    shot_noise: Estimate | None = None  # the white floor's photon shot noise (from the power)
    electronic_noise: Estimate | None = None  # and the rest of it, the detector's
    filter_check: FilterCheck | None = None  # the continuous Kalman filter over the record
    filter_check_error: str = ""  # why the filter check was not run ('' when it was)


#: Whiteness p-value below which the innovations are not white.
WHITENESS_P_MIN = 0.01
#: Lags of the filter check's Ljung–Box test.
FILTER_CHECK_LAGS = 10


@dataclass(frozen=True)
class FilterCheck:
    """The "filter check": the continuous Kalman filter of the fitted model run over the whole
    record; for the right model its normalised innovations are white with variance 1."""

    normalised_variance: Estimate  # mean u², u = innovation/√S; ± √(2/n)
    ljung_box: float  # Q over `lags` lags
    lags: int
    p_value: float  # of Q under χ²(lags)
    samples: int  # innovations (samples filtered)
    gaps: int  # the record's gaps, filtered as missing samples
    squeezing_parameter: float  # the filter's ξ² (its steady conditional covariance)
    offset_rad: float  # the constant rotation taken out before filtering

    @property
    def consistent(self) -> bool:
        """Return True if the innovations are white with the predicted variance (3σ, p>0.01)."""
        v = self.normalised_variance
        return abs(v.value - 1.0) < 3.0 * v.uncertainty and self.p_value > WHITENESS_P_MIN

    def summary(self) -> str:
        """Return the check in one line."""
        verdict = "consistent" if self.consistent else "NOT consistent: the model misses the data"
        return (
            f"filter check: innovations' normalised variance {self.normalised_variance}, "
            f"Ljung–Box Q = {self.ljung_box:.1f} over {self.lags} lags (p = {self.p_value:.3g}), "
            f"{self.samples} samples, {self.gaps} gaps as missing samples; filter ξ² "
            f"{self.squeezing_parameter:.6g} — {verdict}"
        )


@dataclass
class FileAnalysis:
    """The analysis of one run file."""

    path: Path
    procedure: str
    status: str
    source: str
    notes: list[str] = field(default_factory=list)
    spectra: list[SpectrumAnalysis] = field(default_factory=list)
    truth: dict[str, Any] | None = None
    written: bool = False
    # A sweep's results as a whole (field: γ, q and the rates; temperature: σ_SE), from the refits.
    sweep: FieldSweepAnalysis | TemperatureSweepAnalysis | None = None
    # What of it is reported (`sweep_summary`: an undetermined R_SD′ is withheld, with a note).
    sweep_results: dict[str, tuple[float, float, str]] = field(default_factory=dict)


def apparatus_from_settings(values: dict[str, Any]) -> ApparatusParameters:
    """Return the apparatus described by simulate's settings (SI units)."""
    return ApparatusParameters(
        temperature_K=values["temperature_K"],
        field_T=tuple(1e-9 * b for b in values["field_nT"]),
        probe_power_W=values["probe_power_W"],
        probe_detuning_Hz=values["probe_detuning_GHz"] * 1e9,
        beam_area_m2=values["beam_area_m2"],
        cell_dimensions_m=values["cell_dimensions_m"],
        n2_fill_pressure_Torr=values["n2_fill_pressure_Torr"],
        n2_fill_temperature_K=values["n2_fill_temperature_K"],
        responsivity_A_per_W=values["responsivity_A_per_W"],
        nep_W_per_rtHz=values["nep_W_per_rtHz"],
        optics_transmission=values["optics_transmission"],
    )


def _open(path: Path, mode: str) -> h5py.File:
    """Open a run file; say plainly when a running procedure holds it or it is truncated."""
    try:
        return h5py.File(path, mode)
    except OSError as error:
        text = str(error)
        # HDF5's own words: "unable to lock file, errno = 11" (another process holds it) and
        # "truncated file: eof = …, sblock->base_addr = …" (cut short: a copy or a full disk).
        if "unable to lock file" in text or "errno = 11" in text:
            raise OSError(
                f"{path} is open for writing by a running procedure; analyse it when the run "
                f"has ended ({error})"
            ) from None
        if "truncated file" in text:
            raise ValueError(
                f"{path} is truncated (shorter than its HDF5 structure says: an incomplete "
                f"copy, or a disk that filled): {error}"
            ) from None
        raise


def check_run_file(path: Path) -> None:
    """Refuse, untouched, a file that is not a hotspin run file or simulated record.

    An empty or non-HDF5 file is refused before HDF5 opens it, and an HDF5 file without the
    `hotspin_version` and `procedure` attributes every run file has is refused before anything
    could be written into it.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not a hotspin run file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file: not a hotspin run file")
    with _open(path, "r") as f:
        lacking = [key for key in ("hotspin_version", "procedure") if key not in f.attrs]
    if lacking:
        raise ValueError(
            f"{path} is not a hotspin run file: it lacks the attribute(s) {', '.join(lacking)}"
        )


# --- reading the file -----------------------------------------------------------------------------
def probe_power_into_cell_W(known: ApparatusParameters, detected_power_W: float) -> float:
    """Return the probe power into the cell that puts ``detected_power_W`` on the detector
    (through the cell's and the optics' transmission at ``known``; at most 1 W)."""
    transmission = derive(known).cell_transmission * known.optics_transmission
    return min(detected_power_W / transmission, 1.0)


def with_detected_power(known: ApparatusParameters, detected_power_W: float) -> ApparatusParameters:
    """Return ``known`` with the probe power that puts ``detected_power_W`` on the detector."""
    return known.with_changes(probe_power_W=probe_power_into_cell_W(known, detected_power_W))


def record_detected_power_W(record: h5py.Group, detector: dict[str, float]) -> float:
    """Return the mean light power on the detector over a continuous record, in W, from its sum
    output: <V_sum> / (G_sum * responsivity)."""
    codes = record["v_sum"]
    n = codes.shape[0]
    total = sum(
        float(np.sum(codes[k : k + BLOCK_SAMPLES], dtype=float)) for k in range(0, n, BLOCK_SAMPLES)
    )
    volts = total / max(n, 1) * float(codes.attrs["volts_per_code"])
    return volts / (detector["gain_sum_V_per_A"] * detector["responsivity_A_per_W"])


def apparatus_from_parameters(
    parameters: dict[str, Any], procedure: str, notes: list[str]
) -> ApparatusParameters:
    """Return the apparatus a run describes; name every parameter that had to be defaulted."""
    if procedure == "simulate":
        try:
            return apparatus_from_settings(parameters)
        except KeyError as error:
            raise ValueError(f"simulate record without parameter {error}") from None
    known = {n: parameters[n] for n in ApparatusParameters.names() if n in parameters}
    defaulted = [n for n in ApparatusParameters.names() if n not in parameters]
    if defaulted:
        notes.append(f"apparatus parameters not in the file, defaults used: {', '.join(defaulted)}")
    return ApparatusParameters(**known)


#: The detector calibration a continuous record is read with.
DETECTOR_CALIBRATION = ("gain_diff_V_per_A", "gain_sum_V_per_A", "responsivity_A_per_W")


def detector_calibration(f: h5py.File) -> dict[str, float]:
    """Return the detector's gains (V/A) and responsivity (A/W) a run file states: in its
    parameters (`hotspin simulate`) or in its start snapshot's polarimeter (a procedure's run;
    the PDB450A's gains are set by hand, so the station file's values are the calibration)."""
    sources = [f["parameters"].attrs] if "parameters" in f else []
    if "snapshot/start/polarimeter" in f:
        sources.append(f["snapshot/start/polarimeter"].attrs)
    found: dict[str, float] = {}
    for attributes in sources:
        for name in DETECTOR_CALIBRATION:
            if name in attributes and name not in found:
                found[name] = float(attributes[name])
    return found


def _written_length(dataset: h5py.Dataset, complete: bool) -> int:
    """Return how many samples of a trace were written (a crashed run leaves a zero tail)."""
    n = dataset.shape[0]
    if complete:
        return n
    end = n
    while end > 0:
        start = max(0, end - BLOCK_SAMPLES)
        nonzero = np.flatnonzero(dataset[start:end])
        if nonzero.size:
            return start + int(nonzero[-1]) + 1
        end = start
    return 0


def _count_clipped(block: np.ndarray, limit: float) -> int:
    """Return how many samples sit at or beyond ±limit."""
    return int(np.count_nonzero(np.abs(block) >= limit))


def _trace_spectrum(
    f: h5py.File,
    parameters: dict[str, Any],
    derived: DerivedQuantities,
    complete: bool,
    notes: list[str],
) -> tuple[Spectrum, str]:
    """Return the Welch spectrum of the record's rotation angle and where it came from."""
    detector = detector_calibration(f)
    gains = (detector.get("gain_diff_V_per_A"), detector.get("gain_sum_V_per_A"))
    if "records/polarimeter" in f:
        return _record_spectrum(f["records/polarimeter"], parameters, derived, gains, notes)
    traces = f["traces"]
    calibrated = "v_diff" in traces and "v_sum" in traces and None not in gains
    if calibrated:
        source = "traces/v_diff, traces/v_sum (θ = ½ arcsin[(V_diff/G_diff)/(V_sum/G_sum)])"
        primary = traces["v_sum"]  # the light level is never exactly 0 V where it was written
    elif "theta" in traces:
        source = "traces/theta"
        primary = traces["theta"]
    else:
        raise ValueError("the record has neither traces/v_diff + traces/v_sum with gains nor theta")
    fs = float(primary.attrs["sample_rate_Hz"])
    n = _written_length(primary, complete)
    if n < primary.shape[0]:
        notes.append(f"only {n} of {primary.shape[0]} samples were written before the run stopped")
    if n < 64:
        raise ValueError(f"the record holds {n} samples: too few for a spectrum")
    narrowest = derived.model.eigenmodes(derived.coupling_upper_rad, derived.coupling_lower_rad)[0]
    length = min(MAX_SEGMENT_LENGTH, segment_length_for(n, fs, max(narrowest.hwhm_Hz / 2, 1e-3)))
    psd = StreamingPSD(length, fs, window=WINDOW, overlap=OVERLAP)
    clipped = 0
    for start in range(0, n, BLOCK_SAMPLES):
        stop = min(n, start + BLOCK_SAMPLES)
        if calibrated:
            v_diff = traces["v_diff"][start:stop]
            v_sum = traces["v_sum"][start:stop]
            clipped += _count_clipped(v_diff, DETECTOR_SATURATION_V)
            clipped += _count_clipped(v_sum, DETECTOR_SATURATION_V)
            psd.add(angle_from_difference_and_sum(v_diff, v_sum, *gains))
        else:
            psd.add(traces["theta"][start:stop])
    return replace(psd.spectrum(), clipped_samples=clipped), source


def _record_spectrum(
    record: h5py.Group,
    parameters: dict[str, Any],
    derived: DerivedQuantities,
    gains: tuple[Any, Any],
    notes: list[str],
) -> tuple[Spectrum, str]:
    """Return the Welch spectrum of a continuous record's angle (its stored samples in order)."""
    if None in gains:
        raise ValueError(
            "a continuous record needs the detector gains in the run's parameters or its "
            "start snapshot (snapshot/start/polarimeter)"
        )
    n = min(record["v_diff"].shape[0], record["v_sum"].shape[0])
    expected = int(parameters.get("samples", n))
    if n < expected:
        notes.append(f"only {n} of {expected} samples were written before the run stopped")
    gaps = record["gaps/length"][...]
    if gaps.size:
        notes.append(
            f"{int(gaps.sum())} samples missing in {gaps.size} gaps; the spectrum joins the "
            "stored samples"
        )
    if n < 64:
        raise ValueError(f"the record holds {n} samples: too few for a spectrum")
    fs = float(record.attrs["sample_rate_Hz"])
    narrowest = derived.model.eigenmodes(derived.coupling_upper_rad, derived.coupling_lower_rad)[0]
    length = min(MAX_SEGMENT_LENGTH, segment_length_for(n, fs, max(narrowest.hwhm_Hz / 2, 1e-3)))
    psd = StreamingPSD(length, fs, window=WINDOW, overlap=OVERLAP)
    scale = {name: float(record[name].attrs["volts_per_code"]) for name in ("v_diff", "v_sum")}
    clipped = 0
    for start in range(0, n, BLOCK_SAMPLES):
        stop = min(n, start + BLOCK_SAMPLES)
        v_diff = record["v_diff"][start:stop] * scale["v_diff"]
        v_sum = record["v_sum"][start:stop] * scale["v_sum"]
        clipped += _count_clipped(v_diff, DETECTOR_SATURATION_V)
        clipped += _count_clipped(v_sum, DETECTOR_SATURATION_V)
        psd.add(angle_from_difference_and_sum(v_diff, v_sum, *gains))
    source = "records/polarimeter v_diff, v_sum (θ = ½ arcsin[(V_diff/G_diff)/(V_sum/G_sum)])"
    return replace(psd.spectrum(), clipped_samples=clipped), source


def stored_pieces(
    first_index: int, gap_positions: np.ndarray, gap_lengths: np.ndarray, start: int, stop: int
) -> list[tuple[int, int, int]]:
    """Return the gap-free pieces of a record's stored samples [start, stop) as (stored start,
    stored stop, stream index of the first): sample k has index first_index + k + the lengths
    of the gaps whose position ≤ k (the gap table's rule, `recorder.ContinuousRecord`)."""
    cuts = sorted({int(p) for p in gap_positions if start < p < stop})
    pieces = []
    for a, b in itertools.pairwise([start, *cuts, stop]):
        if b > a:
            index = first_index + a + int(gap_lengths[gap_positions <= a].sum())
            pieces.append((a, b, index))
    return pieces


def _record_angle(
    record: h5py.Group, gains: tuple[float, float], start: int, stop: int
) -> np.ndarray:
    """Return θ in rad of a record's stored samples [start, stop)."""
    volts = [
        record[name][start:stop] * float(record[name].attrs["volts_per_code"])
        for name in ("v_diff", "v_sum")
    ]
    return angle_from_difference_and_sum(volts[0], volts[1], *gains)


def filter_check(
    record: h5py.Group, gains: tuple[float, float], fit: SpinNoiseFit, bound: float
) -> FilterCheck:
    """Run the continuous Kalman filter of ``fit``'s readout over a whole continuous record
    (its gap-free pieces in order, each gap a stretch of missing samples by the absolute index)
    and return its innovations' whiteness test and ξ² under ``bound``."""
    n = min(record["v_diff"].shape[0], record["v_sum"].shape[0])
    fs = float(record.attrs["sample_rate_Hz"])
    first_index = int(record.attrs["first_index"])
    positions, lengths = record["gaps/position"][...], record["gaps/length"][...]
    pieces = stored_pieces(first_index, positions, lengths, 0, n)
    blocks = [
        (k, min(b, k + BLOCK_SAMPLES), index + (k - a))
        for a, b, index in pieces
        for k in range(a, b, BLOCK_SAMPLES)
    ]
    # The polarimeter's balance leaves a constant rotation the spin model has none of: it is
    # taken out, as the entanglement procedure does, over the whole record.
    total = sum(float(np.sum(_record_angle(record, gains, a, b))) for a, b, _ in blocks)
    offset = total / n
    kalman = ContinuousKalmanFilter.from_readout(
        ContinuousReadout.from_fit(fit),
        fs,
        bound=bound,
        whiteness_lags=FILTER_CHECK_LAGS,
        whiteness_window=max(1, len(blocks)),  # the whole record
    )
    for a, b, index in blocks:
        kalman.filter_block(index - first_index, _record_angle(record, gains, a, b) - offset)
    white = kalman.whiteness()
    if white is None:
        raise ValueError(f"{n} samples: too few innovations for the whiteness test")
    return FilterCheck(
        normalised_variance=Estimate(white.normalised_variance, white.variance_uncertainty),
        ljung_box=white.ljung_box,
        lags=white.lags,
        p_value=white.p_value,
        samples=white.samples,
        gaps=int(positions.size),
        squeezing_parameter=float(kalman.squeezing_parameter),
        offset_rad=offset,
    )


def _run_filter_check(f: h5py.File, result: SpectrumAnalysis, notes: list[str]) -> None:
    """Run the filter check of a record's fitted spectrum; a failure is named, not raised."""
    if "records/polarimeter" not in f:
        result.filter_check_error = "the file holds no continuous record (records/polarimeter)"
    elif result.fit is None or result.witness is None:
        result.filter_check_error = "no fit with a witness to filter with"
    else:
        detector = detector_calibration(f)
        try:
            gains = (detector["gain_diff_V_per_A"], detector["gain_sum_V_per_A"])
            result.filter_check = filter_check(
                f["records/polarimeter"], gains, result.fit, result.witness.bound
            )
        except (KeyError, *_ANALYSIS_ERRORS) as error:
            result.filter_check_error = f"{type(error).__name__}: {error}"
    if result.filter_check_error:
        notes.append(f"filter check not run: {result.filter_check_error}")
    elif result.filter_check is not None and not result.filter_check.consistent:
        notes.append(
            "filter check: the innovations are not white with the predicted variance; the "
            "fitted model does not describe the record and its ξ² is not to be trusted"
        )


def _row_spectrum(spectra: h5py.Group, row: int) -> Spectrum:
    """Return row ``row`` of `spectra/psd` with whatever the file says about its estimation."""
    rows = spectra["psd"]
    a = rows.attrs
    errors = spectra["psd_standard_error"][row] if "psd_standard_error" in spectra else None
    window = None
    if "window" in a and "segment_length" in a:
        window = signal.get_window(plain(a["window"]), int(a["segment_length"]))
    return Spectrum(
        frequency_Hz=spectra["frequency"][...],
        psd=rows[row],
        standard_error=errors,
        sample_rate_Hz=float(a["sample_rate_Hz"]) if "sample_rate_Hz" in a else None,
        window=window,
        segments=int(a.get("segments", 0)),
        effective_averages=float(a["effective_averages"]) if "effective_averages" in a else None,
        bin_correlation=a.get("bin_correlation", np.ones(1)),
        mean_removed_bins=int(a.get("mean_removed_bins", 1)),
        clipped_samples=int(a.get("clipped_samples", 0)),
    )


def _row_apparatus(
    f: h5py.File, base: ApparatusParameters, row: int
) -> tuple[ApparatusParameters, list[str]]:
    """Return the apparatus of one row: per-step scalar results override the run's parameters."""
    if "results" not in f:
        return base, []

    def value(name: str) -> float:
        column = f["results"].get(name)
        if isinstance(column, h5py.Dataset) and column.ndim == 1 and row < column.shape[0]:
            return float(column[row])
        return math.nan

    changes: dict[str, Any] = {}
    for name in ApparatusParameters.names():
        if isinstance(getattr(base, name), tuple):
            continue  # a vector (the field): a scalar column of that name is a fit result
        if math.isfinite(scalar := value(name)):
            changes[name] = scalar
    field = [value(name) for name in FIELD_COLUMNS]
    if all(math.isfinite(component) for component in field):
        changes["field_T"] = tuple(1e-9 * component for component in field)
    return (base.with_changes(**changes) if changes else base), sorted(changes)


# --- the analysis of one spectrum -----------------------------------------------------------------
def analyze_spectrum(
    spectrum: Spectrum,
    apparatus: ApparatusParameters,
    label: str,
    duration_s: float | None,
    detection: DetectionChain | None = None,
) -> SpectrumAnalysis:
    """Fit one spectrum (behind ``detection``, None: ideal samples) and derive everything from
    it; errors are recorded, not raised."""
    result = SpectrumAnalysis(label=label, apparatus=apparatus)
    try:
        derived = derive(apparatus)
        geometry = ProbeGeometry.from_apparatus(derived, detection)
        fit, result.flicker_test = fit_spin_noise_testing_flicker(
            spectrum, geometry, initial_values(derived)
        )
    except _ANALYSIS_ERRORS as error:
        result.error = f"{type(error).__name__}: {error}"
        return result
    # A converged fit is kept whatever fails after it; each failure is named in its flags.
    failures: list[str] = []

    def derived_quantity(name: str, compute: Callable[[], Any]) -> Any:
        try:
            return compute()
        except _ANALYSIS_ERRORS as error:
            failures.append(f"{name} failed ({type(error).__name__}: {error}); the fit is kept")
            return None

    if math.isfinite(derived.shot_noise_psd_rad2_per_Hz):
        floor = derived_quantity(
            "floor split",
            lambda: split_white_floor(fit, derived.shot_noise_psd_rad2_per_Hz),
        )
        if floor is not None:
            result.shot_noise, result.electronic_noise = floor

    result.lorentzian = derived_quantity(
        "single-Lorentzian fit", lambda: fit_lorentzian(spectrum, geometry)
    )
    result.snr = derived_quantity("spin/shot noise", lambda: spin_noise_to_shot_noise(fit))
    result.density_from_rate = derived_quantity(
        "density from R_SE",
        lambda: density_from_spin_exchange(
            fit.parameters["spin_exchange_rate"], apparatus.temperature_K
        ),
    )
    result.witness = derived_quantity("entanglement witness", lambda: entanglement_witness(fit))
    if duration_s is not None:
        resolution = derived_quantity(
            "field resolution", lambda: field_resolution_fT_per_rtHz(fit, duration_s)
        )
        result.field_resolution_fT_per_rtHz = math.nan if resolution is None else resolution
    result.fit = replace(fit, flags=fit.flags + tuple(failures))
    return result


def mark_crashed(path: Path) -> bool:
    """Mark a run file that says `running` but that no process holds as failed; return whether.

    A running procedure holds its file open for writing, so `_open` refuses it; a file that
    opens for writing and still says `running` belongs to a run that crashed or was killed.
    """
    with _open(path, "r+") as f:
        if str(plain(f.attrs.get("status", ""))) != "running":
            return False
        f.attrs["status"] = "failed"
        f.attrs["error"] = (
            "the run ended without closing its file (crash, kill or power loss); "
            "every step written before is kept"
        )
        f.attrs["crash_detected"] = now_iso()
    return True


def analyze_file(path: str | Path, *, write: bool = True) -> FileAnalysis:
    """Analyse a run file or simulated record; with ``write``, store the results in it."""
    path = Path(path)
    check_run_file(path)
    # No write bit, or no write access (a read-only mount): root's access ignores the bits.
    read_only = not path.stat().st_mode & 0o222 or not os.access(path, os.W_OK)
    if write and not read_only:
        mark_crashed(path)
    try:
        return _analyze_open_file(path, write and not read_only, read_only)
    except KeyError as error:  # a dataset, group or attribute a run file has is missing
        raise ValueError(f"{path} is a malformed run file: it lacks {error}") from None


def _analyze_open_file(path: Path, write: bool, read_only: bool) -> FileAnalysis:
    computed: Spectrum | None = None
    with _open(path, "r") as f:
        attrs = f.attrs
        procedure = str(plain(attrs.get("procedure", "unknown")))
        status = str(plain(attrs.get("status", "unknown")))
        notes: list[str] = []
        if status == "running":
            notes.append(
                "status 'running': the run never finished (it crashed or is still being "
                "written); analysing what it saved"
            )
        elif "crash_detected" in attrs:
            notes.append(
                "the run had crashed (its file said 'running'); marked failed, analysing what "
                "it saved"
            )
        elif status in ("failed", "aborted"):
            reason = plain(attrs.get("error", ""))
            notes.append(f"status '{status}'" + (f": {reason}" if reason else ""))
        if read_only:
            notes.append("the file is read-only: analysed, results not written back")
        parameters = (
            {k: plain(v) for k, v in f["parameters"].attrs.items()} if ("parameters" in f) else {}
        )
        apparatus = apparatus_from_parameters(parameters, procedure, notes)
        truth = {k: plain(v) for k, v in f["truth"].attrs.items()} if "truth" in f else None
        analysis = FileAnalysis(path, procedure, status, "", notes, truth=truth)
        has_rows = "spectra" in f and "psd" in f["spectra"] and f["spectra/psd"].shape[0] > 0
        recorded = "traces" in f or "records/polarimeter" in f
        if recorded and (procedure == "simulate" or not has_rows):
            detector = detector_calibration(f)
            if (
                apparatus.probe_power_W == 0.0
                and "records/polarimeter" in f
                and {"gain_sum_V_per_A", "responsivity_A_per_W"} <= detector.keys()
            ):
                # A procedure's parameters hold the apparatus before it switched the light on
                # (the station measures no probe power): the record's sum output gives it.
                detected = record_detected_power_W(f["records/polarimeter"], detector)
                if detected > 0:
                    apparatus = with_detected_power(apparatus, detected)
                    notes.append(
                        f"probe power from the record's sum output ({detected:.3g} W on the "
                        f"detector): {apparatus.probe_power_W:.3g} W into the cell"
                    )
            derived = derive(apparatus)
            computed, analysis.source = _trace_spectrum(
                f, parameters, derived, status == "completed", notes
            )
            duration = computed.samples / float(computed.sample_rate_Hz or 1.0)
            result = analyze_spectrum(computed, apparatus, "record", duration)
            _run_filter_check(f, result, notes)
            analysis.spectra.append(result)
        elif has_rows:
            analysis.source = "spectra/psd"
            for row in range(f["spectra/psd"].shape[0]):
                label = f"spectra/psd row {row}"
                row_apparatus, overridden = _row_apparatus(f, apparatus, row)
                if overridden:
                    label += f" ({', '.join(overridden)} from results)"
                try:
                    spectrum = _row_spectrum(f["spectra"], row)
                except (ValueError, ParameterError) as error:
                    analysis.spectra.append(
                        SpectrumAnalysis(label, row_apparatus, error=f"bad spectrum: {error}")
                    )
                    continue
                detection = detection_from_attributes(f["spectra/psd"].attrs)
                analysis.spectra.append(
                    analyze_spectrum(spectrum, row_apparatus, label, None, detection)
                )
            if procedure in ("field_sweep", "temperature_sweep"):
                analysis.sweep = _sweep(f, analysis, derive(apparatus).diffusion_rate)
        else:
            raise ValueError(
                f"{path} holds neither traces nor spectra/psd rows: nothing to analyse"
            )
    if write:
        try:
            write_results(path, analysis, computed)
            analysis.written = True
        except OSError as error:
            analysis.notes.append(f"results not written back: {error}")
    return analysis


def _sweep(
    f: h5py.File, analysis: FileAnalysis, diffusion_rate: float
) -> FieldSweepAnalysis | TemperatureSweepAnalysis | None:
    """Return a field or temperature sweep's results as a whole from the refitted rows (None,
    with a note, when the file or the fits do not allow it)."""
    column_name = SWEPT_COLUMN[analysis.procedure]
    column = f.get(f"results/{column_name}")
    if column is None or column.shape[0] < len(analysis.spectra):
        analysis.notes.append(f"{analysis.procedure}: no results/{column_name} for every row")
        return None
    fitted = np.array([r.fit is not None for r in analysis.spectra], dtype=bool)
    fits = [r.fit for r in analysis.spectra if r.fit is not None]
    settings = column[: fitted.size][fitted]
    try:
        if analysis.procedure == "field_sweep":
            sweep = analyse_field_sweep(1e-9 * settings, fits, diffusion_rate)
        else:
            sweep = analyse_temperature_sweep(settings, fits)
    except ValueError as error:
        analysis.notes.append(f"{analysis.procedure}: nothing from the sweep as a whole: {error}")
        return None
    analysis.sweep_results, withheld = sweep_summary(sweep, fits)
    if withheld:
        analysis.notes.append(f"{analysis.procedure}: {withheld}")
    used = np.zeros(fitted.size, dtype=bool)
    used[fitted] = sweep.used
    return replace(sweep, used=used)  # `used` by row of the file


#: R_SD′ from a field sweep's zero-field intercept is reported only when its uncertainty is below
#: this fraction of its value: beyond it the estimate, bounded below by 0, is far from Gaussian
#: and biased (the fits' log-parameter pins a rate that the spectra hardly see near zero).
MAX_RELATIVE_UNCERTAINTY_OF_R_SD = 0.5


def sweep_summary(
    sweep: FieldSweepAnalysis | TemperatureSweepAnalysis, fits: list[SpinNoiseFit]
) -> tuple[dict[str, tuple[float, float, str]], str | None]:
    """Return a sweep's results {name: (value, uncertainty, units)}, without an R_SD′ the
    spectra do not determine, and why it was withheld (None when nothing was).

    Under transit through the beam the SERF line decays at ≈ 1/τ_D beside R_SD′/6 + R_D (for a
    1 mm waist 800 s⁻¹ beside 66 s⁻¹); each spectrum's fit holds τ_D at the station's waist and
    its R_SD′ is then uncertain by several times its value. Its linewidth's uncertainty is
    conditional on R_SD′ when the fit left R_SD′ at a bound, and such points pull the
    intercept with far too small an uncertainty; and a weakly determined intercept is biased
    (pulls of +0.8 and −14 over 20 seeded five-point sweeps of 18 segments each).
    """
    summary = sweep.summary()
    name = "spin_destruction_rate_from_broadening"
    if not isinstance(sweep, FieldSweepAnalysis) or name not in summary:
        return summary, None
    used = [fit for fit, keep in zip(fits, sweep.used, strict=True) if keep]
    held = sum(
        not math.isfinite(fit.parameters["spin_destruction_rate"].uncertainty) for fit in used
    )
    value, uncertainty, unit = summary[name]
    transit = used[0].geometry.transit_time_s
    beside = (
        f"the transit through the beam (1/τ_D = {1 / transit:.3g} s⁻¹)"
        if math.isfinite(transit)
        else "the line's other decay rates"
    )
    if held:
        reason = (
            f"{held} of {len(used)} SERF spectra left R_SD′ at a fit bound (their linewidths' "
            f"uncertainties hold it fixed)"
        )
    elif not uncertainty < MAX_RELATIVE_UNCERTAINTY_OF_R_SD * abs(value):
        reason = (
            f"R_SD′ = {Estimate(value, uncertainty, unit)} from the intercept is uncertain by "
            f"more than {100 * MAX_RELATIVE_UNCERTAINTY_OF_R_SD:g} %"
        )
    else:
        return summary, None
    del summary[name]
    return summary, (
        f"R_SD′ not determined by this sweep: {reason}; {beside} dominates the SERF line's "
        "decay beside R_SD′/6 (average longer, or widen the beam)"
    )


# --- writing the results --------------------------------------------------------------------------
def _quantities(result: SpectrumAnalysis) -> dict[str, tuple[Estimate | None, str]]:
    """Return every scalar result of a spectrum as {name: (estimate, units)}."""
    fit, lorentzian, witness = result.fit, result.lorentzian, result.witness
    values: dict[str, tuple[Estimate | None, str]] = {}
    for name in (*list(SPIN_NOISE_PARAMETERS)[:5], "flicker_coefficient"):
        # The A/f term is fitted when the spectrum calls for it (else it is reported as absent).
        estimate = fit.parameters.get(name) if fit else None
        values[name] = (estimate, SPIN_NOISE_PARAMETERS[name])
    values["shot_noise_psd"] = (result.shot_noise, "rad^2/Hz")
    values["electronic_noise_psd"] = (result.electronic_noise, "rad^2/Hz")
    values["larmor_frequency"] = (fit.larmor_frequency_Hz if fit else None, "Hz")
    values["linewidth_hwhm"] = (fit.linewidth_hwhm_Hz if fit else None, "Hz")
    values["lorentzian_atom_number"] = (
        lorentzian.implied_atom_number if lorentzian else None,
        "",
    )
    values["spin_noise_to_shot_noise"] = (result.snr, "")
    values["density_from_spin_exchange"] = (result.density_from_rate, "m^-3")
    values["density_from_temperature"] = (
        density_from_temperature(result.apparatus.temperature_K),
        "m^-3",
    )
    reported = witness.quantities() if witness else {}
    for name, unit in WITNESS_QUANTITIES.items():
        values[name] = (reported[name][0] if witness else None, unit)
    return values


def welch_attributes(spectrum: Spectrum, window: str) -> dict[str, Any]:
    """Return the attributes of `spectra/psd` that let analyze model a Welch spectrum exactly.

    A procedure that stores spectra from `StreamingPSD` should put these on `spectra/psd` (and
    the standard errors in `spectra/psd_standard_error`); without them a re-analysis must treat
    the bins as independent samples of the PSD at their centres and take the noise scale from
    the residuals.
    """
    if spectrum.window is None or spectrum.sample_rate_Hz is None:
        raise ValueError("the spectrum carries no Welch window")
    return {
        "window": window,
        "segment_length": spectrum.window.size,
        "sample_rate_Hz": spectrum.sample_rate_Hz,
        "segments": spectrum.segments,
        "effective_averages": float(spectrum.effective_averages or math.nan),
        "bin_correlation": spectrum.bin_correlation,
        "mean_removed_bins": spectrum.mean_removed_bins,
        "clipped_samples": spectrum.clipped_samples,
    }


def detection_attributes(chain: DetectionChain | None) -> dict[str, Any]:
    """Return the attributes of `spectra/psd` that name the detection chain the fit modelled
    (none for ideal samples): the detector's −3 dB bandwidth, the decimation and averaging."""
    if chain is None:
        return {}
    return {
        "detection_bandwidth_Hz": chain.bandwidth_Hz,
        "detection_decimation": chain.decimation,
        "detection_averaging": chain.decimation_averaging,
    }


def detection_from_attributes(attributes: Any) -> DetectionChain | None:
    """Return the detection chain stored by `detection_attributes` (None when none was)."""
    if "detection_bandwidth_Hz" not in attributes:
        return None
    return DetectionChain(
        float(attributes["detection_bandwidth_Hz"]),
        int(attributes["detection_decimation"]),
        bool(attributes["detection_averaging"]),
    )


def _write_spectrum(f: h5py.File, spectrum: Spectrum, source: str) -> None:
    """Store a computed spectrum in `spectra/` with how it was estimated."""
    group = f.create_group("spectra")
    group.create_dataset("frequency", data=spectrum.frequency_Hz).attrs["units"] = "Hz"
    rows = group.create_dataset("psd", data=spectrum.psd[None, :])
    rows.attrs["units"] = "rad^2/Hz"
    rows.attrs.update(welch_attributes(spectrum, WINDOW), source=source, overlap=OVERLAP)
    if spectrum.standard_error is not None:
        errors = group.create_dataset("psd_standard_error", data=spectrum.standard_error[None, :])
        errors.attrs["units"] = "rad^2/Hz"


def write_results(path: Path, analysis: FileAnalysis, computed: Spectrum | None) -> None:
    """Replace group `analysis` with this analysis; add the computed spectrum if none is stored."""
    with _open(path, "r+") as f:
        if computed is not None and "spectra" not in f:
            _write_spectrum(f, computed, analysis.source)
        if "analysis" in f:
            del f["analysis"]
        group = f.create_group("analysis")
        group.attrs.update(
            analyzed=now_iso(),
            hotspin_version=__version__,
            source=analysis.source,
            run_status=analysis.status,
        )
        text = h5py.string_dtype()
        group.create_dataset("notes", data=np.array(analysis.notes, dtype=object), dtype=text)
        group.create_dataset(
            "label", data=np.array([r.label for r in analysis.spectra], dtype=object), dtype=text
        )
        group.create_dataset(
            "flags",
            data=np.array(
                ["; ".join(r.fit.flags) if r.fit else "" for r in analysis.spectra], dtype=object
            ),
            dtype=text,
        )
        group.create_dataset(
            "error",
            data=np.array([r.error or "" for r in analysis.spectra], dtype=object),
            dtype=text,
        )
        table = [_quantities(r) for r in analysis.spectra]
        for name, (_, unit) in table[0].items():
            estimates = [row[name][0] for row in table]
            for suffix, pick in (
                ("", lambda e: e.value),
                ("_uncertainty", lambda e: e.uncertainty),
            ):
                data = np.array([pick(e) if e is not None else math.nan for e in estimates])
                group.create_dataset(name + suffix, data=data).attrs["units"] = unit
        for name, pick_test in (
            ("flicker_lr_statistic", lambda t: t.statistic),
            ("flicker_p_value", lambda t: t.p_value),
            ("flicker_selected", lambda t: float(t.selected)),
        ):
            data = np.array(
                [
                    pick_test(r.flicker_test) if r.flicker_test else math.nan
                    for r in analysis.spectra
                ]
            )
            group.create_dataset(name, data=data).attrs["units"] = ""
        for name, pick_float in (
            ("chi2", lambda r: r.fit.chi2 if r.fit else math.nan),
            ("dof", lambda r: r.fit.dof if r.fit else math.nan),
            ("p_value", lambda r: r.fit.p_value if r.fit else math.nan),
            (
                "lorentzian_reduced_chi2",
                lambda r: r.lorentzian.reduced_chi2 if r.lorentzian else math.nan,
            ),
        ):
            data = np.array([pick_float(r) for r in analysis.spectra])
            group.create_dataset(name, data=data).attrs["units"] = ""
        checks = [r.filter_check for r in analysis.spectra]
        group.attrs["filter_check"] = (
            "the continuous Kalman filter of the fitted model over records/polarimeter: its "
            "innovations' normalised variance (1 for the right model) and Ljung–Box whiteness"
        )
        group.create_dataset(
            "filter_check_error",
            data=np.array([r.filter_check_error for r in analysis.spectra], dtype=object),
            dtype=text,
        )
        for name, pick_check in (
            ("filter_check_normalised_variance", lambda c: c.normalised_variance.value),
            (
                "filter_check_normalised_variance_uncertainty",
                lambda c: c.normalised_variance.uncertainty,
            ),
            ("filter_check_ljung_box", lambda c: c.ljung_box),
            ("filter_check_p_value", lambda c: c.p_value),
            ("filter_check_samples", lambda c: float(c.samples)),
            ("filter_check_gaps", lambda c: float(c.gaps)),
            ("filter_check_squeezing_parameter", lambda c: c.squeezing_parameter),
            ("filter_check_consistent", lambda c: float(c.consistent)),
        ):
            data = np.array([pick_check(c) if c else math.nan for c in checks])
            group.create_dataset(name, data=data).attrs["units"] = ""
        offsets = np.array([c.offset_rad if c else math.nan for c in checks])
        group.create_dataset("filter_check_offset", data=offsets).attrs["units"] = "rad"
        resolution = np.array([r.field_resolution_fT_per_rtHz for r in analysis.spectra])
        group.create_dataset("field_resolution", data=resolution).attrs["units"] = "fT/Hz^0.5"
        if analysis.sweep is not None:
            sweep = group.create_group("sweep")
            for name, (value, uncertainty, unit) in analysis.sweep_results.items():
                sweep.attrs.update(
                    {name: value, f"{name}_uncertainty": uncertainty, f"{name}_units": unit}
                )
            sweep.attrs["rows_used"] = np.flatnonzero(analysis.sweep.used)


# --- the printed report ---------------------------------------------------------------------------
_TRUTH_KEYS: dict[str, tuple[str, Callable[[Any], float]]] = {
    "field_T": ("field_nT", lambda v: 1e-9 * math.sqrt(sum(b * b for b in v))),
    "spin_exchange_rate": ("spin_exchange_rate_per_s", float),
    "spin_destruction_rate": ("spin_destruction_rate_per_s", float),
    "atom_number": ("atom_number", float),
    "white_noise_psd": ("white_noise_psd_rad2_per_Hz", float),
    "density_from_spin_exchange": ("number_density_m3", float),
}
# Shown in the units people expect: (label, unit shown, factor from SI).
_SHOWN: dict[str, tuple[str, str, float]] = {
    "field_T": ("|B|", "nT", 1e9),
    "spin_exchange_rate": ("R_SE", "1/s", 1.0),
    "spin_destruction_rate": ("R_SD'", "1/s", 1.0),
    "atom_number": ("N (beam-weighted)", "", 1.0),  # the beam-weighted mode's atom number
    "white_noise_psd": ("white floor", "rad^2/Hz", 1.0),
    "flicker_coefficient": ("A of A/f", "rad^2", 1.0),
    "shot_noise_psd": ("  of it shot noise", "rad^2/Hz", 1.0),
    "electronic_noise_psd": ("  electronic", "rad^2/Hz", 1.0),
    "larmor_frequency": ("Larmor frequency", "Hz", 1.0),
    "linewidth_hwhm": ("linewidth (HWHM)", "Hz", 1.0),
    "lorentzian_atom_number": ("N (one Lorentzian)", "", 1.0),
    "spin_noise_to_shot_noise": ("spin/shot noise", "", 1.0),
    "density_from_spin_exchange": ("n from R_SE", "cm^-3", 1e-6),
    "density_from_temperature": ("n from T", "cm^-3", 1e-6),
    "squeezing_parameter": ("xi^2 (QND witness)", "", 1.0),
    "entangled_atoms": ("entangled atoms", "", 1.0),
    "entanglement_lifetime_s": ("tau_ent", "ms", 1e3),
    "separable_bound_per_atom": ("bound b per atom", "", 1.0),
    "entanglement_witnessed": ("entangled?", "", 1.0),
    "squeezing_parameter_population_free": ("xi^2 with b = 1", "", 1.0),
    "entangled_atoms_population_free": ("entangled, b = 1", "", 1.0),
    "entanglement_lifetime_population_free_s": ("tau_ent, b = 1", "ms", 1e3),
    "entanglement_witnessed_population_free": ("entangled?, b = 1", "", 1.0),
    "population_systematic": ("xi^2 rise if b = 1", "", 1.0),
}
# Entangled atoms are shown only where entanglement is witnessed; (count, witnessed-flag) pairs.
_CLAIMS = {
    "entangled_atoms": "entanglement_witnessed",
    "entangled_atoms_population_free": "entanglement_witnessed_population_free",
}


def format_report(analysis: FileAnalysis) -> str:
    """Return the results table of an analysis, with uncertainties (and truth when simulated)."""
    lines = [
        f"{analysis.path}: procedure {analysis.procedure}, status {analysis.status}",
        f"  source: {analysis.source}",
    ]
    lines += [f"  note: {note}" for note in analysis.notes]
    for result in analysis.spectra:
        lines.append(f"{result.label}:")
        if result.error:
            lines.append(f"  not analysed: {result.error}")
            continue
        assert result.fit is not None
        header = f"  {'quantity':<20} {'value ± uncertainty':<30} {'unit':<9}"
        lines.append((header + (" truth" if analysis.truth else "")).rstrip())
        quantities = _quantities(result)
        for name, (estimate, _) in quantities.items():
            label, unit, factor = _SHOWN[name]
            claim = quantities.get(_CLAIMS.get(name, ""), (None, ""))[0]
            if estimate is None:
                shown = "n/a"
            elif claim is not None and claim.value != 1.0:
                shown = "none claimed"
            elif name.startswith("entanglement_witnessed"):
                shown = "yes" if estimate.value == 1.0 else "no"
            elif estimate.uncertainty == 0.0:  # exact given the assumption (bound, systematic)
                shown = f"{estimate.value * factor:.4g}"
            else:
                shown = str(Estimate(estimate.value * factor, estimate.uncertainty * factor))
            row = f"  {label:<20} {shown:<30} {unit:<9}"
            if analysis.truth and name in _TRUTH_KEYS:
                key, convert = _TRUTH_KEYS[name]
                if key in analysis.truth:
                    row += f" {convert(analysis.truth[key]) * factor:.6g}"
            lines.append(row.rstrip())
        fit = result.fit
        lines.append(f"  {'chi^2/dof':<20} {fit.chi2:.1f}/{fit.dof} (p = {fit.p_value:.3g})")
        if result.flicker_test is not None:
            lines.append(f"  {result.flicker_test.summary()}")
        if math.isfinite(result.field_resolution_fT_per_rtHz):
            lines.append(
                f"  {'field resolution':<20} {result.field_resolution_fT_per_rtHz:.3g} fT/rtHz "
                "(spin-noise Larmor tracking)"
            )
        if result.witness is not None:
            lines.append(f"  witness: {result.witness.summary()}")
        if result.filter_check is not None:
            lines.append(f"  {result.filter_check.summary()}")
        lines += [f"  flag: {flag}" for flag in fit.flags]
    if analysis.sweep is not None:
        used = int(analysis.sweep.used.sum())
        lines.append(f"{analysis.procedure}, from {used} of the refitted spectra:")
        for name, (value, uncertainty, unit) in analysis.sweep_results.items():
            lines.append(f"  {name:<38} {Estimate(value, uncertainty, unit)}")
    if analysis.written:
        lines.append(f"results written to {analysis.path} (group 'analysis')")
    return "\n".join(lines)
