"""Deep-memory streaming from the simulated Red Pitaya over TCP: every sample, or a stated gap.

The board's side is observed independently of the driver: a spy on the DDR writer keeps every
sample it stores, by absolute index, so a streamed sample can be checked against what the board
actually wrote there, whatever the ring holds by then.
"""

import itertools
import socket
import statistics
import time

import numpy as np
import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.errors import InstrumentTimeoutError
from hotspin.instruments.redpitaya import RedPitaya, StreamBlock, StreamGap
from hotspin.simulators.clock import SimClock
from hotspin.simulators.lab import LabConfig, SimulatedLab
from hotspin.simulators.redpitaya import SimulatedRedPitaya
from hotspin.simulators.server import SimServer

RING_BYTES = 256 * 1024  # a small region, so a held-back client is lapped quickly
DECIMATION = 64


class WrittenSamples:
    """Every sample the board's DDR writer stored, by absolute index (a spy on `_store`)."""

    def __init__(self, board: SimulatedRedPitaya) -> None:
        self.codes: dict[int, np.ndarray] = {}
        store = board.deep._store

        def spy(first: int, codes: np.ndarray) -> None:
            for k in range(codes.shape[1]):
                self.codes[first + k] = codes[:, k].copy()
            store(first, codes)

        board.deep._store = spy

    def __getitem__(self, index: int) -> np.ndarray:
        return self.codes[index]


@pytest.fixture
def served():
    """(simulated board, driver) over pyvisa-py TCP, on a manual clock the driver's sleep drives."""
    lab = SimulatedLab(LabConfig(seed=11), SimClock(manual=True))
    board = SimulatedRedPitaya(lab, ddr_bytes=RING_BYTES)
    with SimServer({"redpitaya": (board, 0)}) as server:
        pitaya = RedPitaya(
            server.resource("redpitaya"), sleep=lab.clock.sleep, now=lab.clock.now, timeout=5000
        )
        yield board, pitaya
        pitaya.adapter.close()


def assert_as_written(block: StreamBlock, written: WrittenSamples) -> None:
    expected = np.stack([written[i] for i in range(block.first_index, block.end_index)], axis=1)
    np.testing.assert_array_equal(block.codes, expected)


def test_seeded_stream_equals_what_the_board_wrote(served):
    board, pitaya = served
    written = WrittenSamples(board)
    n = 150_000  # 2.3 rings of 65 536 samples per input: the ring wraps twice
    stream = pitaya.stream(decimation=DECIMATION, n_samples=n, block_samples=4096)
    items = list(stream)
    stream.close()
    assert all(isinstance(item, StreamBlock) for item in items)  # nothing lost
    assert items[0].first_index == 0 and items[-1].end_index == n
    for before, after in itertools.pairwise(items):
        assert after.first_index == before.end_index
    for block in items:
        assert_as_written(block, written)
    assert stream.sample_rate_Hz == 125e6 / DECIMATION
    assert stream.ring_samples == RING_BYTES // 4
    assert stream.volts_per_code == (1 / 8192, 1 / 8192)  # LV inputs
    assert pitaya.check_errors() == []
    assert not board.deep.running  # close() stopped the writer


def test_a_lapped_client_records_the_exact_gap_and_correct_samples_after_it(served):
    board, pitaya = served
    written = WrittenSamples(board)
    counts_seen = []  # the writer's count at each Write:Pos? the board answers
    position = board.deep.write_position

    def spy(channel: int) -> int:
        counts_seen.append(board.deep.written())
        return position(channel)

    board.deep.write_position = spy
    block = 4096
    stream = pitaya.stream(decimation=DECIMATION, n_samples=400_000, block_samples=block)
    ring = stream.ring_samples
    items = []
    held_back = False
    for item in stream:
        items.append(item)
        if not held_back and isinstance(item, StreamBlock) and item.end_index > 50_000:
            # The client stalls for 1.5 rings' worth of samples: the writer laps it.
            board.lab.clock.advance(1.5 * ring / stream.sample_rate_Hz)
            held_back = True
            lapped_at = item.end_index
            queries_before = len(counts_seen)
    stream.close()
    gaps = [item for item in items if isinstance(item, StreamGap)]
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap.first_index == lapped_at
    # Back, the reader asks for the pointer and resumes one block inside the oldest sample still
    # in the ring: the gap is what the writer overwrote by then plus that block of room, exactly.
    overwritten = counts_seen[queries_before] - ring - lapped_at
    assert gap.length == overwritten + block
    # Every index is accounted for once, and every delivered sample is what the board wrote.
    cursor = 0
    for item in items:
        assert item.first_index == cursor
        cursor = item.end_index if isinstance(item, StreamBlock) else cursor + item.length
        if isinstance(item, StreamBlock):
            assert_as_written(item, written)
    assert cursor == 400_000
    first_after = next(i for i in items if isinstance(i, StreamBlock) and i.first_index > lapped_at)
    assert first_after.first_index == gap.first_index + gap.length


def test_a_client_lapped_at_every_question_costs_the_board_what_it_reads_not_a_ring(served):
    # A lab whose clock runs far ahead of the link: between two blocks the writer laps the
    # ring three times. The board generates only from the oldest sample still in the ring to
    # the end of each read, not a whole ring per question, and what the client gets is still
    # exactly what the board wrote there.
    board, pitaya = served
    written = WrittenSamples(board)
    block = 4096
    stream = pitaya.stream(decimation=DECIMATION, n_samples=2_000_000, block_samples=block)
    ring = stream.ring_samples
    items = []
    for item in stream:
        items.append(item)
        if isinstance(item, StreamBlock):
            board.lab.clock.advance(3 * ring / stream.sample_rate_Hz)
    stream.close()
    blocks = [item for item in items if isinstance(item, StreamBlock)]
    assert len(blocks) >= 8 and all(b.codes.shape[1] == block for b in blocks[1:])
    for item in blocks:
        assert_as_written(item, written)
    # Generating what the ring holds at each of the four questions per block (two pointer
    # queries, two reads) would store at least a ring per block. Each read generates from the
    # oldest sample in the ring to its own end: the block of room and the block, and for the
    # read the reader finds spoiled, up to where that lands.
    assert len(written.codes) < ring * len(blocks) / 2


@pytest.mark.timeout(60)
def test_a_reader_lapped_at_every_read_reports_the_loss_a_ring_at_a_time(served):
    # A link so slow that the writer laps the ring while each block travels: no read survives.
    # The stream still moves on: it yields the loss as gaps, each at least a ring long and
    # each where the last ended, so its consumer can see the overrun and give up.
    board, pitaya = served
    read = board.deep.read

    def slow_read(channel: int, position: int, size: int) -> np.ndarray:
        codes = read(channel, position, size)
        # 1.3 rings per read: not a whole number of rings per block, or the pointer would
        # seem to stand still (a stopped writer)
        board.lab.clock.advance(1.3 * ring / (125e6 / DECIMATION))
        return codes

    board.deep.read = slow_read
    stream = pitaya.stream(decimation=DECIMATION, block_samples=4096)  # no end of its own
    ring = stream.ring_samples
    items = list(itertools.islice(stream, 4))
    stream.close()
    assert all(isinstance(item, StreamGap) for item in items)
    assert all(item.length >= ring for item in items)
    for before, after in itertools.pairwise(items):
        assert after.first_index == before.first_index + before.length


class TickingClock(SimClock):
    """A manual clock that moves on by ``step_s`` whenever it is read: the board's view of a
    loaded machine, where time passes between any two of its own steps."""

    def __init__(self, step_s: float) -> None:
        super().__init__(manual=True)
        self.step_s = step_s

    def now(self) -> float:
        """Return the time, then let ``step_s`` pass."""
        now = super().now()
        self.advance(self.step_s)
        return now


def test_a_level_trigger_armed_on_a_lapped_ring_stops_where_it_fires():
    # Light on the balanced detector: its shot noise crosses the level trigger. Each look at the
    # clock lets 1.3 rings pass, so the ring has lapped between any two steps of the board, in
    # particular between catching up and arming the trigger.
    lab = SimulatedLab(LabConfig(seed=5), SimClock(manual=True))
    lab.laser.emission_enabled = True
    lab.hwp_angle_deg = lab.config.polarimeter.hwp_zero_deg
    deep = SimulatedRedPitaya(lab, ddr_bytes=RING_BYTES).deep
    ring = RING_BYTES // 4
    deep.decimation = DECIMATION
    delay = ring // 8
    for channel in (1, 2):
        assert deep.set_buffer(channel, deep.region_start + (channel - 1) * 2 * ring, 2 * ring)
        deep.buffers[channel - 1].enabled = True
        deep.buffers[channel - 1].trigger_delay = delay
    deep.start()
    lab.clock = TickingClock(1.3 * ring * DECIMATION / 125e6)
    deep.arm_trigger(0, 1, 0, 41)  # CH1_PE at 0 V, 5 mV of hysteresis
    assert deep.filled(1)
    trigger = deep.buffers[0].trigger_index
    assert deep.written() == trigger + 1 + delay  # the writer stopped Trig:Dly after it
    position = deep.trigger_position(1)
    assert position == trigger % ring
    before, at = deep.read(1, position - 1, 2)
    assert before < 0 <= at  # the rising edge is where the ring says it is


def test_stream_refuses_bad_settings_before_sending(served):
    _, pitaya = served
    with pytest.raises(ParameterError, match="decimation = 12"):
        pitaya.stream(decimation=12)
    with pytest.raises(ParameterError, match="block_samples"):
        pitaya.stream(block_samples=40_000)  # more than half of a 65 536-sample ring
    assert pitaya.check_errors() == []


def test_nagle_is_off_and_a_query_after_a_write_is_fast():
    """Nagle on, a query written right after a command waits for the delayed ACK (≈ 40 ms)."""
    lab = SimulatedLab(LabConfig(seed=1), SimClock(manual=True))
    with SimServer({"redpitaya": (SimulatedRedPitaya(lab), 0)}) as server:
        pitaya = RedPitaya(server.resource("redpitaya"), timeout=2000)
        assert pitaya.tcp_nodelay
        session = pitaya.adapter.connection.visalib.sessions[pitaya.adapter.connection.session]
        assert session.interface.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        durations = []
        for _ in range(21):
            started = time.perf_counter()
            pitaya.write("ACQ:DEC 64")
            assert pitaya.ask("ACQ:DEC?") == "64"
            durations.append(time.perf_counter() - started)
        pitaya.adapter.close()
    # A median over many exchanges, with a bound eight times below the stall: a busy machine
    # slows a few exchanges, not the middle one.
    assert statistics.median(durations) < 5e-3


def test_a_writer_stopped_behind_the_streams_back_is_a_timeout_naming_the_board(served):
    board, pitaya = served
    stream = pitaya.stream(decimation=DECIMATION, block_samples=4096)  # no end of its own
    blocks = iter(stream)
    assert isinstance(next(blocks), StreamBlock)
    board.deep.stop()  # the writer stops (a reset, another client's ACQ:STOP)
    with pytest.raises(InstrumentTimeoutError, match=r"^Red Pitaya .*write pointer stood at"):
        for _ in blocks:
            pass
    stream.close()
