"""`hotspin sim serve`: the simulated lab on loopback, used by the real drivers as real hardware."""

import signal
import socket
import subprocess
import sys
import tomllib

import h5py
import pytest
from helpers import NAMES, free_ports, station_text
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.station import Station

from hotspin.cli import main
from hotspin.serve import client_station_text, loopback_port, serve, station_ports


@pytest.fixture
def served(tmp_path):
    ports = free_ports(len(NAMES))
    served_file = tmp_path / "served.toml"
    served_file.write_text(station_text(ports, simulated=True))
    client_file = tmp_path / "client.toml"
    client_file.write_text(station_text(ports, simulated=False))
    process = subprocess.Popen(
        [sys.executable, "-m", "hotspin.cli", "sim", "serve", "--station", str(served_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = [process.stdout.readline() for _ in range(1 + len(NAMES))]
    yield process, lines, ports, client_file
    if process.poll() is None:
        process.kill()
        process.wait()


def test_serve_prints_every_resource_and_the_real_drivers_use_them(served):
    process, lines, ports, client_file = served
    for name, port in zip(NAMES, ports, strict=True):
        assert any(
            line.split()[:2] == [name, f"TCPIP::127.0.0.1::{port}::SOCKET"] for line in lines
        ), lines
    with Station.from_file(client_file) as station:
        station.configure()
        station.laser.emission_enabled = True
        record = station.polarimeter.acquire(2048)
        assert record.v_sum.mean() > 0.1  # light on the detector
        snapshot = station.snapshot()
        assert snapshot["heater"]["idn"].startswith("LSCI,MODEL336")
        assert "simulation_truth" not in snapshot  # a real station does not see the truth
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1)


def test_several_clients_at_once(served):
    *_, client_file = served
    first = Station.from_file(client_file)
    second = Station.from_file(client_file)
    try:
        for _ in range(5):
            assert first.heater.temperature_K == pytest.approx(second.heater.temperature_K, abs=1)
    finally:
        first.close()
        second.close()


def test_serving_a_real_station_is_refused(tmp_path, capsys):
    # Refused before anything is served: the command line in this process, as in a shell.
    path = tmp_path / "real.toml"
    path.write_text(station_text(free_ports(len(NAMES)), simulated=False))
    assert main(["sim", "serve", "--station", str(path)]) == 2
    assert "needs a simulated station" in capsys.readouterr().err


def test_only_loopback_resources_can_be_served():
    assert loopback_port("TCPIP::127.0.0.1::7777::SOCKET", "heater") == 7777
    with pytest.raises(ParameterError, match="loopback only"):
        loopback_port("TCPIP::192.168.1.20::7777::SOCKET", "heater")
    with pytest.raises(ParameterError, match="needs TCPIP"):
        loopback_port("ASRL/dev/ttyUSB0::INSTR", "mount")


def test_a_busy_port_is_reported(tmp_path):
    ports = free_ports(len(NAMES))
    path = tmp_path / "served.toml"
    path.write_text(station_text(ports, simulated=True))
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", ports[0]))
    blocker.listen()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "hotspin.cli", "sim", "serve", "--station", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        blocker.close()
    assert result.returncode == 2
    assert "Address already in use" in result.stderr
    # It names the instrument and its port, and says how to move every port at once.
    assert "Lake Shore 336 (heater)" in result.stderr and f"port {ports[0]}" in result.stderr
    assert "--port-base N" in result.stderr


def free_port_base(count):
    """Return a base port with ``count`` consecutive free ports above it."""
    for _ in range(50):
        base = free_ports(1)[0]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return base
    raise RuntimeError("no run of free ports")


def test_port_base_moves_every_port_and_the_client_station_follows(tmp_path):
    base = free_port_base(2 * len(NAMES))
    served_file = tmp_path / "served.toml"
    served_file.write_text(station_text(free_ports(len(NAMES)), simulated=True))
    client_file = tmp_path / "lab.toml"
    command = ["sim", "serve", "--station", str(served_file), "--port-base", str(base),
               "--client-station", str(client_file)]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "hotspin.cli", *command], stdout=subprocess.PIPE, text=True
    )
    try:
        lines = [process.stdout.readline() for _ in range(2 + len(NAMES))]
        expected = {name: base + 2 * i for i, name in enumerate(NAMES)}
        for name, port in expected.items():
            assert any(
                line.split()[:2] == [name, f"TCPIP::127.0.0.1::{port}::SOCKET"] for line in lines
            ), lines
        client = Station.from_file(client_file)
        assert station_ports(client.config) == expected
        with client as station:
            assert station.snapshot()["heater"]["idn"].startswith("LSCI,MODEL336")
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_a_port_base_too_high_is_refused_before_anything_listens(tmp_path):
    path = tmp_path / "served.toml"
    path.write_text(station_text(free_ports(len(NAMES)), simulated=True))
    with pytest.raises(ParameterError, match="--port-base"):
        serve(path, announce=lambda line: None, port_base=65530)


def test_a_client_station_file_reaches_one_lab_that_keeps_its_state(tmp_path, capsys):
    ports = free_ports(len(NAMES))
    served_file = tmp_path / "served.toml"
    served_file.write_text(station_text(ports, simulated=True))
    client_file = tmp_path / "lab.toml"
    command = ["sim", "serve", "--station", str(served_file), "--client-station", str(client_file)]
    process = subprocess.Popen(
        [sys.executable, "-m", "hotspin.cli", *command], stdout=subprocess.PIPE, text=True
    )
    try:
        lines = [process.stdout.readline() for _ in range(2 + len(NAMES))]
        assert lines[-1].startswith(f"clients: hotspin run NAME --station {client_file}")
        assert Station.from_file(client_file).config.simulated is False
        balance = ["--set", "fine_points=3", "--set", "samples=1024"]
        out = tmp_path / "balance.h5"
        assert (
            main(["run", "balance", "--station", str(client_file), "--out", str(out), *balance])
            == 0
        )
        with h5py.File(out, "r") as f:
            balanced = float(f["summary"].attrs["balance_angle_deg"])
        # A second client, as a second `hotspin run` would be, finds the plate where it was left.
        with Station.from_file(client_file) as station:
            assert station.polarimeter.plate_angle_deg == pytest.approx(balanced, abs=0.01)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_a_client_station_needs_fixed_ports(tmp_path, capsys):
    served_file = tmp_path / "served.toml"
    served_file.write_text(station_text([0] * len(NAMES), simulated=True))
    command = ["sim", "serve", "--station", str(served_file),
               "--client-station", str(tmp_path / "lab.toml")]  # fmt: skip
    assert main(command) == 2  # refused before anything is served
    err = capsys.readouterr().err
    assert "needs a fixed port for every instrument" in err
    assert "heater, laser, mount, digitiser, coil_x, coil_y, coil_z at port 0" in err
    assert not (tmp_path / "lab.toml").exists()


@pytest.mark.parametrize(
    "text",
    ['[station]\nname = "x"\nsimulated = true\n', '[station]\nname = "x"\n', "[heater]\n"],
    ids=["flipped", "default", "no-station-table"],
)
def test_the_client_station_is_the_served_file_with_real_instruments(text):
    client = tomllib.loads(client_station_text(text))
    assert client["station"]["simulated"] is False


def test_third_party_clients_reach_the_served_lab_unchanged(served):
    """Lake Shore's own client and pymeasure's stock 6221 driver, host and port only."""
    lakeshore = pytest.importorskip("lakeshore")
    from pymeasure.instruments.keithley import Keithley6221 as StockKeithley6221

    _, _, ports, _ = served
    heater = lakeshore.Model336(ip_address="127.0.0.1", tcp_port=ports[NAMES.index("heater")])
    try:
        assert heater.model_number == "MODEL336"
        assert 250.0 < heater.get_kelvin_reading("A") < 600.0
    finally:
        heater.disconnect_tcp()
    coil = StockKeithley6221(
        f"TCPIP::127.0.0.1::{ports[NAMES.index('coil_z')]}::SOCKET", read_termination="\n"
    )
    try:
        assert coil.id.startswith("KEITHLEY INSTRUMENTS INC.,MODEL 6221,")
        assert coil.status == "0"
        assert coil.check_errors() == []
    finally:
        coil.adapter.close()
