"""Red Pitaya STEMlab 125-14: the driver's exchanges, and the driver against the simulated board.

Sources of the exchanges:
[ACQ] redpitaya.readthedocs.io, SCPI command list "Acquisition" (``commands-acq``): the examples
      ``ACQ:DEC 4``, ``ACQ:DEC?`` > ``1``, ``ACQ:SOUR1:GAIN?`` > ``HV``, ``ACQ:DATA:Units RAW``,
      ``ACQ:DATA:FORMAT ASCII``, ``ACQ:TRig CH1_PE``, ``ACQ:TRig:STAT?`` > ``WAIT``,
      ``ACQ:TRig:FILL?`` > ``1``, ``ACQ:TRig:DLY 2314``, ``ACQ:TRig:LEV 0.125 V`` (the unit is
      optional in SCPI), ``ACQ:TRig:LEV?`` > ``0.123``, ``ACQ:BUF:SIZE?`` > ``16384``,
      ``ACQ:SOUR2:DATA:Old:N? 3``, ``ACQ:SOUR1:DATA:STArt:N? 10,3``.
[EX]  RedPitaya-Examples ``python/acquire_trigger_posedge_bin_raw.py``: ``ACQ:DATA:FORMAT BIN``,
      ``ACQ:DATA:UNITS RAW``, ``ACQ:START``, ``ACQ:TRIG NOW``, poll ``ACQ:TRIG:STAT?`` for ``TD``
      and ``ACQ:TRIG:FILL?`` for ``1``, read the block and unpack each sample as ``!h``.
[LIB] RedPitaya-Examples ``python/lib/redpitaya_scpi_core.py`` ``check_error``: ``*STB?``, and
      if bit 0x4 is set ``SYST:ERR:NEXT?`` until the reply starts with ``0,``.
[DMM] redpitaya.readthedocs.io "Deep Memory Mode" and ``scpi-server/src/scpi-commands.cpp`` +
      ``acquire_axi.cpp``: ``ACQ:AXI:START?``, ``ACQ:AXI:SIZE?``, ``ACQ:AXI:DEC``,
      ``ACQ:AXI:DATA:Units``, ``ACQ:AXI:SOUR<n>:SET:Buffer <address>,<bytes>``,
      ``ACQ:AXI:SOUR<n>:ENable ON``, ``ACQ:AXI:SOUR<n>:Write:Pos?`` and
      ``ACQ:AXI:SOUR<n>:DATA:Start:N? <pos>,<n>``; ``acquire.cpp``: ``ACQ:AVG ON|OFF`` and
      ``ACQ:AVG?`` > ``ON``/``OFF``, ``ACQ:TRig:DLY:NS``, ``ACQ:DATA:BYTE:ORDER LEND``;
      ``common.cpp``: ``SYSTem:BRD:Name?``; ``scpi-commands.cpp``: ``SYSTem:VERSion?``.
[SRV] RedPitaya/RedPitaya ``scpi-server/src``: ``writeBinHeader`` (``#``, digit count, byte
      count, payload, then CR LF), ``RP_AcqDecimation`` (an invalid factor queues
      9000 − 109 = 8891 "*ACQ:DEC Parameter decimation is invalid."), the scpi-parser's
      ``-113,"Undefined header;<command>"`` and its silence after a query it cannot run.
"""

import numpy as np
import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.errors import InstrumentCommandError, InstrumentTimeoutError
from hotspin.instruments.redpitaya import BUFFER_SIZE, RedPitaya, StreamBlock
from hotspin.simulators.clock import SimClock
from hotspin.simulators.inprocess import InProcessAdapter
from hotspin.simulators.lab import LabConfig, SimulatedLab
from hotspin.simulators.redpitaya import SimulatedRedPitaya
from hotspin.simulators.server import SimServer
from pymeasure.test import expected_protocol

LV_STEP_V = 1.0 / 8192  # full scale 1 V over 2¹³ codes (rp_hw-profiles, STEMlab 125-14)
HV_STEP_V = 20.0 / 8192
NO_ERRORS = ("*STB?", "0")  # [LIB]: the error check that follows a setting


def no_wait(seconds):
    """A sleep for exchanges without an instrument: the replies say when the buffer is full."""


# --- exchanges from the manual -------------------------------------------------------------------
def test_decimation_and_sample_rate():  # [ACQ] ACQ:DEC 4; ACQ:DEC? > 1
    with expected_protocol(
        RedPitaya, [("ACQ:DEC 4", None), NO_ERRORS, ("ACQ:DEC?", "1"), ("ACQ:DEC?", "1")]
    ) as pitaya:
        pitaya.decimation = 4
        assert pitaya.decimation == 1
        assert pitaya.sample_rate_Hz == 125e6
    with expected_protocol(RedPitaya, [("ACQ:DEC 64", None), NO_ERRORS]) as pitaya:
        pitaya.sample_rate_Hz = 125e6 / 64


def test_input_gain():  # [ACQ] ACQ:SOUR1:GAIN LV; ACQ:SOUR1:GAIN? > HV
    with expected_protocol(
        RedPitaya, [("ACQ:SOUR1:GAIN LV", None), NO_ERRORS, ("ACQ:SOUR2:GAIN?", "HV")]
    ) as pitaya:
        pitaya.ain1.gain = "LV"
        assert pitaya.ain2.gain == "HV"
        with pytest.raises(ParameterError, match=r"gain = 'MV' is not one of \['HV', 'LV'\]"):
            pitaya.ain1.gain = "MV"


def test_data_units_format_and_buffer_size():  # [ACQ]
    with expected_protocol(
        RedPitaya,
        [
            ("ACQ:DATA:Units RAW", None),
            NO_ERRORS,
            ("ACQ:DATA:Units?", "RAW"),
            ("ACQ:DATA:FORMAT ASCII", None),
            NO_ERRORS,
            ("ACQ:DATA:FORMAT?", "ASCII"),
            ("ACQ:BUF:SIZE?", "16384"),
        ],
    ) as pitaya:
        pitaya.acq_units = "RAW"
        assert pitaya.acq_units == "RAW"
        pitaya.acq_format = "ASCII"
        assert pitaya.acq_format == "ASCII"
        assert pitaya.buffer_length == BUFFER_SIZE


def test_trigger_source_status_fill_delay_and_level():  # [ACQ]
    with expected_protocol(
        RedPitaya,
        [
            ("ACQ:TRig CH1_PE", None),
            ("ACQ:TRig:STAT?", "WAIT"),
            ("ACQ:TRig:STAT?", "TD"),
            ("ACQ:TRig:FILL?", "1"),
            ("ACQ:TRig:DLY 2314", None),
            NO_ERRORS,
            ("ACQ:TRig:DLY?", "2314"),
            ("ACQ:TRig:LEV 0.125", None),
            NO_ERRORS,
            ("ACQ:TRig:LEV?", "0.123"),
            ("ACQ:TRig:HYST 0.01", None),
            NO_ERRORS,
            ("ACQ:TRig:HYST?", "0.01"),
        ],
    ) as pitaya:
        pitaya.acq_trigger_source = "CH1_PE"
        assert pitaya.acq_trigger_status is False
        assert pitaya.acq_trigger_status is True
        assert pitaya.acq_buffer_filled is True
        pitaya.acq_trigger_delay_samples = 2314
        assert pitaya.acq_trigger_delay_samples == 2314
        pitaya.acq_trigger_level = 0.125
        assert pitaya.acq_trigger_level == pytest.approx(0.123)
        pitaya.acq_trigger_hysteresis = 0.01
        assert pitaya.acq_trigger_hysteresis == pytest.approx(0.01)


def test_averaging_delay_in_ns_and_board_identity():  # [DMM] acquire.cpp, common.cpp
    with expected_protocol(
        RedPitaya,
        [
            ("ACQ:AVG OFF", None),
            NO_ERRORS,
            ("ACQ:AVG?", "ON"),
            ("ACQ:AVG ON", None),
            NO_ERRORS,
            ("ACQ:AVG?", "OFF"),
            ("ACQ:TRig:DLY:NS 51200", None),
            NO_ERRORS,
            ("ACQ:TRig:DLY:NS?", "51200"),
            ("SYSTem:BRD:Name?", "STEMlab 125-14 v1.1"),
            ("SYSTem:VERSion?", "2.00-18"),
        ],
    ) as pitaya:
        pitaya.acq_averaging = False
        assert pitaya.acq_averaging is True
        pitaya.acq_averaging = True
        assert pitaya.acq_averaging is False
        pitaya.acq_trigger_delay_ns = 51200
        assert pitaya.acq_trigger_delay_ns == 51200
        assert pitaya.board_name == "STEMlab 125-14 v1.1"
        assert pitaya.os_version == "2.00-18"
        with pytest.raises(ParameterError, match="acq_averaging = 'yes'"):
            pitaya.acq_averaging = "yes"


def test_deep_memory_decimation_and_region():  # [DMM]
    with expected_protocol(
        RedPitaya,
        [
            ("ACQ:AXI:DEC 48", None),
            NO_ERRORS,
            ("ACQ:AXI:DEC?", "48"),
            ("ACQ:AXI:START?", "16777216"),
            ("ACQ:AXI:SIZE?", "2097152"),
        ],
    ) as pitaya:
        pitaya.axi_decimation = 48  # any factor from 16 on, below it only 1, 2, 4, 8
        assert pitaya.axi_decimation == 48
        assert pitaya.axi_region == (16777216, 2097152)
        for bad in (12, 65537, 0, 2.0):
            with pytest.raises(ParameterError, match=f"decimation = {bad!r}: one of 1, 2, 4, 8"):
                pitaya.axi_decimation = bad


def test_stream_arms_both_rings_and_reads_behind_the_write_pointer():  # [DMM]
    """A 2 MiB region split in two rings of 524 288 samples; a block read from the position."""
    times = iter([10.0, 10.0, 10.001, 10.002])  # start (before, after), then each Write:Pos?
    codes = {1: np.array([5, -3, 7, 0], dtype="<i2"), 2: np.array([1, 2, 3, 4], dtype="<i2")}
    block = {ch: b"#18" + c.tobytes() + b"\r\n" for ch, c in codes.items()}
    with expected_protocol(
        RedPitaya,
        [
            ("ACQ:AXI:START?", "16777216"),
            ("ACQ:AXI:SIZE?", "2097152"),
            ("ACQ:SOUR1:GAIN?", "LV"),
            ("ACQ:SOUR2:GAIN?", "HV"),
            ("ACQ:STOP", None),
            ("ACQ:AXI:DEC 1024", None),
            ("ACQ:AXI:DATA:Units RAW", None),
            ("ACQ:DATA:FORMAT BIN", None),
            ("ACQ:DATA:BYTE:ORDER LEND", None),
            ("ACQ:TRig DISABLED", None),
            ("ACQ:AXI:SOUR1:SET:Buffer 16777216,1048576", None),
            ("ACQ:AXI:SOUR1:ENable ON", None),
            ("ACQ:AXI:SOUR2:SET:Buffer 17825792,1048576", None),
            ("ACQ:AXI:SOUR2:ENable ON", None),
            NO_ERRORS,
            ("ACQ:START", None),
            ("ACQ:AXI:SOUR1:Write:Pos?", "100"),  # 122 kS/s × 1 ms: 122 written, 100 shown
            ("ACQ:AXI:SOUR1:DATA:Start:N? 0,4", block[1]),
            ("ACQ:AXI:SOUR2:DATA:Start:N? 0,4", block[2]),
            ("ACQ:AXI:SOUR1:Write:Pos?", "230"),
            ("ACQ:STOP", None),
            ("ACQ:AXI:SOUR1:ENable OFF", None),
            ("ACQ:AXI:SOUR2:ENable OFF", None),
        ],
    ) as pitaya:
        pitaya._now = lambda: next(times)
        stream = pitaya.stream(decimation=1024, n_samples=4, block_samples=16)
        assert stream.ring_samples == 524288
        assert stream.volts_per_code == (1 / 8192, 20 / 8192)
        (item,) = list(stream)
        assert isinstance(item, StreamBlock) and item.first_index == 0
        np.testing.assert_array_equal(item.codes, np.stack([codes[1], codes[2]]))
        stream.close()


def test_binary_block_read_of_raw_codes():  # [ACQ] Old:N? 3, [EX] '!h', [SRV] '#16…' + CR LF
    codes = np.array([2570, -8192, 13], dtype=np.int16)  # 0x0A0A, 0xE000, 0x000D
    block = b"#16" + codes.astype(">i2").tobytes() + b"\r\n"
    with expected_protocol(
        RedPitaya,
        [("ACQ:DATA:FORMAT BIN;:ACQ:DATA:Units RAW;:ACQ:SOUR2:DATA:Old:N? 3", block)],
    ) as pitaya:
        np.testing.assert_array_equal(pitaya.ain2.read_codes(3), codes)


def test_binary_block_read_of_volts_from_a_position():  # [ACQ] STArt:N? 10,3, [SRV] '!f'
    volts = np.array([0.5, -1.0, 0.0001220703125], dtype=np.float32)
    block = b"#212" + volts.astype(">f4").tobytes() + b"\r\n"
    with expected_protocol(
        RedPitaya,
        [("ACQ:DATA:FORMAT BIN;:ACQ:DATA:Units VOLTS;:ACQ:SOUR1:DATA:STArt:N? 10,3", block)],
    ) as pitaya:
        np.testing.assert_array_equal(pitaya.ain1.read_voltages(3, start=10), volts)


def test_acquire_arms_triggers_waits_and_reads():  # [EX] sequence, [ACQ] DLY, [LIB] check
    codes = {1: np.array([-8192, 10, 8191, 0]), 2: np.array([5180, 5181, 2570, 3338])}
    blocks = {ch: b"#18" + c.astype(">i2").tobytes() + b"\r\n" for ch, c in codes.items()}
    with expected_protocol(
        RedPitaya,
        [
            ("ACQ:DEC?", "8"),
            ("ACQ:SOUR1:GAIN?", "LV"),
            ("ACQ:SOUR2:GAIN?", "HV"),
            ("ACQ:TRig:DLY 8192", None),
            NO_ERRORS,
            ("ACQ:START", None),
            ("ACQ:TRig NOW", None),
            NO_ERRORS,
            ("ACQ:TRig:STAT?", "WAIT"),
            ("ACQ:TRig:STAT?", "TD"),
            ("ACQ:TRig:FILL?", "0"),
            ("ACQ:TRig:FILL?", "1"),
            ("ACQ:DATA:FORMAT BIN;:ACQ:DATA:Units RAW;:ACQ:SOUR1:DATA:Old:N? 4", blocks[1]),
            ("ACQ:DATA:FORMAT BIN;:ACQ:DATA:Units RAW;:ACQ:SOUR2:DATA:Old:N? 4", blocks[2]),
        ],
        sleep=no_wait,
    ) as pitaya:
        record = pitaya.acquire((1, 2), n=4)
    assert record.sample_rate_Hz == 125e6 / 8
    np.testing.assert_array_equal(record.voltages_V[1], codes[1] * LV_STEP_V)
    np.testing.assert_array_equal(record.voltages_V[2], codes[2] * HV_STEP_V)


def test_error_queue_raises_with_the_first_code():  # [LIB], [SRV]
    with (
        expected_protocol(
            RedPitaya,
            [
                ("*STB?", "4"),
                ("SYST:ERR:NEXT?", '8891,"*ACQ:DEC Parameter decimation is invalid."'),
                ("SYST:ERR:NEXT?", '-113,"Undefined header;ACQ:FOO"'),
                ("SYST:ERR:NEXT?", '0,"No error"'),
            ],
        ) as pitaya,
        pytest.raises(InstrumentCommandError, match="decimation is invalid") as error,
    ):
        pitaya.check_errors()
    assert error.value.code == 8891
    assert "Undefined header" in str(error.value)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("decimation", 3, r"decimation = 3 is not one of \[1, 2, 4, 8, 16, "),
        ("sample_rate_Hz", 1e6, r"sample_rate_Hz = 1e\+06 is not one of \[1.25e\+08"),
        ("acq_trigger_delay_samples", 9000, r"acq_trigger_delay_samples = 9000 .*8192"),
        ("acq_trigger_level", 25.0, r"acq_trigger_level = 25 .*\[-20, 20\] V"),
        ("acq_trigger_source", "CH3_PE", r"acq_trigger_source = 'CH3_PE' is not one of"),
    ],
)
def test_out_of_range_settings_are_refused_before_sending(setting, value, message):
    with expected_protocol(RedPitaya, []) as pitaya, pytest.raises(ParameterError, match=message):
        setattr(pitaya, setting, value)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: p.acquire((1, 3)), r"channels = \(1, 3\)"),
        (lambda p: p.acquire(n=0), r"n = 0 is outside"),
        (lambda p: p.acquire(n=100.5), r"n = 100.5 is not a whole number"),
        (lambda p: p.ain1.read_codes(start=5), "n is required"),
        (lambda p: p.ain1.read_codes(20000), r"n = 20000 is outside"),
    ],
)
def test_bad_acquisition_requests_are_refused_before_sending(call, message):
    with expected_protocol(RedPitaya, []) as pitaya, pytest.raises(ParameterError, match=message):
        call(pitaya)


# --- the driver against the simulated board ------------------------------------------------------
@pytest.fixture
def lab():
    lab = SimulatedLab(LabConfig(seed=11), SimClock(manual=True))
    lab.laser.emission_enabled = True
    lab.hwp_angle_deg = lab.config.polarimeter.hwp_zero_deg  # balanced: IN1 is noise around 0
    return lab


@pytest.fixture(params=["in-process", "tcp"])
def board(request, lab):
    """(simulated board, driver) connected in-process or through pyvisa-py over TCP."""
    simulated = SimulatedRedPitaya(lab)
    if request.param == "in-process":
        yield simulated, RedPitaya(InProcessAdapter(simulated), sleep=lab.clock.sleep)
        return
    with SimServer({"redpitaya": (simulated, 0)}) as server:
        pitaya = RedPitaya(server.resource("redpitaya"), sleep=lab.clock.sleep, timeout=300)
        yield simulated, pitaya
        pitaya.adapter.close()


def test_identity_and_buffer_size(board):
    _, pitaya = board
    assert pitaya.id.startswith("REDPITAYA,INSTR,")
    assert pitaya.buffer_length == BUFFER_SIZE


def test_acquisition_gives_full_buffers_and_the_sum_voltage(board, lab):
    _, pitaya = board
    pitaya.decimation = 8
    record = pitaya.acquire()
    assert record.sample_rate_Hz == 125e6 / 8
    assert set(record.voltages_V) == {1, 2}
    assert all(v.shape == (BUFFER_SIZE,) for v in record.voltages_V.values())
    pol = lab.config.polarimeter
    expected_sum_V = pol.gain_sum_V_per_A * pol.responsivity_A_per_W * lab.truth().detected_power_W
    assert record.voltages_V[2].mean() == pytest.approx(expected_sum_V, abs=LV_STEP_V)
    assert abs(record.voltages_V[1].mean()) < 0.01  # balanced
    assert record.voltages_V[1].std() > 10 * LV_STEP_V  # shot noise, many codes wide


def test_an_acquisition_after_a_stream_reads_its_blocks_in_the_streams_byte_order(board, lab):
    # `stream` sets ACQ:DATA:BYTE:ORDER LEND, which holds for the connection's ordinary buffer
    # reads too: decoded as big-endian they would be byte-swapped codes.
    _, pitaya = board
    before = pitaya.acquire().voltages_V[2].mean()
    stream = pitaya.stream(decimation=256, n_samples=1024)
    assert sum(item.codes.shape[1] for item in stream) == 1024
    stream.close()
    record = pitaya.acquire()
    assert record.voltages_V[2].mean() == pytest.approx(before, abs=3 * LV_STEP_V)
    codes = pitaya.analog_in[2].read_codes()
    np.testing.assert_allclose(codes * LV_STEP_V, pitaya.analog_in[2].read_voltages(), atol=1e-6)


def test_quantisation_step_is_one_code_of_the_range(board, lab):
    simulated, pitaya = board
    pitaya.decimation = 64
    v_diff = pitaya.acquire((1,)).voltages_V[1]
    codes = v_diff / LV_STEP_V
    np.testing.assert_array_equal(codes, np.round(codes))
    assert np.min(np.diff(np.unique(v_diff))) == pytest.approx(LV_STEP_V, rel=1e-12)
    simulated.jumpers[0] = "HV"  # move the jumper, and tell the server
    pitaya.ain1.gain = "HV"
    v_diff = pitaya.acquire((1,)).voltages_V[1]
    assert np.min(np.diff(np.unique(v_diff))) == pytest.approx(HV_STEP_V, rel=1e-12)


def test_difference_signal_clips_at_the_input_range(board, lab):
    simulated, pitaya = board
    lab.hwp_angle_deg = lab.config.polarimeter.hwp_zero_deg - 10.0  # detector saturates at −10 V
    low_range = pitaya.acquire((1,)).voltages_V[1]
    np.testing.assert_array_equal(low_range, -1.0)  # code −8192: the bottom of ±1 V
    simulated.jumpers[0] = "HV"
    pitaya.ain1.gain = "HV"
    high_range = pitaya.acquire((1,)).voltages_V[1]
    assert high_range.mean() == pytest.approx(-10.0, abs=HV_STEP_V)


def test_gain_setting_that_disagrees_with_the_jumper_scales_wrongly(board, lab):
    _, pitaya = board
    right = pitaya.acquire((2,)).voltages_V[2]
    pitaya.ain2.gain = "HV"  # the jumper stays on LV: the codes are LV codes
    wrong = pitaya.ain2.read_voltages()
    np.testing.assert_allclose(wrong, 20.0 * right, rtol=1e-6)


def test_every_query_reads_the_same_buffer_in_raw_or_volts(board, lab):
    _, pitaya = board
    pitaya.decimation = 16
    record = pitaya.acquire()
    lab.clock.advance(1.0)
    codes = pitaya.ain1.read_codes()
    np.testing.assert_array_equal(codes * LV_STEP_V, record.voltages_V[1])
    np.testing.assert_array_equal(pitaya.ain1.read_codes(), codes)
    volts = pitaya.ain1.read_voltages()
    assert volts.dtype == np.float32
    np.testing.assert_array_equal(volts, (codes * np.float32(LV_STEP_V)).astype(np.float32))
    assert b"\n" in codes.astype(">i2").tobytes()  # the block held LF bytes and survived them


def test_partial_reads_index_the_circular_buffer(board):
    _, pitaya = board
    pitaya.acquire()
    whole = pitaya.ain2.read_codes()
    np.testing.assert_array_equal(pitaya.ain2.read_codes(100), whole[:100])
    oldest = int(pitaya.ask("ACQ:WPOS?")) + 1
    start = (oldest + 500) % BUFFER_SIZE
    np.testing.assert_array_equal(pitaya.ain2.read_codes(50, start=start), whole[500:550])
    pitaya.write("ACQ:DATA:FORMAT BIN;:ACQ:DATA:Units RAW;:ACQ:SOUR2:DATA:LATest:N? 7")
    np.testing.assert_array_equal(np.frombuffer(pitaya.read_block(), ">i2"), whole[-7:])
    pitaya.write(f"ACQ:SOUR2:DATA:STA:END? {start},{(start + 2) % BUFFER_SIZE}")
    np.testing.assert_array_equal(np.frombuffer(pitaya.read_block(), ">i2"), whole[500:503])


def test_ascii_data_and_the_pymeasure_get_data(board):
    _, pitaya = board
    pitaya.acquire((2,))
    codes = pitaya.ain2.read_codes(5)
    pitaya.acq_units = "RAW"
    pitaya.acq_format = "ASCII"
    assert pitaya.ask("ACQ:SOUR2:DATA:Old:N? 5") == "{" + ",".join(map(str, codes)) + "}"
    np.testing.assert_array_equal(pitaya.ain2.get_data(5), codes)
    np.testing.assert_array_equal(pitaya.ain2.get_data(5, format="BIN"), codes)


def test_fill_follows_simulated_time_and_the_pre_trigger_half_is_stale(board, lab):
    _, pitaya = board
    pitaya.decimation = 1024  # 8.2 µs per sample: 134 ms per buffer
    pitaya.acq_trigger_delay_samples = 0  # trigger in the middle
    lab.clock.advance(1.0)  # the lab's signal starts at t = 0: leave room for the pre-trigger half
    pitaya.acquisition_start()
    pitaya.acq_trigger_source = "NOW"
    assert pitaya.acq_trigger_status is True
    assert pitaya.acq_buffer_filled is False
    lab.clock.advance(BUFFER_SIZE // 2 * 1024 / 125e6)
    assert pitaya.acq_buffer_filled is True
    codes = pitaya.ain2.read_codes()
    # Armed just before the trigger: the samples before it were never written (still zero).
    np.testing.assert_array_equal(codes[: BUFFER_SIZE // 2], 0)
    assert np.all(codes[BUFFER_SIZE // 2 :] > 4000)


def test_hysteresis_beyond_the_noise_keeps_a_level_trigger_waiting(board, lab):
    _, pitaya = board
    pitaya.decimation = 64
    lab.clock.advance(1.0)
    pitaya.acq_trigger_level = 0.0  # crossed by the noise all the time …
    pitaya.acq_trigger_hysteresis = 0.5  # … but never 0.5 V below it first
    pitaya.acquisition_start()
    pitaya.acq_trigger_source = "CH1_PE"
    lab.clock.advance(2 * BUFFER_SIZE * 64 / 125e6)
    assert pitaya.acq_trigger_status is False
    pitaya.acq_trigger_hysteresis = 0.0
    lab.clock.advance(BUFFER_SIZE * 64 / 125e6)
    assert pitaya.acq_trigger_status is True


def test_an_external_trigger_with_nothing_connected_times_out(board):
    _, pitaya = board
    pitaya.acq_trigger_source = "EXT_PE"
    pitaya.acquisition_start()
    assert pitaya.acq_trigger_status is False  # WAIT
    with pytest.raises(InstrumentTimeoutError, match="no trigger"):
        pitaya.wait_for_buffer(timeout_s=0.1)


@pytest.mark.parametrize(("source", "edge"), [("CH1_PE", 1), ("CH1_NE", -1)])
def test_a_level_trigger_fires_on_the_edge_of_the_input(board, lab, source, edge):
    simulated, pitaya = board
    pitaya.decimation = 64  # 0.5 µs per sample, 8.4 ms per buffer
    lab.clock.advance(1.0)
    level = 0.5 * edge * float(np.std(pitaya.acquire().voltages_V[1]))  # crossed often
    pitaya.acq_trigger_level = level
    assert pitaya.acq_trigger_hysteresis == pytest.approx(0.005)  # the board's default
    pitaya.acq_trigger_hysteresis = 0.0  # every crossing of the level counts
    pitaya.acq_trigger_delay_samples = 0  # after acquire(), which puts the trigger first
    lab.clock.advance(0.1)
    simulated.capture.memory[:] = 0  # as after power-on: the samples written from now on stand out
    pitaya.acquisition_start()
    pitaya.acq_trigger_source = source
    assert pitaya.acq_trigger_status is False  # no time has passed: nothing seen yet
    lab.clock.advance(BUFFER_SIZE * 64 / 125e6)  # a buffer's time: pre-trigger part, crossing
    assert pitaya.acq_trigger_status is True
    lab.clock.advance(BUFFER_SIZE * 64 / 125e6)  # the post-trigger part
    assert pitaya.acq_buffer_filled is True
    codes = pitaya.ain1.read_codes().astype(int)
    threshold = round(pitaya.acq_trigger_level / 1.0 * 8192)
    trigger = BUFFER_SIZE // 2  # ACQ:TRig:DLY 0: the trigger is the middle sample
    assert edge * codes[trigger] >= edge * threshold > edge * codes[trigger - 1]
    # The first such edge since the board was armed: none earlier among the written samples.
    written = np.flatnonzero(codes[:trigger] != 0)
    assert 0 < written[0] < trigger
    earlier = codes[written[0] : trigger]
    assert not np.any(
        (edge * earlier[:-1] < edge * threshold) & (edge * earlier[1:] >= edge * threshold)
    )
    assert simulated.trigger_source == "DISABLED"  # the FPGA cleared it when it triggered


def test_acquire_gives_up_when_the_buffer_never_fills(lab):
    stopped_clock = SimulatedRedPitaya(lab)
    pitaya = RedPitaya(InProcessAdapter(stopped_clock), sleep=no_wait)  # time never passes
    with pytest.raises(InstrumentTimeoutError, match=r"buffer not filled after 0\.5 s"):
        pitaya.acquire(timeout_s=0.5)


# --- the simulated board's SCPI: forms, errors ---------------------------------------------------
def test_short_and_long_forms_in_any_case(board):
    _, pitaya = board
    pitaya.write("acq:dec 16")
    assert pitaya.ask("ACQ:DEC?") == "16"
    pitaya.write("ACQ:TR:DLY 100")
    assert pitaya.ask("acq:trig:dly?") == "100"
    assert pitaya.ask("ACQ:DATA:U?") == "VOLTS"
    assert pitaya.ask("SYSTEM:ERROR:NEXT?") == '0,"No error"'
    assert pitaya.ask("syst:err?") == '0,"No error"'
    assert pitaya.ask("ACQ:DEC 4;DEC?") == "4"  # compound header: DEC? is under ACQ:
    assert pitaya.ask("*IDN?;ACQ:BUF:SIZE?").endswith(";16384")


def test_invalid_command_gets_the_real_error_answer(board):
    _, pitaya = board
    pitaya.write("ACQUIRE:START")  # ACQ has no long form
    assert pitaya.ask("*STB?") == "4"
    assert pitaya.ask("SYST:ERR:NEXT?") == '-113,"Undefined header;ACQUIRE:START"'
    assert pitaya.ask("SYST:ERR:NEXT?") == '0,"No error"'
    assert pitaya.ask("*STB?") == "0"
    with pytest.raises(InstrumentCommandError, match="Undefined header;ACQ:FOO") as error:
        pitaya.ask("ACQ:FOO?")  # no reply at all: the driver looks in the error queue
    assert error.value.code == -113


def test_bad_values_get_the_servers_error_codes(board):
    _, pitaya = board
    pitaya.write("ACQ:DEC 3")
    with pytest.raises(InstrumentCommandError, match=r"\*ACQ:DEC Parameter decimation") as error:
        pitaya.check_errors()
    assert error.value.code == 8891
    pitaya.write("ACQ:TRig SOMETIMES")
    with pytest.raises(InstrumentCommandError, match="Illegal parameter value") as error:
        pitaya.check_errors()
    assert error.value.code == 8891  # the board's "Missing first parameter." comes first
    pitaya.write("ACQ:SOUR3:GAIN HV")
    with pytest.raises(InstrumentCommandError, match="Invalid channel number") as error:
        pitaya.check_errors()
    assert error.value.code == 9500
    pitaya.write("ACQ:START 5")
    with pytest.raises(InstrumentCommandError, match="Parameter not allowed"):
        pitaya.check_errors()
    assert pitaya.ask("ACQ:DEC?") == "1"  # nothing bad was applied


def test_a_garbled_whole_number_reply_is_an_error_the_link_repeats():
    # Line noise on "64": pymeasure would hand back the string; the driver refuses it.
    with expected_protocol(RedPitaya, [(b"ACQ:DEC?", b"?4")]) as board, pytest.raises(ValueError):
        board.decimation  # noqa: B018


# --- the board's scpi context: scpi-parser's rules, one context per connection ------------------
def _ask(session, message: str) -> bytes:
    return session.feed(message.encode("ascii") + b"\r\n")


def test_each_connection_has_its_own_status_format_and_error_queues(lab):
    # [SRV] main.cpp: one scpi context per client; user_context_t holds the data format.
    board = SimulatedRedPitaya(lab)
    first, second = board.open_session(), board.open_session()
    _ask(first, "ACQ:FOO")
    _ask(first, "*ESE 32")
    _ask(first, "ACQ:DATA:FORMAT B")  # strncasecmp over the parameter's length: BIN
    _ask(first, "ACQ:DATA:Units RAW")  # a global of acquire.cpp: every connection sees it
    assert _ask(first, "*STB?") == b"36\r\n"  # QMA 4, ESB 32 (ESR bit 5 enabled)
    assert _ask(second, "*STB?;*ESE?;ACQ:DATA:FORMAT?") == b"0;0;ASCII\r\n"
    assert _ask(second, "ACQ:DATA:Units?") == b"RAW\r\n"
    assert _ask(second, "SYST:ERR?") == b'0,"No error"\r\n'
    assert _ask(first, "SYST:ERR?") == b'-113,"Undefined header;ACQ:FOO"\r\n'


def test_an_unread_parameter_queues_108_after_the_reply(lab):
    # [SRV] scpi-parser processCommand: the callback answers, then unread parameters are -108.
    board = SimulatedRedPitaya(lab)
    session = board.open_session()
    assert _ask(session, "*IDN? 5") == b"REDPITAYA,INSTR,SIMULATED,hotspin\r\n"
    assert _ask(session, "ACQ:DEC? 7;DEC 8,9;DEC?") == b"1;8\r\n"
    assert _ask(session, "SYST:ERR:COUN?") == b"3\r\n"
    for _ in range(3):
        assert _ask(session, "SYST:ERR?") == b'-108,"Parameter not allowed"\r\n'
    assert _ask(session, "ACQ:TRig:DLY 100;DLY 5 V;DLY?") == b"0\r\n"  # optional: bad reads 0
    assert _ask(session, "SYST:ERR?") == b'-138,"Suffix not allowed"\r\n'  # and nothing more
    assert _ask(session, "ACQ:DEC 3,9") == b""  # failed: its own error, no -108 after it
    assert _ask(session, "SYST:ERR?") == b'8891,"*ACQ:DEC Parameter decimation is invalid."\r\n'
    assert _ask(session, "SYST:ERR?") == b'0,"No error"\r\n'


def test_return_on_error_answers_a_failed_query_with_an_empty_line(lab):
    # [SRV] common.cpp RP:RET_ON_ERROR (g_retByError, off at start) and requestSendNewLine in
    # RP_AcqGainQ after RP_ParseChArgvADC; a missing parameter (RP_AcqOldestDataQ) sends nothing.
    board = SimulatedRedPitaya(lab)
    session = board.open_session()
    assert _ask(session, "ACQ:SOUR3:GAIN?") == b""
    _ask(session, "RP:RET_ON_ERROR ON")
    assert _ask(session, "ACQ:SOUR3:GAIN?") == b"\r\n"
    assert _ask(session, "ACQ:SOUR1:DATA:Old:N?") == b""
    _ask(session, "RP:RET_ON_ERROR OFF")
    assert _ask(session, "ACQ:SOUR0:GAIN?") == b""
    errors = [_ask(session, "SYST:ERR?") for _ in range(5)]
    assert errors == [
        b'9500,"*ACQ:SOUR3:GAIN? Invalid channel number"\r\n',
        b'9500,"*ACQ:SOUR3:GAIN? Invalid channel number"\r\n',
        b'8891,"*ACQ:SOUR1:DATA:Old:N? Missing SIZE parameter."\r\n',
        b'9500,"*ACQ:SOUR0:GAIN? Invalid channel number"\r\n',
        b'-109,"Missing parameter"\r\n',  # the parser's queue comes after the board's list
    ]


def test_the_queue_flag_and_overflow_follow_scpi_parser(lab):
    # [SRV] error.c: a full 16-entry queue's newest entry becomes -350; STB_QMA is set by every
    # error and cleared only when a read empties the parser's queue (the board's list does not).
    board = SimulatedRedPitaya(lab)
    session = board.open_session()
    _ask(session, "ACQ:DEC 3")
    assert _ask(session, "*STB?") == b"4\r\n"
    assert _ask(session, "SYST:ERR?").startswith(b"8891,")
    assert _ask(session, "*STB?") == b"4\r\n"  # the parser's queue was not read yet
    assert _ask(session, "SYST:ERR?") == b'0,"No error"\r\n'
    assert _ask(session, "*STB?") == b"0\r\n"
    _ask(session, ";".join(f"FOO{n}" for n in range(20)))
    assert _ask(session, "SYST:ERR:COUN?") == b"16\r\n"
    errors = [_ask(session, "SYST:ERR?") for _ in range(17)]
    assert errors[:15] == [f'-113,"Undefined header;FOO{n}"\r\n'.encode() for n in range(15)]
    assert errors[15:] == [b'-350,"Queue overflow"\r\n', b'0,"No error"\r\n']


def test_compound_paths_follow_scpi_parsers_compose_rule(lab):  # composeCompoundCommand
    board = SimulatedRedPitaya(lab)
    session = board.open_session()
    assert _ask(session, "ACQ:DEC 3;DEC?") == b"1\r\n"  # a found header moves the path
    assert _ask(session, "ACQ:DEC 4;*OPC;DEC?") == b""  # after a common command: the root
    _ask(session, "SYST:ERR?")
    assert _ask(session, "SYST:ERR?") == b'-113,"Undefined header;DEC?"\r\n'
    assert _ask(session, "ACQ:DEC?") == b"4\r\n"


def test_a_command_longer_than_the_parsers_buffer_is_an_input_overrun(lab):
    # [SRV] scpi-commands.cpp SCPI_INPUT_BUFFER_LENGTH 512 KiB; scpi-parser SCPI_Input: -363.
    board = SimulatedRedPitaya(lab)
    session = board.open_session()
    longest = b"ACQ:DEC 4" + b" " * (board.input_buffer_bytes - 9)
    assert session.feed(longest + b"\r\n") == b""
    assert _ask(session, "ACQ:DEC?;:SYST:ERR?") == b'4;0,"No error"\r\n'
    assert session.feed(longest + b" \r\n") == b""
    assert _ask(session, "SYST:ERR?") == b'-363,"Input buffer overrun"\r\n'
    assert board.input_buffer_bytes + 3 == 512 * 1024
