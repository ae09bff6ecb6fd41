"""The lines a served simulated lab offers beside each instrument's own TCP port.

Real instruments have connections a client expects without being told: the ELL14 is a serial
device (served here also on a pseudo-terminal, `PtySerialServer`), and the DLC pro's monitoring
line sits at its command-line port + 1 (`MonitoringLineServer`; toptica-lasersdk opens it by
default). `CompanionLines` starts them for every such instrument of a `SimServer`.
"""

from __future__ import annotations

from collections.abc import Mapping

from hotspin.simulators.decop_monitoring import MonitoringLineServer
from hotspin.simulators.instrument_base import SimulatedInstrument
from hotspin.simulators.pty_serial import PtySerialServer
from hotspin.simulators.server import Served, SimServer
from hotspin.simulators.thorlabs_ell14 import SimulatedELL14
from hotspin.simulators.toptica_dlcpro import SimulatedDLCpro


class CompanionLines(Served):
    """Pseudo-terminals for the ELL14s and monitoring lines for the DLC pros of a served lab."""

    def __init__(self, instruments: Mapping[str, SimulatedInstrument], server: SimServer) -> None:
        self._instruments = dict(instruments)
        self._server = server
        self._ptys: dict[str, PtySerialServer] = {}
        self._monitoring: dict[str, MonitoringLineServer] = {}

    def start(self) -> CompanionLines:
        """Open every companion line (an occupied monitoring port raises PortInUseError)."""
        try:
            for name, instrument in self._instruments.items():
                if isinstance(instrument, SimulatedELL14):
                    self._ptys[name] = PtySerialServer(instrument).start()
                elif isinstance(instrument, SimulatedDLCpro):
                    port = self._server.port(name) + 1
                    line = MonitoringLineServer(instrument, port, self._server.host)
                    self._monitoring[name] = line.start()
        except OSError:
            self.stop()
            raise
        return self

    def device_path(self, name: str) -> str:
        """Return the pseudo-terminal path of an ELL14 (a serial device, e.g. /dev/pts/3)."""
        return self._ptys[name].device_path

    def monitoring_port(self, name: str) -> int:
        """Return the monitoring-line port of a DLC pro."""
        return self._monitoring[name].port

    def descriptions(self) -> list[tuple[str, str, str]]:
        """Return (instrument name, where to connect, what it is) for every companion line."""
        serial = "Thorlabs ELL14 serial line (pseudo-terminal)"
        lines = [(n, pty.device_path, serial) for n, pty in self._ptys.items()]
        lines += [
            (n, f"TCP {m.host}:{m.port}", "Toptica DLC pro monitoring line (command line + 1)")
            for n, m in self._monitoring.items()
        ]
        return lines

    def stop(self) -> None:
        """Close every companion line."""
        for pty in self._ptys.values():
            pty.stop()
        for line in self._monitoring.values():
            line.stop()
        self._ptys.clear()
        self._monitoring.clear()
