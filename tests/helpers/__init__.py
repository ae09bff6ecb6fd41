"""Station files for tests that serve the simulated lab on free loopback ports."""

import socket
import textwrap

NAMES = ("heater", "laser", "mount", "digitiser", "coil_x", "coil_y", "coil_z")


def free_ports(n):
    """Return ``n`` free loopback ports, each with its next port free too (a served DLC pro
    also listens on port + 1, its monitoring line), held until all are chosen."""
    held, ports = [], []
    while len(ports) < n:
        first = socket.socket()
        first.bind(("127.0.0.1", 0))
        port = first.getsockname()[1]
        following = socket.socket()
        try:
            following.bind(("127.0.0.1", port + 1))
        except OSError:  # taken: try another
            first.close()
            following.close()
            continue
        held += [first, following]
        ports.append(port)
    for s in held:
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


# Every procedure with parameters small enough for a test, on a warm and balanced lab.
SMALL = {
    "warmup": {"target_temperature_K": 450.0, "dwell_s": 1.0, "sample_interval_s": 0.5},
    "balance": {"fine_points": 3, "samples": 1024},
    "field_zeroing": {"averages": 2, "scan_points": 5, "iterations": 1},
    "spin_noise": {"averages": 4},
    "field_sweep": {"points": 3, "averages": 2, "start_nT": 100.0, "stop_nT": 500.0},
    "temperature_sweep": {
        "start_K": 449.0,
        "stop_K": 450.0,
        "points": 2,
        "averages": 2,
        "dwell_s": 1.0,
        "sample_interval_s": 0.5,
    },
    "probe_power_sweep": {"start_A": 0.11, "stop_A": 0.12, "points": 2, "averages": 2},
    "detuning_sweep": {"start_GHz": 62.0, "stop_GHz": 64.0, "points": 2, "averages": 2},
    # 16 µs samples, 4 records of stream (1 s): the filter settles (it needs up to 35 000).
    "entanglement": {"averages": 4, "filter_records": 4, "decimation": 2048},
    "sensitivity": {"periods": 2, "averages": 2},
    "record": {"duration_s": 0.05, "decimation": 1024},
}


def station_apparatus(**changes):
    """The embedded station's apparatus at Kong's conditions: 450 K, 100 nT along [1,1,1]."""
    import math

    import numpy as np
    from hotspin.instruments.station import lab_config_for
    from hotspin.instruments.station_config import StationConfig
    from hotspin.simulators.lab import SimulatedLab

    lab = SimulatedLab(lab_config_for(StationConfig.load(None)))
    lab.laser.emission_enabled = True
    field = tuple(100e-9 / math.sqrt(3) * np.ones(3))
    return lab.apparatus().with_changes(temperature_K=450.0, field_T=field, **changes)
