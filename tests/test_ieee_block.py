"""The shared IEEE 488.2 definite-length block reader and writer (instruments/ieee_block.py).

Block syntax: IEEE 488.2-1992 §8.7.9, ``#<d><d digits: length><payload>``; the Red Pitaya server
writes it in ``writeBinHeader`` (RedPitaya/RedPitaya scpi-server/src/scpi-parser-ext.cpp) and
ends the reply with CR LF. Payloads here are chosen to hold 0x0A and 0x0D bytes, which a reader
that stops at the terminator would cut.
"""

import numpy as np
import pytest
from hotspin.instruments.errors import GarbledReplyError
from hotspin.instruments.ieee_block import encode_block, read_block
from hotspin.simulators.clock import SimClock
from hotspin.simulators.inprocess import InProcessAdapter
from hotspin.simulators.instrument_base import SimulatedInstrument
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.server import SimServer
from pymeasure.instruments import Instrument
from pyvisa import constants

# int16 codes whose big-endian bytes are LF/CR in every position: 0x0A0D, 0x0D0A, 0x000A, 0xFF0D…
CODES = np.array([0x0A0D, 0x0D0A, 10, 13, -246, -243, 0x0A0A, -8192, 8191, 0], dtype=np.int16)
# float32 values built from bytes full of LF and CR (all finite, normal numbers).
FLOATS = np.frombuffer(
    bytes(
        [
            0x3F,
            0x0A,
            0x0D,
            0x0A,
            0xBF,
            0x0D,
            0x0A,
            0x0D,
            0x41,
            0x0A,
            0x0A,
            0x0D,
            0x0D,
            0x0D,
            0x0A,
            0x0A,
        ]
    ),
    dtype=">f4",
)
PAYLOADS = {"int16": CODES.astype(">i2").tobytes(), "float32": FLOATS.tobytes()}


class BlockServer(SimulatedInstrument):
    """Answers ``INT?`` and ``FLOAT?`` with the test blocks, ``PING?`` with text, CR LF framed."""

    input_terminator = b"\r\n"
    output_terminator = b"\r\n"

    def __init__(self, lab):
        super().__init__(lab, "blocks")

    def handle(self, command):
        if command == b"PING?":
            return b"PONG\r\n"
        kind = {b"INT?": "int16", b"FLOAT?": "float32", b"BAD?": None}[command]
        if kind is None:
            return b"{1,2,3}\r\n"
        return encode_block(PAYLOADS[kind]) + b"\r\n"


class BlockClient(Instrument):
    def __init__(self, adapter, **kwargs):
        super().__init__(
            adapter,
            "block client",
            includeSCPI=False,
            read_termination="\r\n",
            write_termination="\r\n",
            timeout=2000,
            **kwargs,
        )

    def block(self, query):
        self.write(query)
        return read_block(self.adapter, "\r\n", self.name)


@pytest.fixture(params=["in-process", "tcp"])
def client(request):
    server = BlockServer(SimulatedLab(clock=SimClock(manual=True)))
    if request.param == "in-process":
        yield BlockClient(InProcessAdapter(server))
        return
    with SimServer({"blocks": (server, 0)}) as sim:
        instrument = BlockClient(sim.resource("blocks"))
        yield instrument
        instrument.adapter.close()


def test_payloads_hold_line_feeds_and_carriage_returns():
    for payload in PAYLOADS.values():
        assert b"\n" in payload and b"\r" in payload
    assert np.all(np.isfinite(FLOATS))


def test_encode_block_writes_the_length_header():
    assert encode_block(b"") == b"#10"
    assert encode_block(b"\n\r\n") == b"#13\n\r\n"
    assert encode_block(bytes(32768)) == b"#532768" + bytes(32768)  # a Red Pitaya RAW buffer


@pytest.mark.parametrize("kind, dtype", [("int16", ">i2"), ("float32", ">f4")])
def test_blocks_with_lf_and_cr_decode_exactly(client, kind, dtype):
    payload = client.block("INT?" if kind == "int16" else "FLOAT?")
    assert payload == PAYLOADS[kind]
    expected = CODES if kind == "int16" else FLOATS
    np.testing.assert_array_equal(np.frombuffer(payload, dtype=dtype), expected)
    assert client.ask("PING?") == "PONG"  # the terminator after the block was consumed


def test_text_replies_still_stop_at_the_terminator_after_a_block(client):
    client.block("INT?")
    if hasattr(client.adapter, "connection"):
        attribute = constants.VI_ATTR_TERMCHAR_EN
        assert client.adapter.connection.get_visa_attribute(attribute) == constants.VI_TRUE
    client.write("PING?")
    client.write("PING?")
    assert client.read() == "PONG" and client.read() == "PONG"


def test_a_reply_that_is_not_a_block_is_refused_and_discarded(client):
    with pytest.raises(GarbledReplyError, match=r"expected an IEEE 488\.2 block"):
        client.block("BAD?")
    assert client.ask("PING?") == "PONG"


@pytest.mark.parametrize(
    "reply, message",
    [
        (b"#0\x01\x02\r\n", "indefinite-length"),
        (b"#2x4abcd\r\n", "not all digits"),
        (b"#14abcdXY", "followed by"),
    ],
)
def test_malformed_blocks_raise_garbled_reply(reply, message):
    class Canned(SimulatedInstrument):
        input_terminator = output_terminator = b"\r\n"

        def handle(self, command):
            return reply

    adapter = InProcessAdapter(Canned(SimulatedLab(clock=SimClock(manual=True)), "canned"))
    adapter.write("Q?")
    with pytest.raises(GarbledReplyError, match=message):
        read_block(adapter, "\r\n", "canned")
