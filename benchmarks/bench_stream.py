"""Gap-free streaming from the simulated Red Pitaya's deep memory over TCP, into a live run file.

The simulated board serves in a child process on a loopback port (`SimServer`, what
`hotspin sim serve` runs), its lab on a clock at wall speed, so its DDR writer writes as fast as
a board would. This process is the client: `RedPitaya.stream` over pyvisa-py, every block and
gap appended to a `ContinuousRecord` in a live (SWMR) HDF5 file, as the `record` procedure does.
For each decimation it prints the samples recorded ÷ the samples the board wrote (every index
is either recorded or in a gap), the number of gaps, the client's CPU time per wall second and
the server process's CPU per wall second, and the client's peak memory (flat: blocks are
appended and dropped).

With ``--in-process`` the same runs follow with the board in this process (its adapter in
place of TCP; board and client then share one interpreter). Then, in this process, the board's
generation rate: simulated seconds of both inputs written
into the ring per wall second and per CPU second (one core to itself) when a client polls it
every 10 ms of signal (nothing skipped).

Run: .venv/bin/python benchmarks/bench_stream.py            # 60 s at each decimation
     .venv/bin/python benchmarks/bench_stream.py --full     # 600 s at decimation 64
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import resource
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from hotspin.instruments.redpitaya import RedPitaya, StreamBlock
from hotspin.procedures.recorder import RunFile

TARGET_FRACTION = 0.9999
TARGET_GENERATION = 2.0  # × real time at decimation 64


def serve(pipe: Connection) -> None:
    """Run the simulated lab and board (wall-speed clock) until told to stop; send the port."""
    from hotspin.simulators.lab import LabConfig, SimulatedLab
    from hotspin.simulators.redpitaya import SimulatedRedPitaya
    from hotspin.simulators.server import SimServer

    lab = SimulatedLab(LabConfig(seed=1))
    lab.laser.emission_enabled = True
    lab.hwp_angle_deg = lab.config.polarimeter.hwp_zero_deg
    with SimServer({"redpitaya": (SimulatedRedPitaya(lab), 0)}) as server:
        pipe.send(server.port("redpitaya"))
        pipe.recv()
        pipe.send(time.process_time())


def in_process_board() -> RedPitaya:
    """Return the driver on a simulated board in this process (wall-speed clock, no TCP)."""
    from hotspin.simulators.inprocess import InProcessAdapter
    from hotspin.simulators.lab import LabConfig, SimulatedLab
    from hotspin.simulators.redpitaya import SimulatedRedPitaya

    lab = SimulatedLab(LabConfig(seed=1))
    lab.laser.emission_enabled = True
    lab.hwp_angle_deg = lab.config.polarimeter.hwp_zero_deg
    return RedPitaya(InProcessAdapter(SimulatedRedPitaya(lab)), now=lab.clock.now)


def stream_once(pitaya: RedPitaya, decimation: int, duration_s: float, directory: Path) -> dict:
    """Stream ``duration_s`` at ``decimation`` into a live run file; return the figures."""
    n = round(duration_s * 125e6 / decimation)
    path = directory / f"stream_{decimation}.h5"
    with RunFile(path, "record", {"decimation": decimation}, live=True) as run:
        stream = pitaya.stream(decimation=decimation, n_samples=n)
        record = run.create_record(
            "polarimeter",
            {"v_diff": stream.volts_per_code[0], "v_sum": stream.volts_per_code[1]},
            stream.sample_rate_Hz,
            decimation,
            stream.start_time_s,
        )
        run.start_swmr()
        wall, cpu = time.perf_counter(), time.process_time()
        gaps = 0
        for item in stream:
            if isinstance(item, StreamBlock):
                record.append(item.first_index, item.codes)
            else:
                record.add_gap(item.first_index, item.length)
                gaps += 1
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stream.close()
        record.flush()
    size = path.stat().st_size
    path.unlink()
    return {
        "decimation": decimation,
        "written": n,
        "recorded": record.stored,
        "fraction": record.stored / n,
        "gaps": gaps,
        "client_cpu": cpu / wall,
        "wall_s": wall,
        "bytes_per_pair": size / max(record.stored, 1),
    }


def generation_rate(decimation: int, seconds: float = 10.0) -> tuple[float, float]:
    """Return simulated seconds generated per wall and per CPU second, polled every 10 ms.

    The CPU figure is what one core to itself would give: on a machine shared with other work
    the wall figure is the share of a core the process got times that.
    """
    from hotspin.simulators.clock import SimClock
    from hotspin.simulators.lab import LabConfig, SimulatedLab
    from hotspin.simulators.redpitaya import SimulatedRedPitaya

    lab = SimulatedLab(LabConfig(seed=1), SimClock(manual=True))
    lab.laser.emission_enabled = True
    deep = SimulatedRedPitaya(lab).deep
    half = deep.region_bytes // 2
    for channel, address in ((1, deep.region_start), (2, deep.region_start + half)):
        deep.set_buffer(channel, address, half)
        deep.buffers[channel - 1].enabled = True
    deep.decimation = decimation
    deep.start()
    start, cpu, simulated = time.perf_counter(), time.process_time(), 0.0
    while time.perf_counter() - start < seconds:
        lab.clock.advance(0.01)
        simulated += 0.01
        deep.catch_up()
    return simulated / (time.perf_counter() - start), simulated / (time.process_time() - cpu)


def main() -> None:
    """Stream at each decimation over TCP, then time the board's generation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--full", action="store_true", help="600 s at decimation 64 only")
    parser.add_argument("--decimations", type=int, nargs="+", default=[64, 32, 16, 8])
    parser.add_argument(
        "--in-process", action="store_true", help="the board in this process, no TCP, as well"
    )
    args = parser.parse_args()
    runs = [(64, 600.0)] if args.full else [(d, args.duration_s) for d in args.decimations]
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=serve, args=(theirs,), daemon=True)
    server.start()
    port = ours.recv()
    results = []
    with tempfile.TemporaryDirectory() as directory:
        server_wall = time.perf_counter()
        pitaya = RedPitaya(f"TCPIP::127.0.0.1::{port}::SOCKET", timeout=10_000)
        boards = [("TCP", pitaya)] + (
            [("in-process", in_process_board())] if args.in_process else []
        )
        for (link, board), (decimation, duration) in itertools.product(boards, runs):
            result = stream_once(board, decimation, duration, Path(directory))
            results.append(result)
            print(
                f"{link}: decimation {decimation:5d} ({125e6 / decimation / 1e6:6.3f} MS/s x 2): "
                f"{duration:g} s, recorded/written {result['recorded']}/{result['written']} "
                f"= {result['fraction']:.6f} (target >= {TARGET_FRACTION}), "
                f"gaps {result['gaps']}, client CPU {result['client_cpu']:.2f} s/s, "
                f"file {result['bytes_per_pair']:.2f} B per sample pair",
                flush=True,
            )
        pitaya.adapter.close()
        ours.send("stop")
        server_cpu = ours.recv()
        server_wall = time.perf_counter() - server_wall
    server.join(timeout=10)
    print(f"server process CPU over all runs: {server_cpu / server_wall:.2f} s/s")
    peak_MiB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"client peak memory (max RSS) after all runs: {peak_MiB:.0f} MiB")
    for decimation in (64, 32):
        wall, cpu = generation_rate(decimation)
        print(
            f"board generation at decimation {decimation}: {wall:.2f} x real time per wall "
            f"second, {cpu:.2f} per CPU second"
            + (f" (target >= {TARGET_GENERATION} on one core)" if decimation == 64 else "")
        )


if __name__ == "__main__":
    main()
