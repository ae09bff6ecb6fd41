"""A continuous record that another process is writing, as the live monitor's source.

`hotspin gui --watch FILE` on a run file holding `records/polarimeter` (the `record`
procedure, `hotspin simulate`): `RecordSource` stands beside the station's `StreamSource` and
feeds the same `SignalProcessor` (so the same running spectrum, trace, duty cycle, model fit
and QND filter), but reads the samples from the file, behind the length the writer last
flushed, instead of from the digitiser. It opens no station and takes no station lock: the file
is opened as an SWMR reader (``swmr=True``: no HDF5 file lock either), so watching is always
allowed, whatever process drives the apparatus.

Each reading opens the file, refreshes the two code datasets and the gap table, hands the new
samples over and closes it again, so the run's end (the writer leaves SWMR mode, reopens the
file and adds its end snapshot and status) is seen by the next reading. The writer flushes the
code datasets before the gap table; a reader between the two would see samples past a gap it
does not know yet. So the samples a reading hands over are those the *previous* reading saw
flushed, placed with the gap table of this one (flushed by then): the view lags one reading.

A stored sample k has the stream index first_index + k + the lengths of the gaps whose position
≤ k (docs/data-file.md); blocks are cut at the gaps, so each gap is a break of the Welch records
and a missing stretch of the duty cycle, as in the live stream, and the gap table's rows and
samples are shown where the live view shows the board's.

The apparatus: the file states it in its parameters and in its start and end snapshots only.
The start snapshot is taken before the procedure's own preparations (it may switch the probe
light on) and the end snapshot after the station's safe state, and nothing in the file says
when, during a record, a field, heater setpoint, laser or plate setting changed. What the file
lacks for averages that follow the apparatus is a time-stamped log of those settings beside the
record. So one record is one average (its reason names the record); a new record in the file
(the file rewritten by a new run, or a new sample rate) starts a new one. Of a record already
written when the watch begins, only the last CATCH_UP_S are read.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hotspin.analysis.experiment import ApparatusParameters
from hotspin.gui.stream import SignalProcessor
from hotspin.gui.worker import Loop
from hotspin.instruments.polarimeter import Polarimeter, PolarimeterRecord
from hotspin.instruments.redpitaya import CODES_PER_FULL_SCALE
from hotspin.instruments.station_config import DigitiserConfig, PolarimeterConfig
from hotspin.procedures.analyze import (
    apparatus_from_parameters,
    detector_calibration,
    stored_pieces,
    with_detected_power,
)
from hotspin.procedures.run_file import plain

#: The continuous record the monitor follows.
RECORD = "records/polarimeter"
#: Seconds between two readings of the file.
READ_INTERVAL_S = 0.2
#: Seconds of a record already written that the watch reads when it begins (the rest, before
#: them, is not in its average).
CATCH_UP_S = 10.0
#: Most samples handed to the processor as one block (a block of the live stream at
#: decimation 64 holds 32 768).
MAX_BLOCK_SAMPLES = 1 << 15


def holds_record(path: str | Path) -> bool:
    """Return True if ``path`` is an HDF5 file that holds a continuous record now."""
    try:
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            return RECORD in f
    except OSError:  # not there yet, not HDF5, or not an SWMR file while it is written
        return False


@dataclass(frozen=True)
class RecordContext:
    """What a run file says about its record's apparatus: the calibration, the apparatus to
    fit with, and the applied and residual fields (T)."""

    calibration: Polarimeter  # used only to calibrate: it has no instrument links
    apparatus: ApparatusParameters
    applied_field_T: tuple[float, float, float] | None
    residual_field_T: tuple[float, float, float] | None
    notes: tuple[str, ...]


def record_context(f: h5py.File) -> RecordContext:
    """Read a run file's detector calibration, apparatus and fields (what `analyze` reads)."""
    detector = detector_calibration(f)
    lacking = [n for n in ("gain_diff_V_per_A", "gain_sum_V_per_A") if n not in detector]
    if lacking:
        raise ValueError(
            f"the file states no {', '.join(lacking)} (parameters or snapshot/start/polarimeter):"
            " the angle cannot be calibrated"
        )
    config = PolarimeterConfig(**detector)
    stored = f["parameters"].attrs if "parameters" in f else {}
    parameters = {k: plain(v) for k, v in stored.items()}
    notes: list[str] = []
    procedure = str(plain(f.attrs.get("procedure", "unknown")))
    apparatus = apparatus_from_parameters(parameters, procedure, notes)
    applied = residual = None
    coils = f.get("snapshot/start/coils")
    if coils is not None and "coil_matrix_T_per_A" in coils.attrs:
        matrix = np.asarray(coils.attrs["coil_matrix_T_per_A"], dtype=float)
        applied = tuple(float(b) for b in coils.attrs["field_T"])
        zero = np.asarray(coils.attrs.get("zero_field_currents_A", np.zeros(3)), dtype=float)
        residual = tuple(float(b) for b in -(matrix @ zero))
    elif "field_T" in parameters:
        applied = tuple(float(b) for b in parameters["field_T"])
    return RecordContext(
        Polarimeter(None, None, config, DigitiserConfig()),  # type: ignore[arg-type]
        apparatus,
        applied,  # type: ignore[arg-type]
        residual,  # type: ignore[arg-type]
        tuple(notes),
    )


class RecordSource(Loop):
    """Follows a growing continuous record and hands its blocks, with their stream indices, to
    the processor (waiting for room: a file loses nothing when the monitor is slow).

    Offers what the live view reads of a source: ``running`` (cleared: paused), ``error``,
    ``warning()``, ``stalled_s()``, ``watch`` (None: no apparatus readings), ``board_gaps`` and
    ``board_missing`` (here the gap table's rows and samples); and, as the processor's
    calibration, the file's (the processor is made first: ``processor.calibration = source``)."""

    THREAD_NAME = "watch-record"

    def __init__(
        self,
        path: str | Path,
        processor: SignalProcessor,
        interval_s: float = READ_INTERVAL_S,
        block_samples: int = MAX_BLOCK_SAMPLES,
        catch_up_s: float = CATCH_UP_S,
    ) -> None:
        """``catch_up_s``: of a record already on disk, only its last seconds are read (the
        watch follows the record; it does not re-read days of it)."""
        super().__init__()
        self.catch_up_s = float(catch_up_s)
        self.path = Path(path)
        self.processor = processor
        self.interval_s = float(interval_s)
        self.block_samples = int(block_samples)
        self.running = threading.Event()
        self.running.set()
        self.watch = None
        self.error = ""  # the latest reading's failure ('' after a good one)
        self.board_gaps = 0  # rows of the record's gap table
        self.board_missing = 0  # samples in them
        self.samples = 0  # stored samples handed to the processor
        self.flushed = 0  # stored samples the writer had flushed at the latest reading
        self.status = ""  # the run's status at the latest reading
        self.readings = 0
        self.context: RecordContext | None = None
        self._identity: tuple[Any, ...] | None = None  # which record is followed
        self._seen = 0  # stored samples flushed at the previous reading
        self._lock = threading.Lock()

    # --- what the live view asks a source ----------------------------------------------------
    def warning(self) -> str:
        """Return why no spectrum can come ('' : none; a file needs no real-time clock)."""
        return ""

    def stalled_s(self) -> float:
        """Return 0: a record that stops growing has ended or is paused, it does not stall."""
        return 0.0

    # --- the calibration the processor reads the blocks with (the file's) -----------------------
    def _calibration(self) -> Polarimeter:
        context = self.context
        if context is None:
            raise ValueError(f"{self.path}: no record read yet")
        return context.calibration

    def rotation_angle_rad(self, record: PolarimeterRecord) -> np.ndarray:
        """Return θ(t) in rad of a block, with the file's detector gains."""
        return self._calibration().rotation_angle_rad(record)

    def imbalance(self, record: PolarimeterRecord) -> float:
        """Return the polarimeter's normalised imbalance of a block."""
        return self._calibration().imbalance(record)

    def detected_power_W(self, record: PolarimeterRecord) -> float:
        """Return the light power on the detector in W (the file's gain and responsivity)."""
        return self._calibration().detected_power_W(record)

    # --- the fitter's apparatus ------------------------------------------------------------------
    def apparatus(self, detected_power_W: float) -> ApparatusParameters:
        """Return the record's apparatus with the probe power the detector saw."""
        context = self.context
        if context is None:
            raise ValueError(f"{self.path}: no record read yet")
        if not (math.isfinite(detected_power_W) and detected_power_W > 0):
            return context.apparatus
        return with_detected_power(context.apparatus, detected_power_W)

    def fields(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the applied and residual fields (T) of the record's start snapshot."""
        context = self.context
        nan = np.full(3, math.nan)
        if context is None:
            return nan, nan
        return (
            nan if context.applied_field_T is None else np.asarray(context.applied_field_T),
            nan if context.residual_field_T is None else np.asarray(context.residual_field_T),
        )

    # --- the loop --------------------------------------------------------------------------------
    def _wake(self) -> None:
        self.running.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.running.is_set():
                try:
                    self.read_once()
                    self.error = ""
                except (OSError, KeyError, ValueError, RuntimeError) as error:
                    # Not readable now (the writer between SWMR and its end, a file not yet
                    # there): shown, and read again at the next reading.
                    self.error = f"{type(error).__name__}: {error}"
            self._stop.wait(self.interval_s)

    def read_once(self) -> int:
        """Read the file once and hand over the samples the previous reading saw flushed;
        return how many were handed over."""
        with self._lock, h5py.File(self.path, "r", libver="latest", swmr=True) as f:
            self.readings += 1
            self.status = str(plain(f.attrs.get("status", "")))
            record = f[RECORD]
            identity = (
                plain(f.attrs.get("started", "")),
                float(record.attrs["first_time_s"]),
                float(record.attrs["sample_rate_Hz"]),
            )
            codes = [record["v_diff"], record["v_sum"]]
            gaps = [record["gaps/position"], record["gaps/length"]]
            for dataset in (*codes, *gaps):
                dataset.refresh()
            flushed = min(codes[0].shape[0], codes[1].shape[0])
            if identity != self._identity:
                self._begin(f, identity, flushed)
            rows = min(gaps[0].shape[0], gaps[1].shape[0])
            positions, lengths = gaps[0][:rows], gaps[1][:rows]
            # Handed over: what the previous reading saw (its gaps are in this gap table).
            stop, self._seen, self.flushed = min(self._seen, flushed), flushed, flushed
            known = positions <= stop
            self.board_gaps = int(np.count_nonzero(known))
            self.board_missing = int(lengths[known].sum())
            start = self.samples
            if stop <= start:
                return 0
            fs = float(record.attrs["sample_rate_Hz"])
            first_index = int(record.attrs["first_index"])
            scales = [float(c.attrs["volts_per_code"]) for c in codes]
            full_scale = (scales[0] * CODES_PER_FULL_SCALE, scales[1] * CODES_PER_FULL_SCALE)
            for a, b, index in stored_pieces(first_index, positions, lengths, start, stop):
                for k in range(a, b, self.block_samples):
                    end = min(b, k + self.block_samples)
                    block = PolarimeterRecord(
                        fs,
                        codes[0][k:end] * scales[0],
                        codes[1][k:end] * scales[1],
                        full_scale,
                    )
                    self.processor.offer(block, index + (k - a), None, wait=True)
                    if self._stop.is_set():
                        self.samples = end
                        return end - start
            self.samples = stop
            return stop - start

    def _begin(self, f: h5py.File, identity: tuple[Any, ...], flushed: int) -> None:
        """Follow a new record (a new average, which names it) from its last ``catch_up_s``
        (``flushed``: the samples on disk now)."""
        self.context = record_context(f)
        first = self._identity is None
        skipped = max(0, flushed - round(self.catch_up_s * float(identity[2])))
        self._identity, self._seen, self.samples = identity, skipped, skipped
        self.board_gaps = self.board_missing = 0
        reason = f"record {self.path.name}:{RECORD}" + ("" if first else " (a new record)")
        if skipped:
            reason += f" from stored sample {skipped} (its last {self.catch_up_s:g} s then)"
        self.processor.reset(
            f"{reason}; the file logs no apparatus change during a record: one average",
            float(identity[2]),
        )
