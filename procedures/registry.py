"""Every procedure hotspin can run, by the name used on the command line and in the GUI."""

from __future__ import annotations

from hotspin.procedures.balance import Balance
from hotspin.procedures.base import HotspinProcedure
from hotspin.procedures.entanglement import Entanglement
from hotspin.procedures.field_zeroing import FieldZeroing
from hotspin.procedures.record import Record
from hotspin.procedures.sensitivity import Sensitivity
from hotspin.procedures.spin_noise import SpinNoise
from hotspin.procedures.sweeps import DetuningSweep, FieldSweep, ProbePowerSweep, TemperatureSweep
from hotspin.procedures.warmup import WarmUp

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
        Record,
    )
}
