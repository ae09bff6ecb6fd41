"""`hotspin sim serve`: every simulated instrument of a station on its loopback port.

The station file's resources give the ports (a simulated station's resources must point at
127.0.0.1). Each served instrument answers its real command set, so the real drivers — or any
VISA program — connect to `TCPIP::127.0.0.1::<port>::SOCKET` as to the hardware.
"""

from __future__ import annotations

import ipaddress
import re
import signal
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from hotspin.analysis.checks import ParameterError
from hotspin.instruments.station import (
    install_faults,
    lab_config_for,
    simulated_instruments,
    station_resources,
)
from hotspin.instruments.station_config import StationConfig, station_file_text
from hotspin.simulators.clock import SimClock
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.server import SimServer

MODELS = {
    "heater": "Lake Shore 336",
    "laser": "Toptica DLC pro",
    "mount": "Thorlabs ELL14 (serial protocol over TCP)",
    "digitiser": "Red Pitaya STEMlab 125-14",
    "coil_x": "Keithley 6221 (x)",
    "coil_y": "Keithley 6221 (y)",
    "coil_z": "Keithley 6221 (z)",
}


def loopback_port(resource: str, role: str) -> int:
    """Return the port of a `TCPIP::<loopback>::<port>::SOCKET` resource, else raise."""
    parts = resource.split("::")
    if len(parts) != 4 or not parts[0].upper().startswith("TCPIP") or parts[3] != "SOCKET":
        raise ParameterError(
            f"{role} resource = {resource!r}: a served instrument needs "
            "TCPIP::127.0.0.1::PORT::SOCKET"
        )
    try:
        loopback = ipaddress.ip_address(parts[1]).is_loopback
    except ValueError:
        loopback = parts[1] == "localhost"
    if not loopback:
        raise ParameterError(
            f"{role} resource = {resource!r}: simulated instruments serve on loopback only"
        )
    port = int(parts[2])
    if not 0 <= port <= 65535:
        raise ParameterError(f"{role} resource = {resource!r}: port outside [0, 65535]")
    return port


def station_ports(config: StationConfig) -> dict[str, int]:
    """Return the port of every instrument of a station file."""
    return {name: loopback_port(r, name) for name, r in station_resources(config).items()}


def client_station_text(text: str) -> str:
    """Return a served station file as its clients use it: the same file, every instrument real.

    With ``simulated = false`` a `hotspin run` or `hotspin gui` connects to the served resources
    through pyvisa, as to hardware, so the lab (its warm cell, balanced plate, zeroed field)
    lives on between runs. Calibrations and limits stay the served file's own.
    """
    flipped, n = re.subn(r"(?m)^(\s*simulated\s*=\s*)true\b", r"\g<1>false", text, count=1)
    if n == 0:  # `simulated` left at its default (true)
        flipped, n = re.subn(r"(?m)^\[station\].*$", "\\g<0>\nsimulated = false", text, count=1)
    if n == 0:
        flipped = f"[station]\nsimulated = false\n\n{text}"
    if StationConfig.from_mapping(tomllib.loads(flipped)).simulated:
        raise ParameterError("could not write a client station file from this station file")
    return (
        "# Written by `hotspin sim serve --client-station`: the served simulated lab, reached\n"
        "# over TCP as real instruments. Use it with --station while the server runs.\n" + flipped
    )


def serve(
    station_path: str | Path | None,
    announce: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    client_station: str | Path | None = None,
) -> None:
    """Serve a simulated station's instruments until ``stop`` is set, Ctrl-C or SIGTERM.

    ``client_station``: also write the station file clients use to reach the served lab.
    """
    config = StationConfig.load(station_path)
    if not config.simulated:
        raise ParameterError(
            "sim serve needs a simulated station ([station] simulated = true); "
            f"{station_path} describes real instruments"
        )
    ports = station_ports(config)
    if client_station is not None and 0 in ports.values():
        raise ParameterError(
            "a client station file needs a fixed port for every instrument; the station file "
            f"leaves {', '.join(n for n, p in ports.items() if p == 0)} at port 0"
        )
    lab = SimulatedLab(lab_config_for(config), SimClock(speed=config.simulation.clock_speed))
    instruments = simulated_instruments(config, lab)
    install_faults(config, instruments)
    stop = stop or threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    with SimServer({name: (instruments[name], port) for name, port in ports.items()}) as server:
        announce(
            f"hotspin simulated lab '{config.station.name}' on 127.0.0.1, clock x"
            f"{config.simulation.clock_speed:g}; Ctrl-C stops it"
        )
        for name in ports:
            announce(f"  {name:<10} {server.resource(name):<34} {MODELS[name]}")
        if client_station is not None:
            Path(client_station).write_text(client_station_text(station_file_text(station_path)))
            announce(f"clients: hotspin run NAME --station {client_station} (one lab, kept)")
        stop.wait()
        announce("stopping: closing every connection")
