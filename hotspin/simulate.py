"""`hotspin simulate`: a synthetic polarimeter record with its full truth, for testing analyses.

The record is what a balanced polarimeter at balance and an ideal 16-bit digitiser would give,
in the run file's continuous-record format (`procedures.recorder.ContinuousRecord`, the one
the `record` procedure writes): `records/polarimeter/v_diff` and `…/v_sum`, int16 codes with
their `volts_per_code`, 4 bytes per sample pair, in a live (SWMR) file flushed block by block.
Each channel's step is the power of two that spans its expected range (10 standard deviations
of V_diff; the mean plus 10 standard deviations of V_sum, or the detector's 10 V saturation):
V_diff's rounding noise is below 10⁻⁷ of its variance, and 10 V is an exact code. The angle is
θ = ½ arcsin[(V_diff/G_diff)/(V_sum/G_sum)]. Group `truth` holds every parameter used and every
derived quantity, units in the names, and the exact spectrum the record is drawn from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pymeasure.experiment import FloatParameter, IntegerParameter, Parameter

from hotspin.analysis.checks import check_range
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.optics import DETECTOR_SATURATION_V
from hotspin.procedures.analyze import apparatus_from_settings
from hotspin.procedures.parameters import BoundedVectorParameter
from hotspin.procedures.recorder import RunFile, check_free_space, open_run_file
from hotspin.simulators.polarimeter_optics import BalancedPolarimeter, PolarimeterConfig
from hotspin.simulators.spin_noise import FastAngleNoise

_defaults = ApparatusParameters()
_detector = PolarimeterConfig()

SIMULATE_PARAMETERS: dict[str, Parameter] = {
    "temperature_K": FloatParameter(
        "cell temperature", units="K", minimum=250, maximum=700, default=_defaults.temperature_K
    ),
    "field_nT": BoundedVectorParameter(
        "field vector Bx,By,Bz (the probe runs along z)",
        units="nT",
        minimum=-1e6,
        maximum=1e6,
        default=[1e9 * b for b in _defaults.field_T],
    ),
    "probe_power_W": FloatParameter(
        "probe power into the cell", units="W", minimum=1e-9, maximum=1,
        default=_defaults.probe_power_W,
    ),
    "probe_detuning_GHz": FloatParameter(
        "probe detuning from the D1 F=2 line (positive = blue)", units="GHz", minimum=-1000,
        maximum=1000, default=_defaults.probe_detuning_Hz / 1e9,
    ),
    "beam_area_m2": FloatParameter(
        "probe beam area", units="m^2", minimum=1e-9, maximum=1e-3,
        default=_defaults.beam_area_m2,
    ),
    "cell_dimensions_m": BoundedVectorParameter(
        "cell inner size Lx,Ly,Lz (Lz along the probe)", units="m", minimum=1e-4, maximum=1,
        default=list(_defaults.cell_dimensions_m),
    ),
    "n2_fill_pressure_Torr": FloatParameter(
        "N2 fill pressure at the fill temperature", units="Torr", minimum=1e-3, maximum=3000,
        default=_defaults.n2_fill_pressure_Torr,
    ),
    "n2_fill_temperature_K": FloatParameter(
        "N2 fill temperature", units="K", minimum=200, maximum=400,
        default=_defaults.n2_fill_temperature_K,
    ),
    "responsivity_A_per_W": FloatParameter(
        "detector responsivity", units="A/W", minimum=1e-3, maximum=1,
        default=_detector.responsivity_A_per_W,
    ),
    "nep_W_per_rtHz": FloatParameter(
        "detector noise-equivalent power", units="W/rtHz", minimum=0, maximum=1e-6,
        default=_detector.nep_W_per_rtHz,
    ),
    "gain_diff_V_per_A": FloatParameter(
        "PDB450A difference (RF) gain", units="V/A", minimum=1e3, maximum=1e7,
        default=_detector.gain_diff_V_per_A,
    ),
    "gain_sum_V_per_A": FloatParameter(
        "PDB450A monitor (sum) gain", units="V/A", minimum=1e2, maximum=1e7,
        default=_detector.gain_sum_V_per_A,
    ),
    "optics_transmission": FloatParameter(
        "transmission from cell to detector", minimum=1e-3, maximum=1,
        default=_detector.optics_transmission,
    ),
    "seed": IntegerParameter(
        "random seed (none = fresh entropy)", minimum=0, maximum=2**63 - 1, default=None
    ),
}  # fmt: skip

MAX_DURATION_S = 1e5
MAX_SAMPLE_RATE_HZ = 1e9
BLOCK_SAMPLES = 1 << 20
TRUTH_SPECTRUM_BINS = 4097
LARGEST_CODE = 32767
RANGE_STANDARD_DEVIATIONS = 10.0


def _code_step_V(range_V: float) -> float:
    """Return the power-of-two volts per code whose ±32 767 codes span ``range_V``."""
    return 2.0 ** math.ceil(math.log2(max(range_V, 1e-30) / LARGEST_CODE))


def _codes(volts: np.ndarray, step_V: float) -> np.ndarray:
    """Round voltages to int16 codes of ``step_V`` volts."""
    return np.clip(np.rint(volts / step_V), -LARGEST_CODE, LARGEST_CODE).astype(np.int16)


def simulate_record(
    out: str | Path,
    duration_s: float,
    sample_rate_Hz: float,
    values: dict[str, Any],
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic record of the given length and sample rate to ``out``; return its path."""
    check_range("duration_s", duration_s, 0, MAX_DURATION_S, "s", low_open=True)
    check_range("sample_rate_Hz", sample_rate_Hz, 0, MAX_SAMPLE_RATE_HZ, "Hz", low_open=True)
    total = round(duration_s * sample_rate_Hz)
    if total < 1:
        raise ValueError(
            f"duration_s = {duration_s:g} at sample_rate_Hz = {sample_rate_Hz:g} gives no sample"
        )
    # Three float32 traces (v_diff, v_sum, theta) of `total` samples each.
    check_free_space(out, 3 * 4 * total, f"a record of {total} samples")
    apparatus = apparatus_from_settings(values)
    derived = derive(apparatus)
    rng = np.random.default_rng(values["seed"])
    angle = FastAngleNoise.from_derived(derived, sample_rate_Hz, seed=rng)
    detector = BalancedPolarimeter(
        PolarimeterConfig(
            responsivity_A_per_W=values["responsivity_A_per_W"],
            gain_diff_V_per_A=values["gain_diff_V_per_A"],
            gain_sum_V_per_A=values["gain_sum_V_per_A"],
            nep_W_per_rtHz=values["nep_W_per_rtHz"],
            optics_transmission=values["optics_transmission"],
        )
    )
    parameters = dict(values, duration_s=duration_s, sample_rate_Hz=sample_rate_Hz, samples=total)
    with RunFile(out, "simulate", parameters, live=True) as run:
        truth = derived.truth_attributes()
        truth.update(
            sample_rate_Hz=sample_rate_Hz,
            gain_diff_V_per_A=values["gain_diff_V_per_A"],
            gain_sum_V_per_A=values["gain_sum_V_per_A"],
            seed=values["seed"],
        )
        run.write_truth(truth)
        frequency = np.linspace(0.0, sample_rate_Hz / 2, TRUTH_SPECTRUM_BINS)
        psd = (
            derived.model.sampled_psd(
                frequency, sample_rate_Hz, derived.coupling_upper_rad, derived.coupling_lower_rad
            )
            + derived.white_noise_psd_rad2_per_Hz
        )
        run.write_dataset("truth/frequency", frequency, "Hz")
        run.write_dataset(
            "truth/psd",
            psd,
            "rad^2/Hz",
            description="one-sided PSD of the angle θ of records/polarimeter as sampled"
            " (aliasing included)",
        )
        power = derived.detected_power_W
        current = values["responsivity_A_per_W"] * power
        angle_sd = math.sqrt(
            derived.angle_variance_rad2() + derived.white_noise_psd_rad2_per_Hz * sample_rate_Hz / 2
        )
        sum_sd = (
            values["gain_sum_V_per_A"]
            * detector.current_noise_density_A_per_rtHz(power)
            * math.sqrt(sample_rate_Hz / 2)
        )
        steps = {
            "v_diff": _code_step_V(
                min(
                    RANGE_STANDARD_DEVIATIONS
                    * 2
                    * angle_sd
                    * values["gain_diff_V_per_A"]
                    * current,
                    DETECTOR_SATURATION_V,
                )
            ),
            "v_sum": _code_step_V(
                min(
                    values["gain_sum_V_per_A"] * current + RANGE_STANDARD_DEVIATIONS * sum_sd,
                    DETECTOR_SATURATION_V,
                )
            ),
        }
        record = run.create_record("polarimeter", steps, sample_rate_Hz, 1, 0.0)
        run.start_swmr()
        done = 0
        while done < total:
            n = min(BLOCK_SAMPLES, total - done)
            observed = angle.block(n)
            v_diff = detector.difference_voltage_at_balance(observed, power)
            v_sum = detector.sum_voltage(n, power, sample_rate_Hz, rng)
            record.append(
                done, np.stack([_codes(v_diff, steps["v_diff"]), _codes(v_sum, steps["v_sum"])])
            )
            record.flush()
            done += n
            if progress is not None:
                progress(done, total)
    return Path(out)


def describe_truth(path: str | Path) -> str:
    """Return a short human-readable summary of a simulated record's truth."""
    with open_run_file(path) as f:
        t = f["truth"].attrs
        n = f["parameters"].attrs["samples"]
        lines = [
            f"wrote {path}: {n} samples at {t['sample_rate_Hz']:g} Hz",
            f"  n = {t['number_density_cm3']:.3g} cm^-3, N = {t['atom_number']:.3g} atoms",
            f"  R_SE = {t['spin_exchange_rate_per_s']:.4g} /s, "
            f"R_SD' = {t['spin_destruction_rate_per_s']:.4g} /s, "
            f"R_D = {t['diffusion_rate_per_s']:.3g} /s",
            f"  |B| = {math.sqrt(sum(b * b for b in t['field_nT'])):.4g} nT, "
            f"SERF Larmor frequency {t['serf_larmor_frequency_Hz']:.5g} Hz",
            f"  shot-noise floor {t['shot_noise_psd_rad2_per_Hz']:.3g} rad^2/Hz, "
            f"atomic angle variance {t['angle_variance_rad2']:.3g} rad^2",
        ]
    return "\n".join(lines)
