"""`CoilSystem`: three current sources and the coil matrix, seen as one field vector.

B = B_residual + K·I. Field zeroing finds the currents I₀ that cancel the residual field, so the
field at the cell is K·(I − I₀); asking for a field B sets I = I₀ + K⁻¹B. Currents are ramped at the
station's maximum rate (the coils are inductive) and never exceed its limit.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hotspin.instruments.errors import InterlockError
from hotspin.instruments.linked import Linked, read_all
from hotspin.instruments.resilience import ResilientLink
from hotspin.instruments.station_config import CoilsConfig

log = logging.getLogger(__name__)
AXES = ("x", "y", "z")
# Time between ramp steps; the ramp rate sets the size of each step.
RAMP_STEP_S = 0.05


class CoilSource:
    """One Keithley 6221 of the coil system, through its link, under the coil system's lock.

    Its settings are sent as they are: the limits are the coil system's to check.
    """

    def __init__(self, link: ResilientLink, lock: threading.RLock) -> None:
        self.link, self.lock = link, lock

    @property
    def name(self) -> str:
        """Get the name of the source's link (coil_x, coil_y, coil_z)."""
        return self.link.name

    idn = Linked("id", str, "Get the source's identification.")
    source_current_A = Linked("source_current", float, "Control the DC source current in A.",
                              writable=True)  # fmt: skip
    source_compliance_V = Linked("source_compliance", float, "Control the compliance voltage "
                                 "in V.", writable=True)  # fmt: skip
    source_range_A = Linked("source_range", float, "Control the fixed source range in A.",
                            writable=True)  # fmt: skip
    source_enabled = Linked("source_enabled", bool, "Control whether the output is on.",
                            writable=True)  # fmt: skip
    in_compliance = Linked("in_compliance", bool, "Get whether the output is in compliance.")


#: What a coil source's snapshot holds, in order.
SOURCE_SNAPSHOT = (
    "idn",
    "source_current_A",
    "source_compliance_V",
    "source_range_A",
    "source_enabled",
    "in_compliance",
)


class CoilSystem:
    """The field vector from three Keithley 6221 sources through the coil matrix."""

    def __init__(
        self,
        sources: Sequence[ResilientLink],
        config: CoilsConfig,
        sleep: Callable[[float], None],
    ) -> None:
        if len(sources) != 3:
            raise ValueError(f"a coil system needs 3 sources (x, y, z), got {len(sources)}")
        self.config = config
        self.matrix = np.asarray(config.coil_matrix_T_per_A, dtype=float)
        self.zero_field_currents_A = np.asarray(config.zero_field_currents_A, dtype=float)
        self.lock = threading.RLock()
        self.sources = [CoilSource(link, self.lock) for link in sources]
        self._sleep = sleep

    def configure(self) -> None:
        """Set compliance and a fixed range, start at 0 A and switch the outputs on."""
        with self.lock:
            for source in self.sources:
                source.source_compliance_V = self.config.compliance_V
                source.source_range_A = self.config.max_current_A
                source.source_current_A = 0.0
                source.source_enabled = True

    @property
    def currents_A(self) -> np.ndarray:
        """Get the three source currents in A (x, y, z)."""
        with self.lock:
            return np.array([source.source_current_A for source in self.sources])

    def check_currents(self, currents_A: Sequence[float]) -> np.ndarray:
        """Return the currents if each is within the station's limit, else raise InterlockError."""
        currents = np.asarray(currents_A, dtype=float)
        limit = self.config.max_current_A
        if currents.shape != (3,) or not np.all(np.isfinite(currents)):
            raise InterlockError("coils", f"currents_A = {currents_A!r} must be 3 finite values")
        for axis, current in zip(AXES, currents, strict=True):
            if abs(current) > limit:
                raise InterlockError(
                    "coils",
                    f"{axis} current = {current:g} A is outside the allowed range "
                    f"[{-limit:g}, {limit:g}] A (coils.max_current_A)",
                )
        return currents

    def set_currents(self, currents_A: Sequence[float]) -> None:
        """Ramp the three currents to ``currents_A`` at the station's maximum rate."""
        target = self.check_currents(currents_A)
        with self.lock:
            self._switch_on()
            present = self.currents_A
            largest = float(np.max(np.abs(target - present)))
            step_A = self.config.max_ramp_rate_A_per_s * RAMP_STEP_S
            steps = max(1, math.ceil(largest / step_A))
            for k in range(1, steps + 1):
                if k > 1:
                    self._sleep(RAMP_STEP_S)
                level = present + (target - present) * k / steps
                for source, current in zip(self.sources, level, strict=True):
                    source.source_current_A = float(current)

    def _switch_on(self) -> None:
        """Switch on any output that is off (after a safe state), starting it at 0 A."""
        for source in self.sources:
            if not source.source_enabled:
                source.source_current_A = 0.0
                source.source_enabled = True

    @property
    def field_T(self) -> np.ndarray:
        """Get the field at the cell in T, K·(I − I₀), as far as the zeroing knows it."""
        return self.matrix @ (self.currents_A - self.zero_field_currents_A)

    def currents_for_field(self, field_T: Sequence[float]) -> np.ndarray:
        """Return the currents that give ``field_T`` at the cell: I₀ + K⁻¹B."""
        field = np.asarray(field_T, dtype=float)
        if field.shape != (3,) or not np.all(np.isfinite(field)):
            raise InterlockError("coils", f"field_T = {field_T!r} must be 3 finite values")
        return self.zero_field_currents_A + np.linalg.solve(self.matrix, field)

    def max_field_T(self, direction: Sequence[float]) -> float:
        """Return the largest field magnitude along ``direction`` within the current limit."""
        unit = np.asarray(direction, dtype=float)
        unit = unit / np.linalg.norm(unit)
        slope = np.linalg.solve(self.matrix, unit)  # A per T along the direction
        limit = self.config.max_current_A
        reach = [
            (limit - math.copysign(1.0, a) * i0) / abs(a)
            for a, i0 in zip(slope, self.zero_field_currents_A, strict=True)
            if a != 0.0
        ]
        return max(0.0, min(reach))

    def set_field(self, field_T: Sequence[float]) -> None:
        """Ramp to the field ``field_T`` (T); refused before anything moves if over the limit."""
        currents = self.currents_for_field(field_T)
        try:
            self.check_currents(currents)
        except InterlockError as error:
            field = ", ".join(f"{b:g}" for b in field_T)
            detail = str(error).removeprefix("coils: ")
            raise InterlockError("coils", f"field_T = [{field}] T needs {detail}") from None
        self.set_currents(currents)

    def safe_state(self) -> None:
        """Ramp every current to zero, then switch the outputs off, each source on its own.

        The three ramp together while all answer; a source that fails is given up on and the
        others are still ramped down and switched off, so one hung supply never leaves the
        other two energised. Raises InterlockError naming the sources that failed.
        """
        failed: dict[str, str] = {}
        with self.lock:
            try:
                self.set_currents(np.zeros(3))
            except Exception as error:  # ramp the others alone, below
                log.error("coils: the joint ramp to zero failed (%s); ramping each alone", error)
            for axis, source in zip(AXES, self.sources, strict=True):
                try:
                    self._ramp_alone_to_zero(source)
                    source.source_enabled = False
                except Exception as error:
                    failed[axis] = f"{source.name} ({axis}): {type(error).__name__}: {error}"
        if failed:
            raise InterlockError("coils", "not safe: " + "; ".join(failed.values()))

    def _ramp_alone_to_zero(self, source: CoilSource) -> None:
        """Ramp one source from its present current to 0 A at the station's maximum rate."""
        present = source.source_current_A
        step_A = self.config.max_ramp_rate_A_per_s * RAMP_STEP_S
        steps = math.ceil(abs(present) / step_A)
        for k in range(1, steps + 1):
            self._sleep(RAMP_STEP_S)
            level = present * (1 - k / steps)
            source.source_current_A = level

    def snapshot(self) -> dict[str, Any]:
        """Return every readable setting of the three sources and the field they make."""
        with self.lock:
            sources = {
                axis: read_all(source, SOURCE_SNAPSHOT)
                for axis, source in zip(AXES, self.sources, strict=True)
            }
            return {
                "sources": sources,
                "coil_matrix_T_per_A": self.matrix.tolist(),
                "zero_field_currents_A": self.zero_field_currents_A.tolist(),
                "field_T": self.field_T.tolist(),
                "max_current_A": self.config.max_current_A,
                "max_ramp_rate_A_per_s": self.config.max_ramp_rate_A_per_s,
            }
