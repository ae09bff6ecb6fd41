"""Faults: injected into the simulated instruments, survived by the links, the procedures and the
files — the fault matrix, watchdogs, concurrent clients and shared instrument locks."""

import select
import socket
import threading
import types

import h5py
import numpy as np
import pytest
from helpers import SMALL
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.errors import InstrumentTimeoutError, LinkLostError
from hotspin.instruments.keithley6221 import Keithley6221
from hotspin.instruments.lakeshore336 import LakeShore336
from hotspin.instruments.redpitaya import RedPitaya
from hotspin.instruments.resilience import ResilientLink, bounded_clear
from hotspin.instruments.station import Station
from hotspin.instruments.station_config import StationConfig
from hotspin.procedures.base import run_procedure
from hotspin.procedures.recorder import RunAborted
from hotspin.procedures.registry import PROCEDURES
from hotspin.simulators.clock import SimClock
from hotspin.simulators.inprocess import InProcessAdapter
from hotspin.simulators.instrument_base import FAULT_KINDS, Fault, FaultInjector, corrupt
from hotspin.simulators.keithley6221 import SimulatedKeithley6221
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.lakeshore336 import SimulatedLakeShore336
from hotspin.simulators.redpitaya import SimulatedRedPitaya
from hotspin.simulators.server import SimServer
from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError


def test_fault_injector_counts_commands_and_stalls_for_a_duration():
    clock = SimClock(manual=True)
    faults = FaultInjector(clock.now)
    faults.add(Fault("corrupt", after=2, count=2))
    kinds = [getattr(faults.next(), "kind", None) for _ in range(5)]
    assert kinds == [None, None, "corrupt", "corrupt", None]
    faults.add(Fault("stall", duration_s=0.05))
    assert faults.next().kind == "stall"
    assert faults.next().kind == "stall"
    clock.advance(0.04)
    assert faults.next().kind == "stall"  # a stall lasts its duration on the lab's clock
    clock.advance(0.02)
    assert faults.next() is None
    assert faults.committed == ["corrupt", "corrupt", "stall"]


def test_corrupt_garbles_the_reply_and_keeps_its_end():
    assert corrupt(b"+450.000;000\r\n", b"\r\n") == b"????????;000\r\n"
    assert corrupt(b"", b"\n") == b""


def test_bad_fault_settings_are_named():
    with pytest.raises(ParameterError, match="fault kind = 'meteor'"):
        Fault("meteor")
    with pytest.raises(ParameterError, match="unknown fault setting"):
        Fault.from_mapping({"kind": "drop", "when": 3})


def connect(transport, sim, driver, server=None):
    """Return a link to ``sim`` through ``driver`` in-process or over TCP, short timeouts."""
    if transport == "inprocess":
        return ResilientLink("dut", lambda: driver(InProcessAdapter(sim), timeout=300))
    resource = server.resource(sim.name)
    return ResilientLink("dut", lambda: driver(resource, timeout=300, visa_library="@py"))


@pytest.fixture(params=["inprocess", "tcp"])
def pair(request):
    lab = SimulatedLab(clock=SimClock(manual=True))
    sims = {"heater": SimulatedLakeShore336(lab, "heater"),
            "coil": SimulatedKeithley6221(lab, "coil", 0)}  # fmt: skip
    server = None
    if request.param == "tcp":
        server = SimServer({name: (sim, 0) for name, sim in sims.items()}).start()
    yield request.param, sims, server
    if server is not None:
        server.stop()


@pytest.mark.parametrize("kind", ["drop", "delay", "corrupt", "error"])
def test_each_transient_fault_is_survived_by_the_link(pair, kind):
    transport, sims, server = pair
    heater = connect(transport, sims["heater"], LakeShore336, server)
    coil = connect(transport, sims["coil"], Keithley6221, server)
    for sim in sims.values():
        sim.faults.add(Fault(kind, after=1, delay_s=0.05))
    for _ in range(3):
        assert heater.call(lambda d: float(d.input_A.kelvin)) == pytest.approx(295.0, abs=0.01)
        coil.call(lambda d: setattr(d, "source_current", 1e-3))
        assert coil.call(lambda d: float(d.source_current)) == pytest.approx(1e-3)
    if kind != "delay":  # a delay shorter than the timeout is no fault to the link
        assert heater.faults_survived and coil.faults_survived
    if kind == "drop":  # a closed connection is named as lost at once, not waited out
        assert heater.faults_survived == coil.faults_survived == ["LinkLostError"]
    assert sims["heater"].faults.committed == [kind]


@pytest.mark.timeout(60)  # three timeouts and reconnections, never a hang
def test_a_hung_instrument_raises_a_timeout_after_the_retries_and_never_hangs(pair):
    transport, sims, server = pair
    heater = connect(transport, sims["heater"], LakeShore336, server)
    sims["heater"].faults.add(Fault("stall"))
    with pytest.raises(InstrumentTimeoutError):
        heater.call(lambda d: float(d.input_A.kelvin))
    sims["heater"].faults.clear()
    assert heater.call(lambda d: float(d.input_A.kelvin)) == pytest.approx(295.0, abs=0.01)


# --- a socket the peer closed: a lost link, never a hang (pyvisa-py's clear loops on it) ------
@pytest.mark.timeout(60)
def test_a_digitiser_socket_closed_by_the_peer_is_a_lost_link_that_names_it():
    lab = SimulatedLab(clock=SimClock(manual=True))
    sim = SimulatedRedPitaya(lab, "digitiser")
    with SimServer({"digitiser": (sim, 0)}) as server:
        resource = server.resource("digitiser")
        link = ResilientLink(
            "digitiser",
            lambda: RedPitaya(resource, timeout=300, visa_library="@py"),
            resource=resource,
        )
        assert link.call(lambda d: d.decimation) == 1
        sim.faults.add(Fault("drop"))  # the board closes the connection once: reconnected
        assert link.call(lambda d: d.decimation) == 1
        assert link.faults_survived == ["LinkLostError"]
        sim.faults.add(Fault("drop", count=100))  # it closes every connection: given up, named
        with pytest.raises(LinkLostError) as lost:
            link.call(lambda d: d.decimation)
    message = str(lost.value)
    assert message.startswith(f"Red Pitaya STEMlab 125-14 ({resource}): connection lost")
    assert "Error" not in message  # the instrument, not a Python class


def test_closing_a_stream_on_a_link_closed_after_a_fault_is_a_lost_link_not_a_crash():
    # A record that restarts its stream after a fault disconnects the link and then closes the
    # old stream, whose stop commands meet a closed session.
    lab = SimulatedLab(clock=SimClock(manual=True))
    sim = SimulatedRedPitaya(lab, "digitiser")
    with SimServer({"digitiser": (sim, 0)}) as server:
        board = RedPitaya(
            server.resource("digitiser"), timeout=300, visa_library="@py",
            sleep=lab.clock.sleep, now=lab.clock.now,
        )  # fmt: skip
        stream = board.stream(decimation=1024, n_samples=1000)
        board.adapter.close()
        with pytest.raises(LinkLostError, match=r"^Red Pitaya STEMlab 125-14.*is closed"):
            stream.close()


def _session(connection, timeout_s):
    """The parts of a pyvisa-py raw-socket session `bounded_clear` works on."""
    return types.SimpleNamespace(
        _pending_buffer=bytearray(b"stale"), interface=connection, timeout=timeout_s
    )


@pytest.mark.timeout(30)
def test_bounded_clear_reports_a_closed_socket_and_stops_at_the_timeout():
    ours, peer = socket.socketpair()
    peer.sendall(b"late reply\n")
    session = _session(ours, 0.2)
    assert bounded_clear(session) == StatusCode.success  # drained, then quiet
    assert session._pending_buffer == b"" and not _readable(ours)
    peer.close()
    with pytest.raises(VisaIOError) as closed:
        bounded_clear(session)
    assert closed.value.error_code == StatusCode.error_connection_lost
    ours.close()
    # A peer that never stops talking: discarding ends at the session's timeout.
    ours, peer = socket.socketpair()
    stop = threading.Event()

    def chatter():
        while not stop.is_set():
            try:
                peer.sendall(b"x" * 1024)
            except OSError:
                return

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        assert bounded_clear(_session(ours, 0.3)) == StatusCode.success
    finally:
        stop.set()
        ours.close()
        thread.join(timeout=10)
        peer.close()


def _readable(connection):
    return bool(select.select([connection], [], [], 0)[0])


# --- the fault matrix -------------------------------------------------------------------------
# Every run of the matrix plans its faults on every instrument of the station as the procedure's
# measurement starts (after the readiness probe and the start snapshot, which tolerate a failing
# instrument anyway): the four transient kinds spaced by more commands than one exchange takes,
# so that each exchange meets at most one, in one run; a stall in another. A stall hangs an
# instrument for 2.5 simulated seconds: longer than its link's three tries in-process (where a
# read of nothing times out at once: the run aborts), shorter than one TCP timeout (600 ms of
# wall time, 300 simulated s: survived; long enough for the digitiser to
# compute a record on a busy machine), and always shorter than the station's patience for a
# safe state (it is reached). In-process the station runs on the manual clock (time moves when
# the code waits); over TCP, where the sockets' timeouts are wall time, at 500 times wall time,
# so the patience is set long enough for a slow pass over seven instruments on a busy machine.
TRANSIENT = {"drop": 2, "delay": 10, "corrupt": 18, "error": 26}  # kind: commands before it
STALL = {"stall": 2}
INSTRUMENTS = ("heater", "laser", "mount", "digitiser", "coil_x", "coil_y", "coil_z")
# In-process the matrix runs every procedure. Over TCP what differs is the link (timeouts on the
# socket, reconnects, the deep-memory stream), not the procedure: four procedures that together
# meet every kind on every instrument, the stream among them, keep the suite within its time.
TCP_PROCEDURES = ("warmup", "balance", "field_sweep", "record")


@pytest.fixture(scope="module", params=["inprocess", "tcp"])
def faulty_station(request, tmp_path_factory):
    config = StationConfig.from_mapping(
        {
            "station": {"timeout_ms": 600, "retries": 2, "safe_state_patience_s": 600.0},
            "simulation": {"clock_speed": 500.0, "seed": 2, "transport": request.param},
        }
    )
    station = Station(config, manual_clock=request.param == "inprocess")
    station.configure()
    directory = tmp_path_factory.mktemp(f"matrix-{request.param}")
    for name, values in (("warmup", {"dwell_s": 5.0}), ("balance", {})):
        run_procedure(PROCEDURES[name].from_values(values), station, directory / f"{name}.h5")
    yield station, directory
    station.close()


def assert_safe(station):
    lab = station.lab
    assert np.all(lab.coils.currents_A == 0.0), "coils not ramped to zero"
    for name in ("coil_x", "coil_y", "coil_z"):
        assert not station.links[name].call(lambda k: k.source_enabled), f"{name} output on"
    assert station.heater.heater_range == "high"  # the station holds the heater


def assert_steps_kept(path, steps_recorded):
    """Every step the procedure recorded is in the file, all columns alike."""
    with h5py.File(path, "r") as f:
        if "results" not in f:
            assert steps_recorded == 0
            return
        lengths = {column.shape[0] for column in f["results"].values()}
        assert lengths == {steps_recorded}, "a recorded step is missing, or columns differ"
        if "spectra" in f:
            assert f["spectra/psd"].shape[0] <= steps_recorded


def run_with_faults(station, procedure_name, faults, path):
    """Run a procedure with ``faults`` ({kind: after}) planned on every instrument as its
    measurement starts; return (status, steps recorded, {(kind, instrument)} committed)."""
    procedure = PROCEDURES[procedure_name].from_values(SMALL[procedure_name])
    sims = station.simulated_instruments
    measure = procedure.execute

    def execute_under_faults():
        for name in INSTRUMENTS:
            for kind, after in faults.items():
                sims[name].faults.add(Fault(kind, after=after, delay_s=0.05, duration_s=2.5))
        measure()

    procedure.execute = execute_under_faults
    steps = []
    before = {name: len(sims[name].faults.committed) for name in INSTRUMENTS}
    try:
        run_procedure(procedure, station, path, on_step=steps.append)
    except RunAborted:
        pass
    finally:
        for name in INSTRUMENTS:
            sims[name].faults.clear()
    committed = {
        (kind, name) for name in INSTRUMENTS for kind in sims[name].faults.committed[before[name] :]
    }
    with h5py.File(path, "r") as f:
        status = str(f.attrs["status"])
        assert "safe_state_failures" not in f.attrs, (procedure_name, dict(f.attrs))
    return status, len(steps), committed


@pytest.mark.timeout(900)  # every run is bounded by timeouts; this bounds them all
def test_fault_matrix(faulty_station, capsys):
    """Every fault kind on every instrument, in every procedure: survived, safe, nothing lost."""
    station, directory = faulty_station
    transport = station.config.simulation.transport
    procedures = list(PROCEDURES) if transport == "inprocess" else TCP_PROCEDURES
    table, tried = {}, set()
    for procedure in procedures:
        row = []
        for label, faults in (("transient", TRANSIENT), ("stall", STALL)):
            # What each run expects to find: an aborted run may have left the plate or the
            # laser elsewhere (a run stopped half way is not expected to tidy those).
            station.laser.current_A = 0.12
            station.polarimeter.plate_angle_deg = station.polarimeter.balanced_angle_deg
            station.heater.setpoint_K = 450.0
            path = directory / f"{procedure}-{label}.h5"
            status, steps, committed = run_with_faults(station, procedure, faults, path)
            assert status in ("completed", "aborted"), (procedure, label, status)
            if label == "transient":
                assert status == "completed", (procedure, label)
            assert_safe(station)
            assert_steps_kept(path, steps)
            tried |= {(procedure, kind, name) for kind, name in committed}
            row.append(f"{status} ({len(committed)} faults)")
        table[procedure] = row
    # Each kind struck each instrument in some procedure; every run met faults (a procedure
    # that sends an instrument fewer commands than a fault waits for does not meet that one).
    kinds = (*TRANSIENT, *STALL)
    assert sorted(kinds) == sorted(FAULT_KINDS)
    assert {(k, n) for _, k, n in tried} == {(k, n) for k in kinds for n in INSTRUMENTS}
    for procedure in procedures:
        met = {k for p, k, _ in tried if p == procedure}
        assert {"drop", "stall"} <= met, (procedure, met)
    with capsys.disabled():
        print(f"\nfault matrix over {transport}: how each run ended, instruments safe, steps kept")
        print(f"{'procedure':<18}{'transient kinds':>28}{'stall':>28}")
        for procedure, row in table.items():
            print(f"{procedure:<18}" + "".join(f"{cell:>28}" for cell in row))
        print(
            f"faults survived / tried over {transport} (procedure x kind x instrument): "
            f"{len(tried)}/{len(tried)} of {len(procedures) * len(kinds) * len(INSTRUMENTS)}"
        )


def test_watchdog_pauses_on_an_open_interlock_and_resumes(faulty_station, tmp_path):
    station, _ = faulty_station
    lab = station.lab

    procedure = PROCEDURES["field_sweep"].from_values(SMALL["field_sweep"])
    recorded, opened = procedure.event, []

    def open_once(row):
        if not opened:  # after the first step someone opens the interlock
            opened.append(row)
            lab.laser.interlock_closed = False

    def close_when_paused(kind, message):
        recorded(kind, message)
        if kind == "paused":  # and closes it while the run waits (its next check resumes)
            lab.laser.interlock_closed = True

    procedure.event = close_when_paused
    path = tmp_path / "paused.h5"
    run_procedure(procedure, station, path, on_step=open_once)
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "completed"
        kinds = [k.decode() if isinstance(k, bytes) else k for k in f["events/kind"][...]]
        assert "paused" in kinds and "resumed" in kinds
        messages = [m.decode() if isinstance(m, bytes) else m for m in f["events/message"][...]]
        assert any("interlock is open" in m for m in messages)


def test_watchdog_aborts_when_the_cell_stays_out_of_its_band(tmp_path):
    config = StationConfig.from_mapping(
        {
            "station": {"watchdog_timeout_s": 20.0},
            "heater": {"watchdog_band_K": 1.0},
        }
    )
    with Station(config, manual_clock=True) as station:
        station.configure()
        # Warm enough for a spectrum, but cooling far outside the band of its setpoint.
        station.lab.oven.temperature_K = 420.0
        station.polarimeter.plate_angle_deg = station.lab.config.polarimeter.hwp_zero_deg
        station.heater.setpoint_K = 450.0
        station.heater.heater_range = "off"
        procedure = PROCEDURES["spin_noise"].from_values({"averages": 2})
        with pytest.raises(RunAborted, match="watchdog"):
            run_procedure(procedure, station, tmp_path / "cold.h5")
    with h5py.File(tmp_path / "cold.h5", "r") as f:
        assert f.attrs["status"] == "aborted"
        assert "watchdog" in f.attrs["abort_reason"]
        kinds = [k.decode() if isinstance(k, bytes) else k for k in f["events/kind"][...]]
        assert kinds == ["paused", "aborted"]


def test_station_file_faults_are_committed(tmp_path):
    config = StationConfig.from_mapping(
        {"simulation": {"faults": {"heater": [{"kind": "corrupt", "after": 2}]}}}
    )
    with Station(config) as station:
        for _ in range(4):
            assert station.heater.temperature_K == pytest.approx(295.0, abs=0.1)
        assert station.simulated_instruments["heater"].faults.committed == ["corrupt"]
        assert station.links["heater"].reconnections == 1
    with pytest.raises(ParameterError, match=r"simulation\.faults\.oven: no such instrument"):
        Station(StationConfig.from_mapping({"simulation": {"faults": {"oven": []}}}))
    with pytest.raises(ParameterError, match="fault kind = 'fire'"):
        Station(
            StationConfig.from_mapping({"simulation": {"faults": {"heater": {"kind": "fire"}}}})
        )


def test_several_clients_hammer_the_server_at_once():
    lab = SimulatedLab(clock=SimClock(manual=True))
    sims = {"heater": SimulatedLakeShore336(lab, "heater"),
            "coil": SimulatedKeithley6221(lab, "coil", 1)}  # fmt: skip
    errors, counts = [], []
    with SimServer({name: (sim, 0) for name, sim in sims.items()}) as server:

        def client(index):
            try:
                heater = LakeShore336(server.resource("heater"), visa_library="@py")
                coil = Keithley6221(server.resource("coil"), visa_library="@py")
                for _ in range(40):
                    assert heater.input_A.kelvin == pytest.approx(295.0, abs=0.01)
                    assert coil.id.startswith("KEITHLEY INSTRUMENTS")
                counts.append(index)
                heater.adapter.close()
                coil.adapter.close()
            except Exception as error:  # reported below, with the thread's number
                errors.append((index, error))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    assert sorted(counts) == list(range(6))


def test_the_monitor_and_a_procedure_share_each_instrument_without_interleaving(tmp_path):
    with Station.from_file(None, manual_clock=True) as station:
        station.configure()
        stop, readings, failures = threading.Event(), [], []

        def monitor():
            while not stop.is_set():
                try:
                    readings.append(station.heater.temperature_K)
                    station.coils.currents_A  # noqa: B018 (a reading, as the monitor does)
                    station.laser.emission_enabled  # noqa: B018
                except Exception as error:
                    failures.append(error)

        thread = threading.Thread(target=monitor)
        thread.start()
        try:
            procedure = PROCEDURES["warmup"].from_values(
                {"target_temperature_K": 320.0, "dwell_s": 5.0}
            )
            run_procedure(procedure, station, tmp_path / "shared.h5")
        finally:
            stop.set()
            thread.join(timeout=30)
        assert failures == []
        assert len(readings) > 20
        for link in station.links.values():
            assert link.reconnections == 0  # no garbled exchange ever needed a repair
