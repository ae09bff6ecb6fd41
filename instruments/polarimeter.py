"""`Polarimeter`: the balanced detector, its digitiser channels and the half-wave-plate mount.

The PDB450A has no remote interface: its gains and responsivity come from the station file. The
Red Pitaya records its difference (RF) and sum (monitor) outputs; the ELL14 turns the half-wave
plate in front of the polarising beam splitter. Together they read the rotation angle θ.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from hotspin.analysis.spectra import angle_from_difference_and_sum
from hotspin.instruments.linked import Linked, read_all
from hotspin.instruments.redpitaya import BUFFER_SIZE
from hotspin.instruments.resilience import ResilientLink
from hotspin.instruments.station_config import DigitiserConfig, PolarimeterConfig


@dataclass(frozen=True)
class PolarimeterRecord:
    """One digitiser record of the detector's outputs."""

    sample_rate_Hz: float
    v_diff: np.ndarray  # V, RF (difference) output
    v_sum: np.ndarray  # V, monitor (sum) output
    full_scale_V: tuple[float, float]  # the digitiser's input range for (V_diff, V_sum)

    @property
    def clipped(self) -> bool:
        """Return True if either output reached the digitiser's full scale (the data lie)."""
        # The last code below full scale: 14-bit codes reach full scale × 8191/8192 at most.
        return bool(
            np.any(np.abs(self.v_diff) >= self.full_scale_V[0] * (1 - 2 / 8192))
            or np.any(np.abs(self.v_sum) >= self.full_scale_V[1] * (1 - 2 / 8192))
        )


class Polarimeter:
    """Rotation angle from V_diff and V_sum, and the plate that balances the polarimeter."""

    def __init__(
        self,
        digitiser: ResilientLink,
        mount: ResilientLink,
        config: PolarimeterConfig,
        digitiser_config: DigitiserConfig,
    ) -> None:
        self.digitiser = digitiser
        self.mount = mount
        self.config = config
        self.digitiser_config = digitiser_config
        self.lock = threading.RLock()
        #: Where the plate balanced the polarimeter last (the station file's guess until then).
        self.balanced_angle_deg = config.plate_zero_deg

    def _diff_input(self, board: Any) -> Any:
        return board.analog_in[self.config.diff_channel]

    def _sum_input(self, board: Any) -> Any:
        return board.analog_in[self.config.sum_channel]

    idn = Linked("id", str, "Get the digitiser's identification.", link="digitiser")
    decimation = Linked(
        "decimation", int, "Control the digitiser's decimation (its sample rate is 125 MHz / "
        "decimation).", link="digitiser", writable=True,
        send=lambda decimation: decimation,  # as given: the driver refuses a non-decimation
    )  # fmt: skip
    sample_rate_Hz = Linked("sample_rate_Hz", float, "Get the digitiser's sample rate in Hz.",
                            link="digitiser")  # fmt: skip
    diff_gain = Linked(
        "gain", str, "Control the range of the V_diff input ('LV' ±1 V or 'HV' ±20 V, as its "
        "jumper).", link="digitiser", part="_diff_input", writable=True,
    )  # fmt: skip
    sum_gain = Linked(
        "gain", str, "Control the range of the V_sum input ('LV' ±1 V or 'HV' ±20 V, as its "
        "jumper).", link="digitiser", part="_sum_input", writable=True,
    )  # fmt: skip
    diff_full_scale_V = Linked("full_scale_V", float, "Get the V_diff input's full scale in V.",
                               link="digitiser", part="_diff_input")  # fmt: skip
    sum_full_scale_V = Linked("full_scale_V", float, "Get the V_sum input's full scale in V.",
                              link="digitiser", part="_sum_input")  # fmt: skip
    plate_angle_deg = Linked(
        "position_deg", float, "Control the half-wave plate's angle in degrees (setting it turns "
        "the plate to the angle modulo 360 and waits for the move to end).", link="mount",
        setter="move_to", send=lambda angle_deg: float(angle_deg) % 360.0,
    )  # fmt: skip
    mount_info = Linked("info", str, "Get the mount's identification (its `in` reply).",
                        link="mount")  # fmt: skip

    def configure(self) -> None:
        """Set the digitiser's decimation and input ranges for the detector's two outputs."""
        d = self.digitiser_config
        with self.lock:
            self.decimation = d.decimation
            self.diff_gain = d.diff_gain
            self.sum_gain = d.sum_gain

    def set_decimation(self, decimation: int) -> None:
        """Set the digitiser's decimation (its sample rate is 125 MHz / decimation)."""
        self.decimation = decimation

    def acquire(self, n: int = BUFFER_SIZE) -> PolarimeterRecord:
        """Record ``n`` samples of V_diff and V_sum now."""
        c = self.config
        with self.lock:
            record = self.digitiser.call(lambda r: r.acquire((c.diff_channel, c.sum_channel), n))
            ranges = (self.diff_full_scale_V, self.sum_full_scale_V)
        return PolarimeterRecord(
            record.sample_rate_Hz,
            record.voltages_V[c.diff_channel].astype(float),
            record.voltages_V[c.sum_channel].astype(float),
            ranges,
        )

    def rotation_angle_rad(self, record: PolarimeterRecord) -> np.ndarray:
        """Return θ(t) in rad from a record: ½ arcsin[(V_diff/G_diff)/(V_sum/G_sum)]."""
        c = self.config
        return angle_from_difference_and_sum(
            record.v_diff, record.v_sum, c.gain_diff_V_per_A, c.gain_sum_V_per_A
        )

    def imbalance(self, record: PolarimeterRecord) -> float:
        """Return the mean (V_diff/G_diff)/(V_sum/G_sum) = sin(2θ + 4(ϑ − ϑ₀)) of a record."""
        c = self.config
        ratio = c.gain_sum_V_per_A / c.gain_diff_V_per_A
        return float(np.mean(record.v_diff) * ratio / np.mean(record.v_sum))

    def detected_power_W(self, record: PolarimeterRecord) -> float:
        """Return the light power on the detector from the sum channel, in W."""
        c = self.config
        return float(np.mean(record.v_sum) / (c.gain_sum_V_per_A * c.responsivity_A_per_W))

    def safe_state(self) -> None:
        """Stop the digitiser's acquisition."""
        with self.lock:
            self.digitiser.call(lambda r: r.acquisition_stop())

    def snapshot(self) -> dict[str, Any]:
        """Return the detector calibration and every readable digitiser and mount setting."""
        c = self.config
        with self.lock:
            return {
                "detector": c.detector,
                "gain_diff_V_per_A": c.gain_diff_V_per_A,
                "gain_sum_V_per_A": c.gain_sum_V_per_A,
                "responsivity_A_per_W": c.responsivity_A_per_W,
                "nep_W_per_rtHz": c.nep_W_per_rtHz,
                "plate_angle_deg": self.plate_angle_deg,
                "mount": {"info": self.mount_info, "address": c.mount_address},
                "digitiser": {
                    **read_all(self, ("idn", "decimation", "sample_rate_Hz")),
                    "diff_channel": c.diff_channel,
                    "sum_channel": c.sum_channel,
                    "diff_gain": self.diff_gain,
                    "sum_gain": self.sum_gain,
                },
            }
