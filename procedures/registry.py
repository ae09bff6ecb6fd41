"""Every procedure hotspin can run, by the name used on the command line and in the GUI."""

from __future__ import annotations

from procedures.balance import Balance
from procedures.base import HotspinProcedure
from procedures.spin_noise import SpinNoise
from procedures.warmup import WarmUp

PROCEDURES: dict[str, type[HotspinProcedure]] = {
    cls.NAME: cls for cls in (WarmUp, Balance, SpinNoise)
}
