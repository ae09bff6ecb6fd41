"""Continuous record: the polarimeter's two outputs streamed without a break into the run file.

The digitiser's deep-memory ring is read behind its write pointer (`RedPitaya.stream`); every
sample lands in `records/polarimeter` (int16 codes of V_diff and V_sum with their volts per
code), every sample the ring lost before it was read lands in the record's gap table. The
stream, its restarts after link faults and its gaps are `procedures.streaming`'s, shared with
the spectrum procedures. The file
is live while it grows: another process reads it in SWMR mode (`procedures.recorder`). The
apparatus state is the run's parameters and its start and end snapshots, as for every run.
"""

from __future__ import annotations

from hotspin.instruments.redpitaya import ADC_CLOCK_Hz, StreamBlock, check_axi_decimation
from hotspin.procedures.base import HotspinProcedure
from hotspin.procedures.streaming import PolarimeterStream
from pymeasure.experiment import FloatParameter, IntegerParameter

RECORD_NAME = "polarimeter"
MAX_DURATION_S = 7 * 86400.0


class Record(HotspinProcedure):
    """A gap-accounted continuous record of V_diff and V_sum for a given time."""

    NAME = "record"
    SUMMARY = "a continuous record of the polarimeter outputs (deep memory, every sample kept)"
    WATCHES = ("interlock",)
    LIVE = True

    duration_s = FloatParameter(
        "length of the record", units="s", minimum=1e-3, maximum=MAX_DURATION_S, default=10.0
    )
    decimation = IntegerParameter(
        "digitiser decimation (1, 2, 4, 8 or 16…65536; sample rate 125 MHz / decimation)",
        minimum=1, maximum=65536, default=64,
    )  # fmt: skip

    def check_limits(self, station: object) -> None:
        """Refuse a decimation the deep-memory writer does not take, before anything moves."""
        check_axi_decimation(int(self.decimation))

    def execute(self) -> None:
        """Stream the record into the run file, flushed at least every second."""
        assert self.run is not None
        self.ensure_probe_light()
        self.watch()
        decimation = int(self.decimation)
        n = max(1, round(float(self.duration_s) * ADC_CLOCK_Hz / decimation))
        with PolarimeterStream(self, decimation, n) as stream:
            scales = stream.volts_per_code
            record = self.run.create_record(
                RECORD_NAME,
                {"v_diff": scales[0], "v_sum": scales[1]},
                stream.sample_rate_Hz,
                decimation,
                stream.start_time_s,
                clock=self.station.clock.now,  # flushed every second of the lab's time
            )
            self.run.start_swmr()
            try:
                for item in stream:
                    if isinstance(item, StreamBlock):
                        record.append(item.first_index, item.codes)
                    else:
                        record.add_gap(item.first_index, item.length)
                    self.progress(record.next_index / n, f"{record.next_index} of {n} samples")
                    self.check_stop()
            finally:
                record.flush()
                self.run.end_swmr()
        if record.missing:
            self.notes.append(
                f"{self.NAME}: {record.missing} of {n} samples lost in "
                f"{record.gap_count} gaps (the gap table says where)"
            )
            speed = getattr(self.station.clock, "speed", 1.0)
            if speed > 1.0 and not getattr(self.station.clock, "manual", True):
                self.notes.append(  # a simulated lab on a fast clock writes faster than any reader
                    f"{self.NAME}: the simulated clock runs {speed:g} times faster than the "
                    "wall; a continuous record needs simulation.clock_speed = 1"
                )
        self.record_summary(
            {
                "samples_recorded": (float(record.stored), 0.0, "samples"),
                "samples_missing": (float(record.missing), 0.0, "samples"),
                "recorded_fraction": (record.stored / n, 0.0, ""),
            }
        )
