"""The DLC pro's monitoring line: parameter subscriptions on TCP command-line port + 1 (1999).

toptica-lasersdk opens it by default next to the command line
(``NetworkConnection(host, command_line_port=1998, monitoring_line_port=1999)``) and speaks it as
its ``asyncio/client.py`` and ``decop.py`` define (read from the 3.3.0 wheel):

* requests, one per line: ``(add 'name)``, ``(add 'name interval_ms)``, ``(add 'name interval_ms
  threshold)``, ``(remove 'name)`` and ``(change-ul level "password")``; nothing is answered to
  them but updates;
* an update is one line ``(<timestamp> 'name value)``, the timestamp UTC as
  ``%Y-%m-%dT%H:%M:%S.%fZ`` (``decop.parse_monitoring_line``), the value encoded as on the command
  line; an error is ``(Error: <code> (<timestamp> 'name) <message>)``.

Behaviour the SDK implies but does not fix, modelled here: a new subscription gets the present
value at once; afterwards the parameter is read every ``interval_ms`` (default 100 ms, the
interval the SDK itself picks when only a threshold is given) and sent when its text changed, or
for numbers when it moved by at least ``threshold``. Subscribing to an unknown parameter is
answered with an error line. Time here is wall time: the device stamps updates with its own
clock, and a client waits for them in real time.
"""

from __future__ import annotations

import datetime
import errno
import re
import select
import socket
import socketserver
import threading
import time
from dataclasses import dataclass

from hotspin.simulators.server import PortInUseError, Served, TrackingTCPServer
from hotspin.simulators.toptica_dlcpro import PARSE_ERROR, DecopError, SimulatedDLCpro

#: Update interval when a subscription names none, s.
DEFAULT_INTERVAL_S = 0.1
#: Longest request line accepted; a longer one is an error and is discarded.
MAX_REQUEST_BYTES = 4096
#: Longest wait between two looks at the socket, s (bounds how late a stop is noticed).
IDLE_WAIT_S = 0.1

_REQUEST = re.compile(
    r"^\(\s*(?P<op>add|remove|change-ul)\s+(?P<args>.*?)\s*\)$", re.IGNORECASE | re.DOTALL
)


def timestamp() -> str:
    """Return the present UTC time as the monitoring line stamps an update."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Subscription:
    """One parameter a client subscribed to: its interval, threshold and what was last sent."""

    name: str
    interval_s: float
    threshold: float | None
    last_text: str | None = None
    due_s: float = 0.0

    def changed(self, text: str) -> bool:
        """Return whether ``text`` is news: different, and beyond the threshold for numbers."""
        if self.last_text is None:
            return True
        if text == self.last_text:
            return False
        if self.threshold is None:
            return True
        try:
            return abs(float(text) - float(self.last_text)) >= self.threshold
        except ValueError:
            return True


class _MonitoringHandler(socketserver.BaseRequestHandler):
    server: _MonitoringServer

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.request, add=True)

    def finish(self) -> None:
        self.server.track(self.request, add=False)

    def handle(self) -> None:
        connection: socket.socket = self.request
        subscriptions: dict[str, Subscription] = {}
        pending = b""
        try:
            while not self.server.stopping.is_set():
                now = time.monotonic()
                wait_s = min([IDLE_WAIT_S, *(s.due_s - now for s in subscriptions.values())])
                readable, _, _ = select.select([connection], [], [], max(wait_s, 0.0))
                if readable:
                    data = connection.recv(MAX_REQUEST_BYTES)
                    if not data:
                        return
                    *lines, pending = (pending + data).split(b"\n")
                    if len(pending) > MAX_REQUEST_BYTES:
                        lines.append(pending)
                        pending = b""
                    for line in lines:
                        self._request(line.decode("utf-8", "replace").strip(), subscriptions)
                self._send_updates(subscriptions)
        except OSError:
            return  # the client went away, or the server is stopping

    def _request(self, line: str, subscriptions: dict[str, Subscription]) -> None:
        if not line:
            return
        match = _REQUEST.match(line)
        try:
            args = match["args"].split() if match else []
            if match is None or not args:
                raise DecopError(PARSE_ERROR)
            op, name = match["op"].lower(), args[0].lstrip("'")
            if op == "change-ul":
                return  # the monitoring line's level follows the command line's here
            if op == "remove":
                subscriptions.pop(name, None)
                return
            if len(args) > 3:
                raise DecopError(PARSE_ERROR)
            interval_s = int(args[1]) / 1e3 if len(args) > 1 else DEFAULT_INTERVAL_S
            threshold = float(args[2]) if len(args) > 2 else None
            self.server.dlcpro.monitor_value(name)  # an unknown name is an error now
        except (DecopError, ValueError) as error:
            decop = error if isinstance(error, DecopError) else DecopError(PARSE_ERROR)
            name = args[0].lstrip("'") if match and args else ""
            self._send(f"(Error: {decop.code} ({timestamp()} '{name}) {decop.message})\n")
            return
        subscriptions[name] = Subscription(name, max(interval_s, 0.0), threshold)

    def _send_updates(self, subscriptions: dict[str, Subscription]) -> None:
        now = time.monotonic()
        for subscription in list(subscriptions.values()):
            if subscription.due_s > now:
                continue
            subscription.due_s = now + subscription.interval_s
            try:
                text = self.server.dlcpro.monitor_value(subscription.name)
            except DecopError as error:
                self._send(
                    f"(Error: {error.code} ({timestamp()} '{subscription.name}) {error.message})\n"
                )
                continue
            if subscription.changed(text):
                subscription.last_text = text
                self._send(f"({timestamp()} '{subscription.name} {text})\n")

    def _send(self, line: str) -> None:
        self.request.sendall(line.encode("utf-8"))


class _MonitoringServer(TrackingTCPServer):
    def __init__(self, address: tuple[str, int], dlcpro: SimulatedDLCpro) -> None:
        self.dlcpro = dlcpro
        self.stopping = threading.Event()
        super().__init__(address, _MonitoringHandler)


class MonitoringLineServer(Served):
    """The monitoring line of one simulated DLC pro, on its own loopback port."""

    def __init__(self, dlcpro: SimulatedDLCpro, port: int, host: str = "127.0.0.1") -> None:
        self.dlcpro = dlcpro
        self.host = host
        self._requested_port = port
        self._server: _MonitoringServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MonitoringLineServer:
        """Bind the port (PortInUseError names it if it is taken) and start serving."""
        try:
            self._server = _MonitoringServer((self.host, self._requested_port), self.dlcpro)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            name = f"{self.dlcpro.name} monitoring line"
            raise PortInUseError(name, self.host, self._requested_port) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name=f"sim-{self.dlcpro.name}-monitoring",
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        """Return the port the monitoring line listens on."""
        if self._server is None:
            raise RuntimeError("the monitoring line is not started")
        return self._server.server_address[1]

    def stop(self) -> None:
        """Stop listening, close every subscriber's connection and wait for the thread."""
        if self._server is None:
            return
        self._server.stopping.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
