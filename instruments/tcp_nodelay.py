"""Switch off Nagle's algorithm on an instrument's raw TCP socket (TCP_NODELAY).

A SCPI exchange is a short write followed by a short write-and-read. With Nagle on, the second
write waits for the ACK of the first, and the peer delays that ACK (40 ms on Linux): every
query after a command then costs ~45 ms instead of ~0.1 ms over loopback. NI-VISA sets
``VI_ATTR_TCPIP_NODELAY`` on raw sockets by default; pyvisa-py leaves the operating system's
default, Nagle on.

Which route works depends on the backend. pyvisa-py's ``TCPIPSocketSession`` (read in 0.8.1,
``pyvisa_py/tcpip.py``) registers ``VI_ATTR_TCPIP_NODELAY`` with a getter that reads the socket
but with the session's generic ``_set_attribute`` as setter, which raises ``UnknownAttribute``:
the attribute can be read but not set, so there the session's own socket is set directly (the
same was reported against pyvisa-py in nominal-io/instro#157). Before 0.7.1 its TCP attribute
setters reached for a ``.sock`` member the session no longer had and raised AttributeError
(pyvisa/pyvisa-py#396, fixed in #397). NI-VISA and other backends take the attribute. So the
attribute is tried first, then the socket; the result is read back from the socket.
"""

from __future__ import annotations

import contextlib
import socket

from pymeasure.adapters import Adapter, VISAAdapter
from pyvisa import constants
from pyvisa.errors import VisaIOError
from pyvisa_py.sessions import UnknownAttribute


def _session_socket(connection: object) -> socket.socket | None:
    """Return the socket under a pyvisa-py TCPIP SOCKET resource, or None (other backends)."""
    sessions = getattr(getattr(connection, "visalib", None), "sessions", None)
    session = sessions.get(getattr(connection, "session", None)) if sessions else None
    interface = getattr(session, "interface", None)
    return interface if isinstance(interface, socket.socket) else None


def set_tcp_nodelay(adapter: Adapter) -> bool:
    """Switch Nagle off on ``adapter``'s TCP socket; return True when it is off, False for
    a link that is not a raw TCP socket (serial, in-process)."""
    connection = adapter.connection if isinstance(adapter, VISAAdapter) else None
    if connection is None or not str(getattr(connection, "resource_name", "")).endswith("SOCKET"):
        return False
    with contextlib.suppress(VisaIOError, UnknownAttribute, AttributeError, NotImplementedError):
        connection.set_visa_attribute(constants.VI_ATTR_TCPIP_NODELAY, constants.VI_TRUE)
    raw = _session_socket(connection)
    if raw is None:  # another backend: the attribute is all there is
        return bool(connection.get_visa_attribute(constants.VI_ATTR_TCPIP_NODELAY))
    if not raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return bool(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
