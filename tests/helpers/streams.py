"""The simulated board's deep-memory stream read whole, as the tests of its spectrum need it."""

from dataclasses import dataclass

import numpy as np
from hotspin.analysis.spectra import angle_from_difference_and_sum
from hotspin.instruments.redpitaya import RedPitaya, StreamBlock


@dataclass
class StreamedAngle:
    volts: np.ndarray  # (2, n): V_diff and V_sum
    theta_rad: np.ndarray
    sample_rate_Hz: float
    volts_per_code: tuple[float, ...]


def gap_free_angle(pitaya: RedPitaya, decimation: int, n_samples: int, detector) -> StreamedAngle:
    """Stream ``n_samples`` of both inputs, asserting that no gap interrupts them, and return
    the volts and the rotation angle θ = V_diff/(2 V_sum) with the detector's gains divided out."""
    stream = pitaya.stream(decimation=decimation, n_samples=n_samples)
    items = list(stream)
    assert all(isinstance(item, StreamBlock) for item in items), "the stream had a gap"
    codes = np.concatenate([item.codes for item in items], axis=1)
    volts = codes * np.array(stream.volts_per_code)[:, None]
    theta = angle_from_difference_and_sum(
        volts[0], volts[1], detector.gain_diff_V_per_A, detector.gain_sum_V_per_A
    )
    return StreamedAngle(volts, theta, stream.sample_rate_Hz, tuple(stream.volts_per_code))
