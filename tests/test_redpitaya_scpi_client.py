"""Red Pitaya's own Python client and its acquisition examples against the served board.

The client, ``redpitaya_scpi.py`` (RedPitaya/RedPitaya ``Examples/python``, last there at
commit 85424b792~1; not on PyPI), is a raw socket: it sends each command with ``sendall`` and
CR LF, reads text with ``recv`` until the data end in CR LF, and reads a binary block as ``#``,
one digit, that many length digits, the payload in ``recv`` pieces, then ``recv(2)`` for the
CR LF. It has no timeout by default: a command the server does not answer hangs it. The class
below does the same over a socket (written here, none of its code), with a timeout so that a
missing reply fails the test instead of hanging it.

Sequences, in the order the client sends them:
[SET] ``get_settings()``: ``ACQ:DEC?``, ``ACQ:AVG?``, ``ACQ:TRIG:DLY?``, ``ACQ:TRIG:DLY:NS?``,
      ``ACQ:TRIG:LEV?``, ``ACQ:BUF:SIZE?``, ``ACQ:SOUR1:GAIN?``, ``ACQ:SOUR2:GAIN?``.
[ACQ] ``acq_set(dec, trig_lvl, trig_delay, trig_delay_ns, units, sample_format, averaging,
      gain)``: ``ACQ:DEC <dec>``, ``ACQ:AVG ON|OFF``, ``ACQ:TRIG:DLY:NS <d>`` (or ``ACQ:TRIG:DLY``),
      ``ACQ:DATA:UNITS <U>``, ``ACQ:DATA:FORMAT <F>``, ``ACQ:SOUR<n>:GAIN <G>``,
      ``ACQ:TRIG:LEV <lvl>``; ``check_error()`` is ``*STB?`` then ``SYST:ERR:NEXT?`` while bit 2.
[DAT] ``acq_data(chan, …)``: ``ACQ:DATA:UNITS?``, then ``ACQ:SOUR<n>:DATA:STA:END? s,e``,
      ``…:DATA:STA:N? s,n``, ``…:DATA:OLD:N? n``, ``…:DATA:LAT:N? n`` or ``…:DATA?``.
[IEEE] ``ese(v)``: ``*ESE v``; ``ese_q``, ``esr_q``, ``idn_q``, ``opc_q``, ``sre_q``, ``stb_q``.
[EX]  Examples ``acquire_trigger_posedge.py`` (ASCII volts, ``ACQ:DEC 1``, ``ACQ:TRIG CH1_PE``),
      ``acquire_trigger_posedge_bin.py`` (BIN volts, ``ACQ:DEC 8``, ``ACQ:TRIG NOW``, ``!f``),
      ``acquire_trigger_posedge_axi.py`` (deep memory, below) and ``identification.py`` (pyvisa
      ``*IDN?``, ``SYSTem:VERSion?``).
"""

import socket
import struct

import numpy as np
import pytest
import pyvisa
from hotspin.simulators.clock import SimClock
from hotspin.simulators.lab import LabConfig, SimulatedLab
from hotspin.simulators.redpitaya import SimulatedRedPitaya
from hotspin.simulators.server import SimServer

POLLS = 20_000  # the examples poll without end; a bound keeps a wrong board from hanging us


class RedPitayaScpiClient:
    """What ``redpitaya_scpi.scpi`` does on the wire, plus a timeout."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def tx_txt(self, message: str) -> None:
        self.sock.sendall((message + "\r\n").encode("utf-8"))

    def rx_txt(self) -> str:
        text = ""
        while not (len(text) >= 2 and text.endswith("\r\n")):
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed the connection"
            text += chunk.decode("utf-8")
        return text[:-2]

    def txrx_txt(self, message: str) -> str:
        self.tx_txt(message)
        return self.rx_txt()

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(min(n - len(data), 4096))
            assert chunk, "the server closed the connection"
            data += chunk
        return data

    def rx_arb(self) -> bytes:
        assert self._exactly(1) == b"#"
        digits = int(self._exactly(1))
        payload = self._exactly(int(self._exactly(digits)))
        self._exactly(2)  # the CR LF after the block
        return payload

    def check_error(self) -> list[str]:
        """``check_error``: the errors it would print (it stops only above 9500)."""
        errors = []
        if int(self.txrx_txt("*STB?")) & 0x4:
            while not (error := self.txrx_txt("SYST:ERR:NEXT?")).startswith("0,"):
                errors.append(error)
        return errors

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def served():
    """(simulated board, client) over TCP; the clock runs at wall speed as the board's does."""
    lab = SimulatedLab(LabConfig(seed=5), SimClock())
    # Light on the balanced detector: its shot noise behind the PDB450A's 4 MHz pole (2 mV rms)
    # crosses the level triggers' 5 mV hysteresis; the dark detector's 0.7 mV would not.
    lab.laser.emission_enabled = True
    lab.hwp_angle_deg = lab.config.polarimeter.hwp_zero_deg
    board = SimulatedRedPitaya(lab)
    with SimServer({"redpitaya": (board, 0)}) as server:
        client = RedPitayaScpiClient(server.port("redpitaya"))
        yield board, client, server
        client.close()


def wait_for(client: RedPitayaScpiClient, query: str, reply: str) -> None:
    for _ in range(POLLS):
        if client.txrx_txt(query) == reply:
            return
    raise AssertionError(f"{query} never answered {reply!r}")


def test_get_settings_answers_every_query(served):  # [SET]: it hung at ACQ:AVG?
    _, client, _ = served
    queries = ("ACQ:DEC?", "ACQ:AVG?", "ACQ:TRIG:DLY?", "ACQ:TRIG:DLY:NS?", "ACQ:TRIG:LEV?")
    queries += ("ACQ:BUF:SIZE?", "ACQ:SOUR1:GAIN?", "ACQ:SOUR2:GAIN?")
    settings = [client.txrx_txt(q) for q in queries]
    # acq_SetDefault: decimation 1, averaging on, delay 0, level 0; 16 384 samples; LV inputs.
    assert settings == ["1", "ON", "0", "0", "0", "16384", "LV", "LV"]


def test_acq_set_with_averaging_and_delay_in_ns(served):  # [ACQ]: averaging=True failed
    board, client, _ = served
    for command in (
        "ACQ:DEC 64",
        "ACQ:AVG ON",
        "ACQ:TRIG:DLY:NS 51200",  # 100 samples of 512 ns at decimation 64
        "ACQ:DATA:UNITS RAW",
        "ACQ:DATA:FORMAT BIN",
        "ACQ:SOUR1:GAIN LV",
        "ACQ:SOUR2:GAIN HV",
        "ACQ:TRIG:LEV 0.1",
    ):
        client.tx_txt(command)
    assert client.check_error() == []
    assert client.txrx_txt("ACQ:TRIG:DLY?") == "100"
    assert client.txrx_txt("ACQ:TRIG:DLY:NS?") == "51200"
    client.tx_txt("ACQ:DEC 128")  # a delay set in ns keeps its time (acq_SetDecimationFactor)
    assert client.txrx_txt("ACQ:TRIG:DLY?") == "50"
    client.tx_txt("ACQ:AVG OFF")
    assert client.txrx_txt("ACQ:AVG?") == "OFF"
    assert board.averaging is False
    client.tx_txt("ACQ:TRIG:DLY 7")  # acq_set(trig_delay_ns=False): samples again
    client.tx_txt("ACQ:DEC 64")
    assert client.txrx_txt("ACQ:TRIG:DLY?") == "7"
    assert client.txrx_txt("ACQ:SRATe?") == "  1953125 Hz"  # sprintf("%9.0f Hz")
    client.tx_txt("ACQ:DEC:Factor 48")  # any factor from 16 on (acq_SetDecimationFactor)
    assert client.txrx_txt("ACQ:DEC:Factor?") == "48"
    client.tx_txt("ACQ:DEC:Factor 9")
    assert client.check_error() == [
        '9506,"*ACQ:DEC:Factor Failed to set decimation factor: Value out of range."'
    ]


def test_acq_data_every_form_and_byte_order(served):  # [DAT] after a NOW trigger, RAW, BIN
    _, client, _ = served
    client.tx_txt("ACQ:RST")
    client.tx_txt("ACQ:DATA:FORMAT BIN")
    client.tx_txt("ACQ:DATA:UNITS RAW")
    client.tx_txt("ACQ:DEC 8")
    client.tx_txt("ACQ:START")
    client.tx_txt("ACQ:TRIG NOW")
    wait_for(client, "ACQ:TRIG:STAT?", "TD")
    wait_for(client, "ACQ:TRIG:FILL?", "1")
    assert client.txrx_txt("ACQ:DATA:UNITS?") == "RAW"
    client.tx_txt("ACQ:SOUR1:DATA?")
    whole = np.frombuffer(client.rx_arb(), dtype=">i2")
    assert whole.size == 16384
    wpos = int(client.txrx_txt("ACQ:WPOS?"))
    oldest = (wpos + 1) % 16384
    client.tx_txt(f"ACQ:SOUR1:DATA:STA:END? {oldest},{(oldest + 9) % 16384}")
    np.testing.assert_array_equal(np.frombuffer(client.rx_arb(), ">i2"), whole[:10])
    client.tx_txt(f"ACQ:SOUR1:DATA:STA:N? {oldest},5")
    np.testing.assert_array_equal(np.frombuffer(client.rx_arb(), ">i2"), whole[:5])
    client.tx_txt("ACQ:SOUR1:DATA:OLD:N? 6")
    np.testing.assert_array_equal(np.frombuffer(client.rx_arb(), ">i2"), whole[:6])
    client.tx_txt("ACQ:SOUR1:DATA:LAT:N? 4")
    np.testing.assert_array_equal(np.frombuffer(client.rx_arb(), ">i2"), whole[-4:])
    client.tx_txt("ACQ:DATA:BYTE:ORDER LEND")  # per connection, RP_AcqDataEndian
    assert client.txrx_txt("ACQ:DATA:BYTE:ORDER?") == "LEND"
    client.tx_txt("ACQ:SOUR1:DATA:OLD:N? 6")
    np.testing.assert_array_equal(np.frombuffer(client.rx_arb(), "<i2"), whole[:6])
    assert client.check_error() == []


def test_ieee_common_commands(served):  # [IEEE]
    _, client, _ = served
    assert client.txrx_txt("*IDN?").startswith("REDPITAYA,INSTR,")
    assert client.txrx_txt("*TST?") == "0"
    client.tx_txt("*ESE 32")
    assert client.txrx_txt("*ESE?") == "32"
    client.tx_txt("ACQ:FOO")  # -113 sets the command-error bit 5 of the ESR, enabled: ESB
    assert int(client.txrx_txt("*STB?")) & 0x24 == 0x24
    assert client.txrx_txt("*ESR?") == "32"
    assert client.txrx_txt("*SRE?") == "0"
    assert client.txrx_txt("*OPC?") == "1"
    client.tx_txt("*WAI")
    assert client.check_error() == ['-113,"Undefined header;ACQ:FOO"']


def test_posedge_and_binary_examples(served):  # [EX] ASCII volts on a level trigger, then BIN
    _, client, _ = served
    for command in ("ACQ:RST", "ACQ:DATA:FORMAT ASCII", "ACQ:DATA:UNITS VOLTS", "ACQ:DEC 1"):
        client.tx_txt(command)
    client.tx_txt("ACQ:START")
    client.tx_txt("ACQ:TRIG CH1_PE")
    wait_for(client, "ACQ:TRIG:STAT?", "TD")
    wait_for(client, "ACQ:TRIG:FILL?", "1")
    client.tx_txt("ACQ:SOUR1:DATA?")
    volts = [float(v) for v in client.rx_txt().strip("{}\n\r").replace("  ", "").split(",")]
    assert len(volts) == 16384 and max(abs(v) for v in volts) <= 1.0
    for command in ("ACQ:RST", "ACQ:DATA:FORMAT BIN", "ACQ:DATA:UNITS VOLTS", "ACQ:DEC 8"):
        client.tx_txt(command)
    client.tx_txt("ACQ:START")
    client.tx_txt("ACQ:TRIG NOW")
    wait_for(client, "ACQ:TRIG:STAT?", "TD")
    wait_for(client, "ACQ:TRIG:FILL?", "1")
    client.tx_txt("ACQ:SOUR1:DATA?")
    block = client.rx_arb()
    values = [struct.unpack("!f", block[i : i + 4])[0] for i in range(0, len(block), 4)]
    assert len(values) == 16384
    # Volts are codes × 1 V / 8192 (LV): every value sits on the code grid.
    np.testing.assert_allclose(np.array(values) * 8192, np.round(np.array(values) * 8192))


def test_deep_memory_example(served):  # [EX] acquire_trigger_posedge_axi.py, as it is written
    board, client, _ = served
    client.tx_txt("ACQ:RST")
    client.tx_txt("ACQ:DATA:FORMAT ASCII")
    client.tx_txt("ACQ:AXI:DATA:UNITS VOLT")  # the example's own typo: not a choice, refused
    assert client.txrx_txt("ACQ:AXI:DATA:UNITS?") == "VOLTS"
    assert client.check_error() == [
        '8891,"*ACQ:AXI:DATA:UNITS Missing first parameter."',
        '-224,"Illegal parameter value"',
    ]
    client.tx_txt("ACQ:AXI:DEC 4")
    assert client.txrx_txt("ACQ:AXI:DEC?") == "4"
    start = int(client.txrx_txt("ACQ:AXI:START?"))
    size = int(client.txrx_txt("ACQ:AXI:SIZE?"))
    assert size == 2 * 1024 * 1024
    samples = size // 40
    client.tx_txt(f"ACQ:AXI:SOUR1:SET:Buffer {start},{size // 2}")
    client.tx_txt(f"ACQ:AXI:SOUR2:SET:Buffer {start + size // 2},{size // 2}")
    client.tx_txt(f"ACQ:AXI:SOUR1:Trig:Dly {samples}")
    client.tx_txt(f"ACQ:AXI:SOUR2:Trig:Dly {samples}")
    client.tx_txt("ACQ:AXI:SOUR1:ENable ON")
    client.tx_txt("ACQ:AXI:SOUR2:ENable ON")
    assert client.check_error() == []
    client.tx_txt("ACQ:START")
    client.tx_txt("ACQ:TRIG CH1_PE")
    assert client.check_error() == []
    wait_for(client, "ACQ:AXI:SOUR1:TRIG:FILL?", "1")
    wait_for(client, "ACQ:AXI:SOUR2:TRIG:FILL?", "1")
    client.tx_txt("ACQ:STOP")
    trig_ch1 = client.txrx_txt("ACQ:AXI:SOUR1:Trig:Pos?")
    trig_ch2 = client.txrx_txt("ACQ:AXI:SOUR2:Trig:Pos?")
    assert trig_ch1 == trig_ch2
    client.tx_txt(f"ACQ:AXI:SOUR1:DATA:Start:N? {trig_ch1},{samples}")
    buff = [float(v) for v in client.rx_txt().strip("{}\n\r").replace("  ", "").split(",")]
    client.tx_txt(f"ACQ:AXI:SOUR2:DATA:Start:N? {trig_ch2},{samples}")
    buff2 = [float(v) for v in client.rx_txt().strip("{}\n\r").replace("  ", "").split(",")]
    assert len(buff) == len(buff2) == samples
    # The trigger sample of a rising edge at 0 V is at or above 0; the one before it was below.
    codes = board.deep.read(1, int(trig_ch1) - 1, 2)
    assert codes[0] < 0 <= codes[1]
    assert buff[0] == pytest.approx(codes[1] / 8192, abs=1e-6)


def test_identification_example_through_pyvisa(served):  # [EX] identification.py
    _, _, server = served
    rm = pyvisa.ResourceManager("@py")
    rp = rm.open_resource(
        f"TCPIP::127.0.0.1::{server.port('redpitaya')}::SOCKET", read_termination="\r\n"
    )
    rp.timeout = 5000
    try:
        assert rp.query("*IDN?").startswith("REDPITAYA,INSTR,")
        assert rp.query("SYSTem:VERSion?").startswith("2.")
        assert rp.query("SYSTem:BRD:Name?") == "STEMlab 125-14 v1.1"
    finally:
        rp.close()
