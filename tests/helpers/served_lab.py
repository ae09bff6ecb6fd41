"""`hotspin sim serve` in a thread on free ports, for the tests that run third-party clients."""

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from helpers import NAMES, free_ports, station_text
from hotspin.serve import serve

#: Lines `serve` announces: the title, one per instrument, the mount's pty, the laser's line 2.
ANNOUNCED_LINES = 1 + len(NAMES) + 2


@dataclass
class ServedLab:
    ports: dict[str, int]
    lines: list[str] = field(default_factory=list)

    def companion(self, name: str) -> str:
        """Return where a companion line of an instrument is, as `serve` printed it."""
        for line in self.lines[1 + len(NAMES) :]:
            words = line.split()
            if words[0] == name:
                return words[1] if words[1] != "TCP" else words[2]
        raise KeyError(name)

    @property
    def mount_pty(self) -> str:
        return self.companion("mount")


def _ports_with_a_free_monitoring_line() -> list[int]:
    """Free ports for every instrument, the laser's + 1 free too (its monitoring line)."""
    for _ in range(20):
        ports = free_ports(len(NAMES))
        laser = ports[NAMES.index("laser")]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", laser + 1))
            except OSError:
                continue
        if laser + 1 not in ports:
            return ports
    raise RuntimeError("no free port pair for the laser's command and monitoring lines")


@contextlib.contextmanager
def served_lab(directory):
    """Serve a simulated station (clock x50) on free ports until the block ends."""
    ports = _ports_with_a_free_monitoring_line()
    path = directory / "served.toml"
    path.write_text(station_text(ports, simulated=True))
    lab = ServedLab(dict(zip(NAMES, ports, strict=True)))
    announced, stop = threading.Event(), threading.Event()
    failure = []

    def announce(line):
        lab.lines.append(line)
        if len(lab.lines) == ANNOUNCED_LINES:
            announced.set()

    def run():
        try:
            serve(path, announce=announce, stop=stop)
        except Exception as error:  # reported by the waiting test, not lost in the thread
            failure.append(error)
            announced.set()

    thread = threading.Thread(target=run, name="served-lab", daemon=True)
    thread.start()
    assert announced.wait(30), f"sim serve did not start: {lab.lines}"
    if failure:
        raise failure[0]
    try:
        yield lab
    finally:
        stop.set()
        thread.join(timeout=30)
