"""Every procedure hotspin can run, by the name used on the command line and in the GUI."""

from __future__ import annotations

from procedures.balance import Balance
from procedures.base import HotspinProcedure
from procedures.entanglement import Entanglement
from procedures.field_zeroing import FieldZeroing
from procedures.sensitivity import Sensitivity
from procedures.spin_noise import SpinNoise
from procedures.sweeps import DetuningSweep, FieldSweep, ProbePowerSweep, TemperatureSweep
from procedures.warmup import WarmUp

PROCEDURES: dict[str, type[HotspinProcedure]] = {
    cls.NAME: cls
    for cls in (
        WarmUp,
        Balance,
        FieldZeroing,
        SpinNoise,
        FieldSweep,
        TemperatureSweep,
        ProbePowerSweep,
        DetuningSweep,
        Entanglement,
        Sensitivity,
    )
}
