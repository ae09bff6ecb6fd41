"""Station files for tests that serve the simulated lab on free loopback ports."""

import socket
import textwrap

NAMES = ("heater", "laser", "mount", "digitiser", "coil_x", "coil_y", "coil_z")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def station_text(ports, simulated):
    r = {name: f"TCPIP::127.0.0.1::{port}::SOCKET" for name, port in zip(NAMES, ports, strict=True)}
    return textwrap.dedent(
        f"""
        [station]
        simulated = {str(simulated).lower()}
        [simulation]
        clock_speed = 50.0
        [heater]
        resource = "{r["heater"]}"
        [laser]
        resource = "{r["laser"]}"
        [polarimeter]
        mount_resource = "{r["mount"]}"
        [digitiser]
        resource = "{r["digitiser"]}"
        [coils]
        resources = ["{r["coil_x"]}", "{r["coil_y"]}", "{r["coil_z"]}"]
        """
    )
