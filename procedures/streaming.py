"""The polarimeter's deep-memory stream as the procedures read it: one loop for every consumer.

`PolarimeterStream` starts `RedPitaya.stream` and yields its blocks (rows V_diff, V_sum, as the
station wires them) and gaps with indices counted from the first sample of the first stream.
After a link fault it starts a new stream on a new connection and carries on (up to the link's
retries in a row); a new stream counts from its own start, so it is placed by the time between
the two starts (to the clock's precision, a few samples) and what was written in between
becomes a gap — a new stream that seems to begin before the last index is placed at it. The
`record` procedure writes these items into the run file; the spectrum procedures average them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from hotspin.instruments.polarimeter import PolarimeterRecord
from hotspin.instruments.redpitaya import CODES_PER_FULL_SCALE, StreamBlock, StreamGap
from hotspin.instruments.resilience import RETRYABLE


class PolarimeterStream:
    """A continuous, gap-accounted stream of V_diff and V_sum from the digitiser's deep memory.

    ``n_samples`` None streams until `close`. Use it as a context manager, or call `close`.
    """

    def __init__(self, procedure: Any, decimation: int, n_samples: int | None = None) -> None:
        self.procedure = procedure
        polarimeter = procedure.station.polarimeter
        self.link = polarimeter.digitiser
        config = polarimeter.config
        self.channels = [config.diff_channel - 1, config.sum_channel - 1]
        self.decimation = int(decimation)
        self.n_samples = n_samples
        self.next_index = 0  # the index after the last item yielded
        self._stream = self.link.call(
            lambda board: board.stream(decimation=self.decimation, n_samples=n_samples)
        )
        scales = self._stream.volts_per_code
        #: Volts per ADC code of V_diff and V_sum.
        self.volts_per_code = (scales[self.channels[0]], scales[self.channels[1]])
        self.sample_rate_Hz = self._stream.sample_rate_Hz
        self.ring_samples = self._stream.ring_samples  # per input, in the board's memory
        self.start_time_s = self._stream.start_time_s
        self._items = self._iterate()

    def __enter__(self) -> PolarimeterStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[StreamBlock | StreamGap]:
        return self._items

    def close(self) -> None:
        """Stop the board's writer (if it still runs)."""
        self._items.close()
        with contextlib.suppress(*RETRYABLE, ValueError):
            self._stream.close()

    def record(self, block: StreamBlock) -> PolarimeterRecord:
        """Return a block as a polarimeter record in volts (for θ, the power and clipping)."""
        volts = block.codes * np.array(self.volts_per_code)[:, None]
        full_scale = tuple(CODES_PER_FULL_SCALE * scale for scale in self.volts_per_code)
        return PolarimeterRecord(self.sample_rate_Hz, volts[0], volts[1], full_scale)

    def _iterate(self) -> Iterator[StreamBlock | StreamGap]:
        """Yield blocks and gaps until ``n_samples`` indices are accounted for (or forever)."""
        end = math.inf if self.n_samples is None else self.n_samples
        stream, offset, failures = self._stream, 0, 0
        first_start_s = stream.start_time_s
        name = self.procedure.NAME
        while True:
            try:
                for item in stream:
                    start = offset + item.first_index
                    if isinstance(item, StreamBlock):
                        keep = item.codes.shape[1] if end == math.inf else int(end - start)
                        codes = item.codes[self.channels][:, :keep]
                        self.next_index = start + codes.shape[1]
                        failures = 0
                        yield StreamBlock(start, codes)
                    else:
                        length = int(min(item.length, end - start))
                        self.next_index = start + length
                        yield StreamGap(start, length)
                    if self.next_index >= end:
                        return
                return
            except (*RETRYABLE, ValueError) as error:
                failures += 1
                if failures > self.link.retries:
                    raise
                self.procedure.notes.append(f"{name}: stream restarted after {error}")
                self.link.disconnect()
            finally:
                with contextlib.suppress(*RETRYABLE, ValueError):
                    stream.close()
            stream = self.link.call(lambda board: board.stream(decimation=self.decimation))
            self._stream = stream
            offset = round((stream.start_time_s - first_start_s) * stream.sample_rate_Hz)
            offset = max(offset, self.next_index)
            if offset > self.next_index:
                length = int(min(offset, end) - self.next_index)
                gap = StreamGap(self.next_index, length)
                self.next_index += length
                yield gap
            if self.next_index >= end:
                return
