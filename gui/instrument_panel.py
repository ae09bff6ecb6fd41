"""The instrument panel: every instrument's state, refreshed several times a second, and the
controls a physicist tunes the apparatus with (heater setpoint and range, laser emission and
current, half-wave plate, coil field).

Values come from the `InstrumentPoller` (instrument I/O on its threads); commands go through the
`CommandQueue` (one worker thread). Limits are the station's: the virtual instruments refuse an
out-of-range setpoint, current or field before anything is sent, and the refusal is shown here.
While a procedure runs the controls are disabled, so the operator and the procedure never fight
over a setting; the Abort button of the runner stays the way to stop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from hotspin.gui.commands import CommandQueue
from hotspin.gui.polling import InstrumentPoller, Reading
from hotspin.gui.stream import SignalProcessor
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

REFRESH_INTERVAL_MS = 200
HEATER_RANGES = ("off", "low", "medium", "high")
STATE_STYLE = {
    "ok": "color: #1a7f37;",
    "busy": "color: #9a6700;",
    "stale": "color: #bc4c00; font-weight: bold;",
    "failed": "color: #cf222e; font-weight: bold;",
}
OLD_VALUE_STYLE = "color: #8c959f; font-style: italic;"


def _number(text: str, what: str) -> float:
    """Return the number typed for ``what``; ValueError naming it if the text is not one."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} = {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} = {value} is not a finite number")
    return value


class InstrumentGroup(QGroupBox):
    """One instrument: a state line, value rows, and a row of controls."""

    def __init__(self, title: str, rows: dict[str, str]) -> None:
        super().__init__(title)
        self.state_label = QLabel("waiting for the first reading")
        self.state_label.setWordWrap(True)
        self.form = QFormLayout()
        self.form.addRow("state", self.state_label)
        self.values: dict[str, QLabel] = {}
        for key, caption in rows.items():
            label = QLabel("–")
            label.setMinimumWidth(150)
            self.values[key] = label
            self.form.addRow(caption, label)
        self.controls = QWidget()
        self.controls_layout = QGridLayout(self.controls)
        self.controls_layout.setContentsMargins(0, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(self.controls)

    def show_reading(self, reading: Reading, texts: dict[str, str], now_s: float) -> str:
        """Show the values and the instrument's state; return the state."""
        state = reading.state(now_s)
        age = reading.age_s(now_s)
        description = {
            "ok": "ok",
            "busy": "busy (in use by a procedure)",
            "stale": "STALE: no reading yet"
            if reading.time_s is None
            else f"STALE: last reading {age:.1f} s ago",
            "failed": f"FAILED: {reading.error}"
            + ("" if reading.time_s is None else f" (values from {age:.1f} s ago)"),
        }[state]
        self.state_label.setText(description)
        self.state_label.setStyleSheet(STATE_STYLE[state])
        old = state in ("stale", "failed")
        for key, label in self.values.items():
            label.setText(texts.get(key, "–"))
            label.setStyleSheet(OLD_VALUE_STYLE if old else "")
        return state


class InstrumentPanel(QWidget):
    """Heater, laser, polarimeter (plate, balance, digitiser) and coils, with their controls."""

    def __init__(
        self,
        station: Any,
        poller: InstrumentPoller,
        commands: CommandQueue,
        processor: SignalProcessor | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.station = station
        self.poller = poller
        self.commands = commands
        self.processor = processor
        self.groups = {
            "heater": InstrumentGroup(
                "Cell heater (Lake Shore 336)",
                {
                    "temperature": "cell temperature",
                    "setpoint": "setpoint",
                    "output": "heater output",
                },
            ),
            "laser": InstrumentGroup(
                "Probe laser (DLC pro)",
                {
                    "current": "diode current",
                    "emission": "emission",
                    "interlock": "interlock",
                    "detuning": "detuning",
                },
            ),
            "polarimeter": InstrumentGroup(
                "Polarimeter (PDB450A, ELL14, Red Pitaya)",
                {
                    "plate": "half-wave plate",
                    "balance": "balance",
                    "power": "power on detector",
                    "rate": "digitiser rate",
                    "range": "digitiser range",
                },
            ),
            "coils": InstrumentGroup(
                "Coils (3 × Keithley 6221)",
                {"currents": "currents x, y, z", "field": "field x, y, z", "magnitude": "|B|"},
            ),
        }
        self._build_controls()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        for group in self.groups.values():
            layout.addWidget(group)
        layout.addWidget(self.message)
        layout.addStretch(1)
        self.states: dict[str, str] = {}
        commands.finished.connect(self._command_finished)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(REFRESH_INTERVAL_MS)

    # --- controls --------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        heater, laser = self.station.heater, self.station.laser
        polarimeter, coils = self.station.polarimeter, self.station.coils
        limit_K = self.station.config.heater.max_temperature_K
        max_current_A = self.station.config.laser.max_current_A

        self.setpoint_edit = QLineEdit()
        self.setpoint_edit.setPlaceholderText(f"K (≤ {limit_K:g})")
        self.setpoint_button = QPushButton("Set setpoint")
        self.setpoint_button.clicked.connect(
            lambda: self._send(
                "heater setpoint",
                lambda: _number(self.setpoint_edit.text(), "setpoint_K"),
                lambda value: setattr(heater, "setpoint_K", value),
                "{:g} K",
            )
        )
        self.range_combo = QComboBox()
        self.range_combo.addItems(HEATER_RANGES)
        self.range_button = QPushButton("Set range")
        self.range_button.clicked.connect(
            lambda: self._send(
                "heater range",
                self.range_combo.currentText,
                lambda value: setattr(heater, "heater_range", value),
                "{}",
            )
        )
        self._add_controls(
            "heater",
            (self.setpoint_edit, self.setpoint_button),
            (self.range_combo, self.range_button),
        )

        self.emission_button = QPushButton("Emission on")
        self.emission_button.clicked.connect(self._toggle_emission)
        self.current_edit = QLineEdit()
        self.current_edit.setPlaceholderText(f"mA (≤ {1e3 * max_current_A:g})")
        self.current_button = QPushButton("Set current")
        self.current_button.clicked.connect(
            lambda: self._send(
                "laser current",
                lambda: 1e-3 * _number(self.current_edit.text(), "current_mA"),
                lambda value: setattr(laser, "current_A", value),
                "{:.4g} A",
            )
        )
        self._add_controls(
            "laser", (self.current_edit, self.current_button), (self.emission_button,)
        )

        self.plate_edit = QLineEdit()
        self.plate_edit.setPlaceholderText("deg")
        self.plate_button = QPushButton("Turn plate")
        self.plate_button.clicked.connect(
            lambda: self._send(
                "half-wave plate",
                lambda: _number(self.plate_edit.text(), "plate_angle_deg"),
                lambda value: setattr(polarimeter, "plate_angle_deg", value),
                "{:g} deg",
            )
        )
        self.balance_button = QPushButton("To balance")
        self.balance_button.setToolTip("turn the plate to where the polarimeter balanced last")
        self.balance_button.clicked.connect(
            lambda: self._send(
                "half-wave plate to balance",
                lambda: polarimeter.balanced_angle_deg,
                lambda value: setattr(polarimeter, "plate_angle_deg", value),
                "{:.4f} deg",
            )
        )
        self._add_controls(
            "polarimeter", (self.plate_edit, self.plate_button), (self.balance_button,)
        )

        self.field_edit = QLineEdit()
        self.field_edit.setPlaceholderText("nT: Bx, By, Bz")
        self.field_button = QPushButton("Set field")
        self.field_button.clicked.connect(
            lambda: self._send(
                "coil field",
                self._typed_field_nT,
                lambda field_nT: coils.set_field([1e-9 * b for b in field_nT]),
                "{} nT",
            )
        )
        self._add_controls("coils", (self.field_edit, self.field_button))
        self.control_widgets = [group.controls for group in self.groups.values()]

    def _add_controls(self, group: str, *rows: tuple[QWidget, ...]) -> None:
        layout = self.groups[group].controls_layout
        for row, widgets in enumerate(rows):
            for column, widget in enumerate(widgets):
                layout.addWidget(widget, row, column)

    def _typed_field_nT(self) -> list[float]:
        parts = [p for p in self.field_edit.text().replace(";", ",").split(",") if p.strip()]
        if len(parts) != 3:
            raise ValueError(f"field_nT = {self.field_edit.text()!r}: give Bx, By, Bz in nT")
        return [_number(p, "field_nT") for p in parts]

    def _send(
        self,
        what: str,
        value: Callable[[], Any],
        command: Callable[[Any], None],
        value_format: str,
    ) -> None:
        """Read the typed value (errors shown, nothing sent) and queue the command."""
        try:
            target = value()
        except ValueError as error:
            self._show_message(f"{what}: {error}; nothing sent", error=True)
            return
        description = f"{what} → {value_format.format(target)}"
        self._show_message(f"{description}: sending…")
        self.commands.submit(description, lambda: command(target))

    def _toggle_emission(self) -> None:
        values = self.poller.readings["laser"].values
        switch_on = not values.get("emission_enabled", False)
        laser = self.station.laser
        self._send(
            "laser emission",
            lambda: switch_on,
            lambda value: setattr(laser, "emission_enabled", value),
            "{}",
        )

    def _command_finished(self, description: str, error: str) -> None:
        if error:
            self._show_message(f"{description}: refused: {error}", error=True)
        else:
            self._show_message(f"{description}: done")

    def _show_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(STATE_STYLE["failed"] if error else "")

    def set_controls_enabled(self, enabled: bool) -> None:
        """Enable the controls, or disable them while a procedure drives the instruments."""
        for widget in self.control_widgets:
            widget.setEnabled(enabled)
            widget.setToolTip("" if enabled else "disabled while a procedure runs")

    # --- display ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Show the latest readings (called by the panel's timer; draws only)."""
        now = time.monotonic()
        readings = self.poller.readings
        self.states["heater"] = self.groups["heater"].show_reading(
            readings["heater"], _heater_texts(readings["heater"].values), now
        )
        laser = readings["laser"].values
        self.states["laser"] = self.groups["laser"].show_reading(
            readings["laser"], _laser_texts(laser), now
        )
        self.emission_button.setText(
            "Emission off" if laser.get("emission_enabled") else "Emission on"
        )
        frame = self.processor.latest if self.processor is not None else None
        self.states["polarimeter"] = self.groups["polarimeter"].show_reading(
            readings["polarimeter"], _polarimeter_texts(readings["polarimeter"].values, frame), now
        )
        self.states["coils"] = self.groups["coils"].show_reading(
            readings["coils"], _coil_texts(readings["coils"].values), now
        )


def _heater_texts(v: dict[str, Any]) -> dict[str, str]:
    if not v:
        return {}
    ramp = " (ramping)" if v["ramping"] else ""
    return {
        "temperature": f"{v['temperature_K']:.2f} K",
        "setpoint": f"{v['setpoint_K']:.2f} K{ramp}",
        "output": f"{v['heater_output_percent']:.1f} % of range {v['heater_range']}",
    }


def _laser_texts(v: dict[str, Any]) -> dict[str, str]:
    if not v:
        return {}
    emission = "on" if v["emission_enabled"] else "off"
    emission += ", emitting" if v["emitting"] else ", no light"
    return {
        "current": f"{1e3 * v['current_A']:.2f} mA",
        "emission": emission,
        "interlock": "OPEN" if v["interlock_open"] else "closed",
        "detuning": f"{1e-9 * v['detuning_Hz']:.3f} GHz",
    }


def _polarimeter_texts(v: dict[str, Any], frame: Any) -> dict[str, str]:
    texts: dict[str, str] = {}
    if v:
        texts |= {
            "plate": f"{v['plate_angle_deg']:.3f} deg (balanced at {v['balanced_angle_deg']:.3f})",
            "rate": f"{1e-6 * v['sample_rate_Hz']:.4g} MS/s",
        }
    if frame is not None:
        # Balance, power and ranges are those of the monitor's latest record.
        imbalance = f"{frame.imbalance:+.3e}" if math.isfinite(frame.imbalance) else "–"
        texts["balance"] = f"(V_diff/G_d)/(V_sum/G_s) = {imbalance}" + (
            "  CLIPPED" if frame.clipped else ""
        )
        power = frame.detected_power_W
        texts["power"] = f"{1e3 * power:.3f} mW" if math.isfinite(power) else "–"
        diff, total = frame.full_scale_V
        texts["range"] = f"±{diff:g} V (V_diff), ±{total:g} V (V_sum)"
    return texts


def _coil_texts(v: dict[str, Any]) -> dict[str, str]:
    if not v:
        return {}
    currents = ", ".join(f"{1e3 * i:+.4f}" for i in v["currents_A"])
    field = ", ".join(f"{1e9 * b:+.2f}" for b in v["field_T"])
    return {
        "currents": f"{currents} mA",
        "field": f"{field} nT",
        "magnitude": f"{1e9 * float(np.linalg.norm(v['field_T'])):.2f} nT",
    }
