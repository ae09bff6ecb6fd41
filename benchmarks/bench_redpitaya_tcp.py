"""A full Red Pitaya buffer and a short query through the real driver over TCP (pyvisa-py).

The simulated board serves in a child process on a loopback port, as a board on the network
would. In the same run, alternating call by call so that drift on the shared machine hits both
alike, it times:

- one 16 384-sample buffer as RAW int16 (32 kB block) and VOLTS float32 (64 kB block): through
  the driver (``FastInput.read_codes`` / ``read_voltages``: pymeasure → pyvisa → pyvisa-py), and
  through a plain socket that sends the same command line and reads the block by its header
  into a preallocated buffer (the baseline); also pyvisa's ``read_bytes`` on the same block
  with the termination character left enabled, as reads were before the fix;
- ``*IDN?`` through the driver (``RedPitaya.id``) and through a plain socket;
- a query right after a command (``ACQ:DEC 8`` then ``ACQ:DEC?``) through the driver, whose
  socket has Nagle's algorithm off (`set_tcp_nodelay`), and through a plain socket with Nagle
  left on, as pyvisa-py leaves it: the second write waits for the peer's delayed ACK.

Medians are printed with the ratios (driver / socket throughput, socket / driver round trip).

Run: .venv/bin/python benchmarks/bench_redpitaya_tcp.py
"""

from __future__ import annotations

import multiprocessing
import socket
from multiprocessing.connection import Connection

from hotspin.instruments.redpitaya import RedPitaya
from pyvisa import constants
from timing import median_times

ROUNDS = 400
DECIMATION = 8
BLOCK_LINE = "ACQ:DATA:FORMAT BIN;:ACQ:DATA:Units {units};:ACQ:SOUR1:DATA?"
PAYLOAD_BYTES = {"RAW": 16384 * 2, "VOLTS": 16384 * 4}
TARGET_MB_PER_S = 100.0
TARGET_RATIO = 0.25
TARGET_ROUND_TRIP_S = 1e-3
NAGLE_ROUNDS = 40  # each costs a delayed ACK (~40 ms) with Nagle on
TARGET_WRITE_QUERY_S = 5e-3


def serve(pipe: Connection) -> None:
    """Run the simulated lab and board (real-time clock) until told to stop; send the port."""
    from hotspin.simulators.lab import LabConfig, SimulatedLab
    from hotspin.simulators.redpitaya import SimulatedRedPitaya
    from hotspin.simulators.server import SimServer

    lab = SimulatedLab(LabConfig(seed=1))
    lab.laser.emission_enabled = True
    lab.hwp_angle_deg = lab.config.polarimeter.hwp_zero_deg  # balanced: IN1 is shot noise
    with SimServer({"redpitaya": (SimulatedRedPitaya(lab), 0)}) as server:
        pipe.send(server.port("redpitaya"))
        pipe.recv()


class RawClient:
    """The baseline: a bare socket that reads a block by its header into a preallocated buffer."""

    def __init__(self, port: int, nodelay: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
        self.buffer = bytearray(1 << 20)

    def _exactly(self, count: int) -> memoryview:
        view = memoryview(self.buffer)[:count]
        received = 0
        while received < count:
            received += self.sock.recv_into(view[received:])
        return view

    def block(self, line: str) -> int:
        """Send ``line``, read the block and its CR LF; return the payload length."""
        self.sock.sendall(line.encode("ascii") + b"\r\n")
        digits = int(bytes(self._exactly(2)[1:2]))
        length = int(bytes(self._exactly(digits)))
        self._exactly(length + 2)
        return length

    def query(self, line: str) -> bytes:
        """Send ``line``; return the reply line (read until CR LF)."""
        self.sock.sendall(line.encode("ascii") + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += self.sock.recv(4096)
        return reply


def block_with_termchar_enabled(pitaya: RedPitaya, units: str) -> int:
    """Read the block with pyvisa's read_bytes while stopping at LF stays enabled (the old way)."""
    connection = pitaya.adapter.connection
    assert connection.get_visa_attribute(constants.VI_ATTR_TERMCHAR_EN)
    pitaya.write(BLOCK_LINE.format(units=units))
    digits = int(connection.read_bytes(2)[1:2])
    length = int(connection.read_bytes(digits))
    connection.read_bytes(length + 2)
    return length


def main() -> None:
    """Start the board, fill its buffer, time blocks and round trips, print the figures."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(child,), daemon=True)
    server.start()
    try:
        port = parent.recv()
        pitaya = RedPitaya(f"TCPIP::127.0.0.1::{port}::SOCKET", timeout=5000)
        raw = RawClient(port)
        pitaya.decimation = DECIMATION
        pitaya.acquire()
        sample = pitaya.ain1.read_codes().astype(">i2").tobytes()
        line_feeds, returns = sample.count(b"\n"), sample.count(b"\r")
        print(
            f"Red Pitaya board simulated in a child process, decimation {DECIMATION}; "
            f"{ROUNDS} rounds, medians; IN1 RAW block holds {line_feeds} LF and {returns} CR bytes"
        )
        for units, read in (("RAW", pitaya.ain1.read_codes), ("VOLTS", pitaya.ain1.read_voltages)):
            line = BLOCK_LINE.format(units=units)
            medians = median_times(
                {
                    "socket": lambda line=line: raw.block(line),
                    "driver": read,
                    "termchar": lambda units=units: block_with_termchar_enabled(pitaya, units),
                },
                ROUNDS,
            )
            size = PAYLOAD_BYTES[units]
            rate = {name: size / seconds / 1e6 for name, seconds in medians.items()}
            ratio = rate["driver"] / rate["socket"]
            kind = "int16" if units == "RAW" else "float32"
            print(f"{units} {kind}, {size} bytes per buffer:")
            print(
                f"  raw socket:                    {medians['socket'] * 1e6:7.0f} µs  "
                f"{rate['socket']:7.0f} MB/s"
            )
            print(
                f"  driver (pyvisa-py):            {medians['driver'] * 1e6:7.0f} µs  "
                f"{rate['driver']:7.0f} MB/s  (target >= {TARGET_MB_PER_S:.0f} MB/s)"
            )
            print(
                f"  pyvisa read_bytes, termchar on:{medians['termchar'] * 1e6:7.0f} µs  "
                f"{rate['termchar']:7.0f} MB/s  (before the fix)"
            )
            print(f"  ratio driver / socket: {ratio:.2f} (target >= {TARGET_RATIO})")
        medians = median_times(
            {"socket": lambda: raw.query("*IDN?"), "driver": lambda: pitaya.id}, 4 * ROUNDS
        )
        print("*IDN? round trip:")
        print(f"  raw socket: {medians['socket'] * 1e6:6.0f} µs")
        print(
            f"  driver:     {medians['driver'] * 1e6:6.0f} µs  "
            f"(target < {TARGET_ROUND_TRIP_S * 1e3:.0f} ms)"
        )
        print(f"  ratio socket / driver: {medians['socket'] / medians['driver']:.2f}")
        nagle = RawClient(port, nodelay=False)

        def write_then_query_nagle() -> None:
            nagle.sock.sendall(f"ACQ:DEC {DECIMATION}\r\n".encode("ascii"))
            nagle.query("ACQ:DEC?")

        def write_then_query_driver() -> None:
            pitaya.write(f"ACQ:DEC {DECIMATION}")
            pitaya.ask("ACQ:DEC?")

        medians = median_times(
            {"nagle": write_then_query_nagle, "driver": write_then_query_driver}, NAGLE_ROUNDS
        )
        print(f"command then query ({NAGLE_ROUNDS} rounds):")
        print(
            f"  driver, TCP_NODELAY {pitaya.tcp_nodelay}: {medians['driver'] * 1e3:7.2f} ms  "
            f"(target < {TARGET_WRITE_QUERY_S * 1e3:.0f} ms)"
        )
        print(f"  raw socket, Nagle on:      {medians['nagle'] * 1e3:7.2f} ms")
        pitaya.adapter.close()
    finally:
        parent.send("stop")
        server.join(timeout=10)


if __name__ == "__main__":
    main()
