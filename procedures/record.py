"""Continuous record: the polarimeter's two outputs streamed without a break into the run file.

The digitiser's deep-memory ring is read behind its write pointer (`RedPitaya.stream`); every
sample lands in `records/polarimeter` (int16 codes of V_diff and V_sum with their volts per
code), every sample the ring lost before it was read lands in the record's gap table. The file
is live while it grows: another process reads it in SWMR mode (`procedures.recorder`). The
apparatus state is the run's parameters and its start and end snapshots, as for every run.
"""

from __future__ import annotations

import contextlib

from hotspin.instruments.redpitaya import (
    ADC_CLOCK_Hz,
    DeepMemoryStream,
    StreamBlock,
    check_axi_decimation,
)
from hotspin.instruments.resilience import RETRYABLE
from hotspin.procedures.base import HotspinProcedure
from hotspin.procedures.recorder import ContinuousRecord
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
        polarimeter = self.station.polarimeter
        link = polarimeter.digitiser
        channels = [polarimeter.config.diff_channel - 1, polarimeter.config.sum_channel - 1]
        decimation = int(self.decimation)
        fs = ADC_CLOCK_Hz / decimation
        n = max(1, round(float(self.duration_s) * fs))
        stream = link.call(lambda board: board.stream(decimation=decimation, n_samples=n))
        scales = stream.volts_per_code
        record = self.run.create_record(
            RECORD_NAME,
            {"v_diff": scales[channels[0]], "v_sum": scales[channels[1]]},
            stream.sample_rate_Hz,
            decimation,
            stream.start_time_s,
            clock=self.station.clock.now,  # flushed every second of the lab's time
        )
        self.run.start_swmr()
        try:
            self._stream_into(record, stream, n)
        finally:
            record.flush()
            self.run.end_swmr()
        if record.missing:
            self.notes.append(
                f"{self.NAME}: {record.missing} of {n} samples lost in "
                f"{record.gap_count} gaps (the gap table says where)"
            )
            speed = getattr(self.station.clock, "speed", 1.0)
            if speed > 1.0:  # a simulated lab on a fast clock writes faster than any reader
                self.notes.append(
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

    def _stream_into(self, record: ContinuousRecord, stream: DeepMemoryStream, n: int) -> None:
        """Append the stream's blocks and gaps until ``n`` samples are accounted for; after a
        link fault, start a new stream on a new connection and carry on.

        A new stream counts from its own start. Its place in the record is the time between the
        two starts (to the clock's precision, a few samples), so what was written in between
        becomes a gap; a new stream that seems to begin before the record's end is placed at it.
        """
        link = self.station.polarimeter.digitiser
        config = self.station.polarimeter.config
        channels = [config.diff_channel - 1, config.sum_channel - 1]
        first_start_s, offset, failures = stream.start_time_s, 0, 0
        while True:
            try:
                for item in stream:
                    start = offset + item.first_index
                    if isinstance(item, StreamBlock):
                        record.append(start, item.codes[channels][:, : n - start])
                        failures = 0
                    else:
                        record.add_gap(start, min(item.length, n - start))
                    self.progress(record.next_index / n, f"{record.next_index} of {n} samples")
                    if record.next_index >= n:
                        return
                    self.check_stop()
                return
            except (*RETRYABLE, ValueError) as error:
                failures += 1
                if failures > link.retries:
                    raise
                self.notes.append(f"{self.NAME}: stream restarted after {error}")
                link.disconnect()
            finally:
                with contextlib.suppress(*RETRYABLE, ValueError):
                    stream.close()
            stream = link.call(lambda board: board.stream(decimation=int(self.decimation)))
            offset = round((stream.start_time_s - first_start_s) * stream.sample_rate_Hz)
            offset = max(offset, record.next_index)
            if offset > record.next_index:
                record.add_gap(record.next_index, min(offset, n) - record.next_index)
            if record.next_index >= n:
                stream.close()
                return
