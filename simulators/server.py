"""Serve simulated instruments over TCP on the loopback interface, as raw-socket VISA resources.

Each instrument listens on its own port, like the real one on its own address; every client gets
its own session (framing, greeting) and a thread. The real drivers connect through pyvisa-py with
`TCPIP::127.0.0.1::<port>::SOCKET` and cannot tell the difference from the hardware.

Every accepted socket has Nagle's algorithm off (TCP_NODELAY): a reply goes out at once instead of
waiting for the client's delayed acknowledgement of the previous one (~40 ms on Linux loopback);
and it acknowledges each received segment at once (TCP_QUICKACK), so that a client that leaves
Nagle on (pyvisa-py) does not hold a query written after a command for the same ~40 ms.
The listen backlog holds `LISTEN_BACKLOG` connections, so a whole lab of clients connecting at
the same moment is accepted rather than refused.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import socketserver
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from hotspin.simulators.instrument_base import ConnectionDropped, SimulatedInstrument
from hotspin.simulators.unsolicited import UnsolicitedSession

_RECEIVE_CHUNK = 65536
#: Connections the kernel queues before they are accepted (socketserver's default is 5).
LISTEN_BACKLOG = 128


class Served:
    """The context protocol of every server here: `start` on entering, `stop` on leaving.

    A subclass defines `start()` (returning itself) and `stop()`.
    """

    def __enter__(self) -> Any:
        return self.start()  # type: ignore[attr-defined]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()  # type: ignore[attr-defined]


class PortInUseError(OSError):
    """An instrument's port is taken by another program."""

    def __init__(self, name: str, host: str, port: int) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"{name} cannot listen on {host}:{port}: Address already in use "
            "(another program, or another simulated lab, holds the port)",
        )
        self.name = name
        self.port = port


class _ConnectionHandler(socketserver.BaseRequestHandler):
    server: _InstrumentServer

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.request, add=True)

    def handle(self) -> None:
        session = self.server.instrument.open_session()
        connection: socket.socket = self.request
        if isinstance(session, UnsolicitedSession):  # it also speaks unprompted (ELL14 moves)
            session.attach_output(connection.sendall)
        try:
            greeting = session.greeting()
            if greeting:
                connection.sendall(greeting)
            while True:
                data = connection.recv(_RECEIVE_CHUNK)
                if not data:
                    return
                _acknowledge_now(connection)
                reply = session.feed(data)
                if reply:
                    connection.sendall(reply)
        except ConnectionDropped:
            return  # a simulated fault: the instrument closes this connection
        except OSError:
            return  # the client went away, or the server is shutting down
        finally:
            if isinstance(session, UnsolicitedSession):
                session.close()

    def finish(self) -> None:
        self.server.track(self.request, add=False)


def _acknowledge_now(connection: socket.socket) -> None:
    """Acknowledge what was received at once instead of ~40 ms later (Linux TCP_QUICKACK).

    A client with Nagle's algorithm on (pyvisa-py's sockets) holds a query written right after
    a command until the command's segment is acknowledged; a command has no reply to carry the
    acknowledgement, so without this the query waits for the delayed ACK. Linux clears the flag
    after use, so it is set again after every receive; elsewhere the option does not exist.
    """
    if hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


class TrackingTCPServer(socketserver.ThreadingTCPServer):
    """A threaded loopback server that knows its open connections, so a stop can end them."""

    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], handler: type[socketserver.BaseRequestHandler]
    ) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, connection: socket.socket, add: bool) -> None:
        """Note a connection opened (``add``) or closed."""
        with self._connections_lock:
            (self._connections.add if add else self._connections.discard)(connection)

    def close_connections(self) -> None:
        """Shut every open connection down, so their handlers end."""
        with self._connections_lock:
            for connection in list(self._connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _InstrumentServer(TrackingTCPServer):
    def __init__(self, address: tuple[str, int], instrument: SimulatedInstrument) -> None:
        self.instrument = instrument
        super().__init__(address, _ConnectionHandler)


class SimServer(Served):
    """Every simulated instrument of a lab, each on its own loopback port."""

    def __init__(
        self, instruments: Mapping[str, tuple[SimulatedInstrument, int]], host: str = "127.0.0.1"
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"host = {host!r}: simulated instruments serve on loopback only")
        self.host = host
        self._planned = dict(instruments)
        self._servers: dict[str, _InstrumentServer] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> SimServer:
        """Bind every port (0 picks a free one) and start answering."""
        try:
            for name, (instrument, port) in self._planned.items():
                try:
                    server = _InstrumentServer((self.host, port), instrument)
                except OSError as error:
                    if error.errno != errno.EADDRINUSE:
                        raise
                    raise PortInUseError(name, self.host, port) from None
                self._servers[name] = server
                thread = threading.Thread(
                    target=server.serve_forever, name=f"sim-{name}", kwargs={"poll_interval": 0.05}
                )
                thread.daemon = True
                thread.start()
                self._threads.append(thread)
        except OSError:
            self.stop()
            raise
        return self

    def port(self, name: str) -> int:
        """Return the port an instrument listens on."""
        return self._servers[name].server_address[1]

    def resource(self, name: str) -> str:
        """Return the VISA resource name of an instrument."""
        return f"TCPIP::{self.host}::{self.port(name)}::SOCKET"

    def resources(self) -> dict[str, str]:
        """Return the VISA resource of every instrument, by name."""
        return {name: self.resource(name) for name in self._servers}

    def stop(self) -> None:
        """Stop listening, close every connection and wait for the threads to end."""
        for server in self._servers.values():
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()
