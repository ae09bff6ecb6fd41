"""`hotspin sim serve`: every simulated instrument of a station on its loopback port.

The station file's resources give the ports (a simulated station's resources must point at
127.0.0.1), or ``--port-base N`` moves them all at once: the instruments, in the station's order
(heater, laser, mount, digitiser, coil_x, coil_y, coil_z), listen on N, N + 2, N + 4, ..., each
keeping the port after its own free for a second line of the same instrument (the DLC pro's
monitoring line is its command line + 1). Each served instrument answers its real command set,
so the real drivers — or any VISA program — connect to `TCPIP::127.0.0.1::<port>::SOCKET` as to
the hardware.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from hotspin.analysis.checks import ParameterError, check_range
from hotspin.instruments.station import (
    install_faults,
    lab_config_for,
    simulated_instruments,
    station_resources,
)
from hotspin.instruments.station_config import ROLE_RESOURCES, StationConfig, station_file_text
from hotspin.simulators.clock import SimClock
from hotspin.simulators.companion_lines import CompanionLines
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.server import PortInUseError, SimServer

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


#: Ports per instrument under --port-base: its own and one for a second line.
PORT_STRIDE = 2
# Which station-file table holds which instruments' resources, in the order they appear there.
_RESOURCE_TABLES = {
    "heater": ("heater",),
    "laser": ("laser",),
    "polarimeter": ("mount",),
    "digitiser": ("digitiser",),
    "coils": ("coil_x", "coil_y", "coil_z"),
}
_TABLE_OR_RESOURCE = re.compile(
    r'(?m)^[ \t]*\[(?P<table>[A-Za-z0-9_.]+)\][ \t]*(?:#.*)?$|"(?P<resource>TCPIP::[^"]*)"'
)


def moved_ports(names: list[str], port_base: int) -> dict[str, int]:
    """Return the port of every instrument under ``--port-base``: base, base + 2, ..."""
    highest = 65535 - PORT_STRIDE * len(names) + 1
    check_range("--port-base", port_base, 1024, highest, "")
    return {name: port_base + PORT_STRIDE * i for i, name in enumerate(names)}


def with_ports(text: str, ports: dict[str, int]) -> str:
    """Return station-file text whose instrument resources point at ``ports``, the rest kept."""
    table, taken = "", {t: 0 for t in _RESOURCE_TABLES}

    def replace(match: re.Match[str]) -> str:
        nonlocal table
        if match.group("table") is not None:
            table = match.group("table")
            return match.group(0)
        names = _RESOURCE_TABLES.get(table, ())
        if taken.get(table, 0) >= len(names):
            return match.group(0)
        name = names[taken[table]]
        taken[table] += 1
        return f'"TCPIP::127.0.0.1::{ports[name]}::SOCKET"'

    moved = _TABLE_OR_RESOURCE.sub(replace, text)
    if station_ports(StationConfig.from_mapping(tomllib.loads(moved))) != ports:
        raise ParameterError("could not move the station file's resources to the new ports")
    return moved


def station_ports(config: StationConfig) -> dict[str, int]:
    """Return the port of every instrument of a station file."""
    return {name: loopback_port(r, name) for name, r in station_resources(config).items()}


def _with_every_resource(text: str, served: StationConfig) -> str:
    """Return station-file text naming every role's resource (a real station must), each one
    the file left to its default written out as the served station has it."""
    mapping = tomllib.loads(text)
    for table, keys in ROLE_RESOURCES.items():
        for key in keys:
            if key in mapping.get(table, {}):
                continue
            value = json.dumps(getattr(getattr(served, table), key))  # TOML strings and arrays
            entry = f"{key} = {value}"
            text, n = re.subn(rf"(?m)^\[{table}\][^\n]*$", f"\\g<0>\n{entry}", text, count=1)
            if n == 0:
                text += f"\n[{table}]\n{entry}\n"
    return text


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
    flipped = _with_every_resource(flipped, StationConfig.from_mapping(tomllib.loads(text)))
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
    port_base: int | None = None,
) -> None:
    """Serve a simulated station's instruments until ``stop`` is set, Ctrl-C or SIGTERM.

    ``client_station``: also write the station file clients use to reach the served lab.
    ``port_base``: serve on port_base, port_base + 2, ... instead of the station file's ports.
    """
    config = StationConfig.load(station_path)
    if not config.simulated:
        raise ParameterError(
            "sim serve needs a simulated station ([station] simulated = true); "
            f"{station_path} describes real instruments"
        )
    ports = station_ports(config)
    if port_base is not None:
        ports = moved_ports(list(ports), port_base)
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
    planned = {name: (instruments[name], port) for name, port in ports.items()}
    try:
        server = SimServer(planned).start()
    except PortInUseError as error:
        raise ParameterError(
            f"{MODELS[error.name]} ({error.name}): {error.strerror}. Stop the program that "
            f"holds port {error.port}, or move every port at once with --port-base N "
            "(ports N, N + 2, ... N + 12)"
        ) from None
    try:
        companions = CompanionLines(instruments, server).start()  # the mount's pty, line 2
    except PortInUseError as error:
        server.stop()
        raise ParameterError(
            f"{error.strerror}. The DLC pro's monitoring line is its command-line port + 1: "
            f"stop the program that holds port {error.port}, or move every port at once with "
            "--port-base N"
        ) from None
    try:
        announce(
            f"hotspin simulated lab '{config.station.name}' on 127.0.0.1, clock x"
            f"{config.simulation.clock_speed:g}; Ctrl-C stops it"
        )
        for name in ports:
            announce(f"  {name:<10} {server.resource(name):<34} {MODELS[name]}")
        if client_station is not None:
            text = station_file_text(station_path)
            if port_base is not None:
                text = with_ports(text, ports)
            Path(client_station).write_text(client_station_text(text))
            announce(f"clients: hotspin run NAME --station {client_station} (one lab, kept)")
        for name, where, what in companions.descriptions():
            announce(f"  {name:<10} {where:<34} {what}")
        stop.wait()
        announce("stopping: closing every connection")
    finally:
        companions.stop()
        server.stop()
