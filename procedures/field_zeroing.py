"""Field zeroing: find the coil currents that cancel the residual field, axis by axis.

With a bias field B_b across the probe, the Larmor frequency depends on the field magnitude
only, f = F(√(B_b² + (δ − δ₀)² + B_rest²)), so scanning the field δ added along one axis traces a
curve symmetric about δ₀, the field that cancels the residual along that axis. A hyperbola
f = √(a + c(δ − δ₀)²) fitted to the Larmor frequencies (weighted by their uncertainties) gives
δ₀ and its uncertainty; the zero-field currents move by K⁻¹δ₀ along the axis. All three axes
are done in turn, and the whole iterated, since each scan sees the others' residuals in B_rest.

The bias must be across the probe (z) for the precession to be seen: x is scanned with a bias
along y, y and z with a bias along x.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hotspin.analysis import constants as k
from hotspin.analysis.checks import ParameterError
from hotspin.procedures.spectroscopy import DECIMATIONS, SpectrumProcedure
from pymeasure.experiment import FloatParameter, IntegerParameter, ListParameter
from scipy import optimize

AXES = ("x", "y", "z")
# The SERF Larmor coefficient (5γ_a + γ_b)/6 in Hz/nT, to tell a found line from a wrong one.
SERF_HZ_PER_NT = (
    (5 * k.GAMMA_UPPER_rad_per_sT + k.GAMMA_LOWER_rad_per_sT) / 6 / (2 * math.pi) * 1e-9
)
BIAS_AXIS = {0: 1, 1: 0, 2: 0}


# Points a hyperbola (three parameters) is fitted to, at the least: one degree of freedom.
MIN_POINTS = 4


def line_found(larmor_Hz: float, sigma_Hz: float, expected_Hz: float) -> bool:
    """Return whether a fitted Larmor line is where the applied field puts it (within 50 %).

    A fit that found no line, or a line far from the applied field's (a weak line when the field
    turns towards the probe), does not belong in the scan's hyperbola.
    """
    return bool(
        math.isfinite(larmor_Hz) and math.isfinite(sigma_Hz) and sigma_Hz > 0
        and abs(larmor_Hz - expected_Hz) < 0.5 * expected_Hz
    )  # fmt: skip


def hyperbola(offset_nT: np.ndarray, a: float, c: float, centre_nT: float) -> np.ndarray:
    """Return √(a + c(δ − δ₀)²): the Larmor frequency of a field scanned across its zero."""
    return np.sqrt(np.abs(a + c * (offset_nT - centre_nT) ** 2))


def fit_hyperbola(
    offsets_nT: np.ndarray, larmor_Hz: np.ndarray, sigma_Hz: np.ndarray
) -> tuple[float, float, float]:
    """Return (δ₀, its uncertainty, reduced χ²) of a hyperbola fitted to a field scan."""
    lowest = int(np.argmin(larmor_Hz))
    slope = (larmor_Hz[-1] - larmor_Hz[0]) / (offsets_nT[-1] - offsets_nT[0])
    curvature = max(abs(slope) * float(np.max(larmor_Hz)) / np.ptp(offsets_nT), 1e-12)
    start = (float(larmor_Hz[lowest] ** 2), curvature, float(offsets_nT[lowest]))
    values, covariance = optimize.curve_fit(
        hyperbola, offsets_nT, larmor_Hz, p0=start, sigma=sigma_Hz, absolute_sigma=True,
        maxfev=10000,
    )  # fmt: skip
    residual = (hyperbola(offsets_nT, *values) - larmor_Hz) / sigma_Hz
    dof = max(offsets_nT.size - 3, 1)
    return float(values[2]), float(math.sqrt(covariance[2, 2])), float(residual @ residual / dof)


class FieldZeroing(SpectrumProcedure):
    """Null the residual field on all three axes from Larmor frequency against coil field."""

    NAME = "field_zeroing"
    SUMMARY = "null the residual field on x, y, z from hyperbola fits of Larmor vs coil field"
    CALIBRATES = ("coils.zero_field_currents_A",)

    bias_nT = FloatParameter(
        "bias field across the probe during each scan", units="nT", minimum=20.0, maximum=5000.0,
        default=100.0,
    )  # fmt: skip
    span_nT = FloatParameter(
        "the scan runs from −span to +span around the present zero", units="nT", minimum=5.0,
        maximum=5000.0, default=200.0,
    )  # fmt: skip
    scan_points = IntegerParameter("field values per axis scan", minimum=5, maximum=101, default=9)
    # A narrow line at a low bias: 15 Hz bins resolve it (the Larmor line sits at 0.5–1 kHz).
    decimation = ListParameter(
        "digitiser decimation (sample rate 125 MHz / decimation)", choices=DECIMATIONS,
        default=1024,
    )  # fmt: skip
    iterations = IntegerParameter("passes over the three axes", minimum=1, maximum=10, default=2)

    def check_limits(self, station: Any) -> None:
        """Refuse scans the coils cannot reach within their current limit."""
        coils = station.coils
        reach = 1e9 * min(coils.max_field_T(np.eye(3)[i]) for i in range(3))
        needed = math.hypot(self.bias_nT, self.span_nT)
        if needed > reach:
            raise ParameterError(
                f"bias_nT = {self.bias_nT:g} with span_nT = {self.span_nT:g} needs "
                f"{needed:.4g} nT; the coils reach {reach:.4g} nT on every axis "
                "(coils.max_current_A)"
            )

    def calibration(self) -> dict[str, Any]:
        """Return the coil currents that cancel the residual field."""
        currents = self.station.coils.zero_field_currents_A
        return {"coils.zero_field_currents_A": [float(f"{c:.6g}") for c in currents]}

    def execute(self) -> None:
        """Scan each axis, fit its hyperbola, move the zero; iterate; report the residual field."""
        coils = self.station.coils
        points = int(self.scan_points)
        # Along z the scan turns the field towards the probe, which sees less and less of the
        # precession: keep the field within 45° of the transverse bias there.
        spans = (self.span_nT, self.span_nT, min(self.span_nT, self.bias_nT))
        total = int(self.iterations) * 3 * points
        done = 0
        last: dict[int, tuple[float, float]] = {}
        for iteration in range(int(self.iterations)):
            for axis in range(3):
                offsets = np.linspace(-spans[axis], spans[axis], points)
                larmor, sigma, expected = [], [], []
                for offset in offsets:
                    field = np.zeros(3)
                    field[BIAS_AXIS[axis]] = self.bias_nT
                    field[axis] += offset
                    coils.set_field(1e-9 * field)
                    expect = SERF_HZ_PER_NT * float(np.linalg.norm(field))
                    # A point whose line is not where the field puts it is taken once more
                    # before the scan does without it; both spectra are recorded.
                    for attempt in (1, 2):
                        step = self.measure_spectrum(progress=(done / total, (done + 1) / total))
                        f = step.fit.larmor_frequency_Hz
                        self.record_spin_noise(
                            step,
                            {
                                "iteration": (float(iteration), ""),
                                "axis": (float(axis), ""),
                                "offset_nT": (float(offset), "nT"),
                                "attempt": (float(attempt), ""),
                            },
                        )
                        if line_found(f.value, f.uncertainty, expect):
                            break
                        self.notes.append(
                            f"field_zeroing: {AXES[axis]} scan at {offset:g} nT: no Larmor line "
                            f"near {expect:.4g} Hz (fit: {f}), attempt {attempt} of 2"
                        )
                    done += 1
                    larmor.append(f.value)
                    sigma.append(f.uncertainty)
                    expected.append(expect)
                centre, error, chi2 = self._centre(axis, offsets, larmor, sigma, expected)
                shift = np.zeros(3)
                shift[axis] = 1e-9 * centre
                coils.zero_field_currents_A = coils.currents_for_field(shift)
                last[axis] = (centre, error)
                self.notes.append(
                    f"field_zeroing: pass {iteration + 1}, {AXES[axis]}: moved the zero by "
                    f"{centre:.3g} ± {error:.2g} nT (reduced χ² {chi2:.2f})"
                )
        coils.set_field(np.zeros(3))
        summary = {
            f"residual_field_{AXES[axis]}_nT": (centre, error, "nT")
            for axis, (centre, error) in last.items()
        }
        for axis, current in enumerate(coils.zero_field_currents_A):
            summary[f"zero_field_current_{AXES[axis]}_A"] = (float(current), math.nan, "A")
        self.record_summary(summary)
        currents = ", ".join(f"{current:.6g}" for current in coils.zero_field_currents_A)
        self.notes.append(
            f"field_zeroing: later runs of this session use the new zero; to keep it, put "
            f"zero_field_currents_A = [{currents}] in the station file's [coils] table "
            "('hotspin run field_zeroing --station FILE --save-calibration' does)"
        )

    def _centre(
        self,
        axis: int,
        offsets: np.ndarray,
        larmor: list[float],
        sigma: list[float],
        expected: list[float],
    ) -> tuple[float, float, float]:
        """Fit the scan's hyperbola to the points whose line was found; raise if too few."""
        f, s, e = np.array(larmor), np.array(sigma), np.array(expected)
        found = np.array([line_found(*point) for point in zip(f, s, e, strict=True)], dtype=bool)
        if found.sum() < MIN_POINTS:
            raise RuntimeError(
                f"{AXES[axis]} scan: the Larmor line was found at only {int(found.sum())} of "
                f"{f.size} points ({MIN_POINTS} needed); raise averages or bias_nT"
            )
        if not found.all():
            self.notes.append(
                f"field_zeroing: {AXES[axis]} scan: left out the points at "
                f"{', '.join(f'{o:g}' for o in offsets[~found])} nT (no line where expected)"
            )
        try:
            centre, error, chi2 = fit_hyperbola(offsets[found], f[found], s[found])
        except (RuntimeError, ValueError) as failure:
            raise RuntimeError(
                f"{AXES[axis]} scan: no hyperbola fits the Larmor frequencies "
                f"({failure}); check the bias and the coils"
            ) from None
        span = float(np.max(np.abs(offsets)))
        if not abs(centre) <= 2 * span:
            raise RuntimeError(
                f"{AXES[axis]} scan: the field zero {centre:.3g} nT lies outside the scan "
                f"(±{span:g} nT); widen span_nT"
            )
        return centre, error, chi2
