"""The shared transports of the simulated instruments: in-process adapter and loopback server."""

import socket
import threading

import pytest
from hotspin.simulators.clock import SimClock
from hotspin.simulators.inprocess import InProcessAdapter
from hotspin.simulators.instrument_base import SimulatedInstrument
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.server import SimServer
from pymeasure.instruments import Instrument
from pyvisa.errors import VisaIOError


class EchoInstrument(SimulatedInstrument):
    """Answers `*IDN?`, echoes `ECHO x`, stays silent on `SET x`, and sends a greeting."""

    input_terminator = b"\r\n"
    output_terminator = b"\r\n"

    def __init__(self, lab):
        super().__init__(lab, "echo")
        self.value = b""

    def greeting(self):
        return b"hello\r\n"

    def handle(self, command):
        if command == b"*IDN?":
            return b"SIM,ECHO,0,1.0\r\n"
        if command.startswith(b"ECHO "):
            return command[5:] + b"\r\n"
        if command.startswith(b"SET "):
            self.value = command[4:]
            return b""
        return b"ERR\r\n"


class Echo(Instrument):
    def __init__(self, adapter, **kwargs):
        super().__init__(
            adapter,
            "echo",
            includeSCPI=False,
            read_termination="\r\n",
            write_termination="\r\n",
            timeout=2000,
            **kwargs,
        )


@pytest.fixture
def lab():
    return SimulatedLab(clock=SimClock(manual=True))


def test_in_process_adapter_frames_like_a_socket(lab):
    sim = EchoInstrument(lab)
    echo = Echo(InProcessAdapter(sim))
    assert echo.read() == "hello"
    assert echo.ask("*IDN?") == "SIM,ECHO,0,1.0"
    echo.write("SET 42")
    assert sim.value == b"42"
    # pyvisa stops at the last character of the termination, even inside a message: so does this.
    with pytest.warns(UserWarning, match="termination"):
        assert echo.ask("ECHO a\nb") == "a\n"
    assert echo.read() == "b"
    with pytest.raises(VisaIOError):
        echo.read()  # nothing was sent back: a timeout, as on a socket


def test_server_serves_several_clients_over_pyvisa_and_shuts_down(lab):
    sim = EchoInstrument(lab)
    with SimServer({"echo": (sim, 0)}) as server:
        resource = server.resource("echo")
        assert resource.startswith("TCPIP::127.0.0.1::")
        clients = [Echo(resource) for _ in range(3)]
        for client in clients:
            assert client.read() == "hello"
        results = []

        def worker(client, tag):
            results.extend(client.ask(f"ECHO {tag}-{i}") == f"{tag}-{i}" for i in range(50))

        threads = [threading.Thread(target=worker, args=(c, n)) for n, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 150 and all(results)
        port = server.port("echo")
        for client in clients:
            client.adapter.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_server_refuses_a_non_loopback_address(lab):
    with pytest.raises(ValueError, match="loopback"):
        SimServer({"echo": (EchoInstrument(lab), 0)}, host="0.0.0.0")


def test_server_listens_on_loopback_only(lab):
    with SimServer({"echo": (EchoInstrument(lab), 0)}) as server:
        listener = server._servers["echo"].socket
        assert listener.getsockname()[0] == "127.0.0.1"
