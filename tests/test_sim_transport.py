"""The shared transports of the simulated instruments: in-process adapter and loopback server."""

import socket
import threading
import time

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


# --- framing, input limits and load -------------------------------------------------------------


def keithley(lab):
    from hotspin.simulators.keithley6221 import SimulatedKeithley6221

    return SimulatedKeithley6221(lab, "coil_x", axis=0)


def ask(connection, command, timeout_s=5.0):
    """Send one LF-terminated command and return the reply line (bounded wait)."""
    connection.settimeout(timeout_s)
    connection.sendall(command + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = connection.recv(4096)
        assert chunk, "connection closed"
        reply += chunk
    return reply


def test_a_command_longer_than_the_input_buffer_is_an_overrun_and_the_rest_is_dropped(lab):
    sim = keithley(lab)
    session = sim.open_session()
    limit = sim.input_buffer_bytes
    chunk = b"X" * 65536
    for _ in range(3 * limit // len(chunk) + 1):  # one line, three buffers long, no terminator
        assert session.feed(chunk) == b""
    assert len(session._pending) <= len(chunk)  # bounded: nothing past the overrun is kept
    # The line's end: its rest is discarded, the next command is executed as usual.
    assert session.feed(b"XXXX\n*IDN?\n").startswith(b"KEITHLEY INSTRUMENTS INC.")
    assert session.feed(b"SYST:ERR?\n") == b'-363,"Input buffer overrun"\n'
    assert session.feed(b"SYST:ERR?\n") == b'0,"No error"\n'  # one overrun, one entry
    assert session.feed(b"*ESR?\n") == b"8\n"  # device-dependent error (Table B-1: -363, B3)


def test_a_terminator_split_across_chunks_still_ends_the_command(lab):
    from hotspin.simulators.lakeshore336 import SimulatedLakeShore336

    session = SimulatedLakeShore336(lab).open_session()
    assert session.feed(b"*IDN?\r") == b""
    assert session.feed(b"\n").startswith(b"LSCI,MODEL336,")
    assert session.feed(b"*OPC?\n*OPC?\r\n") == b"1\r\n1\r\n"  # LF alone and CR LF


def test_32_mib_unterminated_line_is_answered_while_another_client_is_served(lab):
    """A flood on one connection neither grows memory nor holds up another client.

    Each received chunk is searched for the terminator once and, past the input buffer, dropped,
    so the flood costs O(bytes) and holds the instrument lock for no command at all. The other
    client's round trips are measured (the worst is printed; 50 ms is the aim on an idle machine)
    but asserted only through a bounded 5 s timeout: on a loaded 2-core machine a wall-time
    bound near 50 ms would be flaky.
    """
    sim = keithley(lab)
    with SimServer({"coil_x": (sim, 0)}) as server:
        address = ("127.0.0.1", server.port("coil_x"))
        flooder = socket.create_connection(address, timeout=30)
        other = socket.create_connection(address, timeout=5)
        flooded = threading.Event()
        failure = []

        def flood():
            try:
                block = b"A" * (1 << 20)
                for _ in range(32):
                    flooder.sendall(block)
                flooder.sendall(b"\nSYST:ERR?\n")
            except OSError as error:
                failure.append(error)
            finally:
                flooded.set()

        thread = threading.Thread(target=flood)
        thread.start()
        worst_s = 0.0
        rounds = 0
        while not flooded.is_set() or rounds < 5:
            start = time.monotonic()
            assert ask(other, b"*IDN?").startswith(b"KEITHLEY INSTRUMENTS INC.")
            worst_s = max(worst_s, time.monotonic() - start)
            rounds += 1
        thread.join(timeout=30)
        assert not failure
        flooder.settimeout(30)
        reply = b""
        while not reply.endswith(b"\n"):
            reply += flooder.recv(4096)
        assert reply == b'-363,"Input buffer overrun"\n'
        print(f"other client: {rounds} round trips during the flood, worst {worst_s * 1e3:.1f} ms")
        flooder.close()
        other.close()


def test_twenty_clients_connecting_at_once_are_all_served(lab):
    """The listen backlog holds them while the accept loop is not running.

    With socketserver's default backlog of 5, connections beyond it are not completed by the
    kernel until accepted, so connect() would time out here; with `LISTEN_BACKLOG` they all are.
    """
    sim = keithley(lab)
    server = SimServer({"coil_x": (sim, 0)})
    server.start()
    try:
        listener = server._servers["coil_x"]
        listener.shutdown()  # stop accepting: connections now wait in the backlog alone
        address = ("127.0.0.1", server.port("coil_x"))
        clients = [socket.create_connection(address, timeout=2) for _ in range(20)]
        serving = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05})
        serving.daemon = True
        serving.start()
        try:
            for client in clients:
                assert ask(client, b"*OPC?") == b"1\n"
        finally:
            for client in clients:
                client.close()
    finally:
        server.stop()


def test_server_sockets_have_nagle_off(lab):
    """TCP_NODELAY on the accepted socket: a reply is sent at once, not after the client's
    delayed acknowledgement of the previous segment."""
    sim = keithley(lab)
    with SimServer({"coil_x": (sim, 0)}) as server:
        client = socket.create_connection(("127.0.0.1", server.port("coil_x")), timeout=5)
        try:
            assert ask(client, b"*OPC?") == b"1\n"  # the handler is set up by now
            (accepted,) = server._servers["coil_x"]._connections
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        finally:
            client.close()


class _CountingBuffer(bytearray):
    """A session buffer that counts the bytes its terminator searches read."""

    scanned = 0

    def find(self, sub, start=0, *args):
        _CountingBuffer.scanned += len(self) - start
        return super().find(sub, start, *args)


def test_framing_reads_each_received_byte_a_bounded_number_of_times(lab):
    """Linear time: a 32 MiB line arriving in 64 KiB chunks is searched once, byte by byte —
    re-scanning the whole buffer on each chunk (as before) reads it ~256 times over."""
    sim = keithley(lab)
    sim.input_buffer_bytes = 64 << 20  # large enough that the whole line is buffered
    session = sim.open_session()
    session._pending = _CountingBuffer()
    _CountingBuffer.scanned = 0
    chunk = b"Y" * 65536
    total = 32 << 20
    for _ in range(total // len(chunk)):
        assert session.feed(chunk) == b""
    assert session.feed(b"\n") == b""  # an unknown header: no reply, -113 queued
    assert _CountingBuffer.scanned <= total + 2 * len(chunk)
    assert session.feed(b"SYST:ERR?\n") == b'-113,"Undefined header"\n'


def test_a_busy_port_names_the_instrument_and_nothing_is_left_listening(lab):
    from hotspin.simulators.server import PortInUseError

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy = blocker.getsockname()[1]
    server = SimServer({"echo": (EchoInstrument(lab), 0), "coil_x": (keithley(lab), busy)})
    try:
        with pytest.raises(PortInUseError, match=f"coil_x cannot listen on 127.0.0.1:{busy}"):
            server.start()
        assert server.resources() == {}  # the servers started before it were stopped
    finally:
        blocker.close()
