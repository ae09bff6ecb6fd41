"""IEEE 488.2 definite-length blocks, ``#<d><length><payload>``: the one reader and writer.

A block is ``#``, one digit d (1-9), d digits giving the payload length in bytes, the payload,
then (on a socket) the instrument's line terminator. Red Pitaya, Keysight and Tektronix send their
waveforms this way (IEEE 488.2-1992 §8.7.9, "definite length arbitrary block response data").

A block must be read by its length header, never up to a terminator: the payload is binary and
holds 0x0A and 0x0D bytes wherever the data say so. On a VISA resource the reader also switches
off the stop-at-termination-character attribute (``VI_ATTR_TERMCHAR_EN``) while it reads:
pyvisa-py's socket session otherwise returns early at every 0x0A byte of the payload, and
`read_bytes` has to call it again, once per 0x0A (about 1 call in 256 bytes of random data),
which made a 32 kB block of int16 codes six times slower than with it off (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hotspin.instruments.errors import GarbledReplyError
from pymeasure.adapters import Adapter, VISAAdapter
from pyvisa import constants
from pyvisa.resources import MessageBasedResource


def encode_block(payload: bytes) -> bytes:
    """Return ``payload`` framed as a definite-length block (no terminator), to send it."""
    length = str(len(payload)).encode("ascii")
    if len(length) > 9:
        raise ValueError(f"a definite-length block holds < 1e9 bytes, not {len(payload)}")
    return b"#" + str(len(length)).encode("ascii") + length + bytes(payload)


def read_block(
    adapter: Adapter, terminator: str | bytes = b"", source: str = "instrument"
) -> bytes:
    """Read one definite-length block from ``adapter`` by its header; return its payload.

    ``terminator`` is what the instrument sends after the block (CR LF for the Red Pitaya); it is
    read with the payload and checked. A malformed header discards whatever is left to read, so
    the next command starts clean, and raises `GarbledReplyError` naming ``source``.
    """
    ending = terminator.encode("ascii") if isinstance(terminator, str) else bytes(terminator)
    with _whole_reads(adapter):
        try:
            digits = _length_digits(adapter.read_bytes(2), source)
            length = _payload_length(adapter.read_bytes(digits), source)
        except GarbledReplyError:
            adapter.flush_read_buffer()
            raise
        # One read for payload and terminator: a single pass through the transport.
        body = adapter.read_bytes(length + len(ending))
    if len(body) != length + len(ending) or not body.endswith(ending):
        raise GarbledReplyError(
            source,
            f"block of {length} bytes should be followed by {ending!r}, got {body[length:]!r}",
        )
    return body[:length] if ending else body


def _length_digits(head: bytes, source: str) -> int:
    """Return d from the first two bytes ``#d`` of a block."""
    if len(head) != 2 or head[:1] != b"#" or not head[1:2].isdigit():
        raise GarbledReplyError(source, f"expected an IEEE 488.2 block '#<d>…', got {head!r}")
    if head[1:2] == b"0":
        raise GarbledReplyError(source, "got an indefinite-length block '#0' (no length header)")
    return int(head[1:2])


def _payload_length(field: bytes, source: str) -> int:
    """Return the payload length from the block's length field."""
    if not field.isdigit():
        raise GarbledReplyError(source, f"block length field {field!r} is not all digits")
    return int(field)


@contextmanager
def _whole_reads(adapter: Adapter) -> Iterator[None]:
    """Within the block, let VISA reads stop only at their byte count, never at a 0x0A byte."""
    connection = adapter.connection if isinstance(adapter, VISAAdapter) else None
    if not isinstance(connection, MessageBasedResource) or not connection.get_visa_attribute(
        constants.VI_ATTR_TERMCHAR_EN
    ):
        yield
        return
    connection.set_visa_attribute(constants.VI_ATTR_TERMCHAR_EN, constants.VI_FALSE)
    try:
        yield
    finally:
        connection.set_visa_attribute(constants.VI_ATTR_TERMCHAR_EN, constants.VI_TRUE)
