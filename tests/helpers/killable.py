"""Procedures in child processes that a test can signal or SIGKILL at any moment.

The children come from one forkserver that has imported hotspin once, so each costs a fork, not
a fresh interpreter that imports scipy, h5py and pymeasure (about 1.3 s of CPU each on this
machine). They are real processes all the same: their own memory, their own run file, their own
signal handlers, killed by SIGKILL with nothing flushed on the way out.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(
    ["hotspin.instruments.station", "hotspin.procedures.registry", "hotspin.procedures.base"]
)


@dataclass(frozen=True)
class Child:
    """What the child runs: the runs before (warm-up, balance: not reported) and the procedure.

    ``station_file`` None is the embedded lab, new and cold unless ``persist`` (then the kept
    lab of the test's HOTSPIN_STATE_DIR). ``hold_at_step``: after that many recorded steps the
    run waits (inside its step, instruments energised) until the test signals or kills it.
    ``interrupts``: Ctrl-C raises KeyboardInterrupt and SIGTERM and SIGHUP end the run as the
    command line's do (`terminating_interrupts`). Each progress report is "progress: " and the
    run's message.
    """

    name: str
    values: dict
    out: str
    station_file: str | None = None
    persist: bool = False
    before: tuple[tuple[str, dict], ...] = ()
    hold_at_step: int | None = None
    interrupts: bool = False
    checkpoint_every_segment: bool = False  # the running spectrum flushed at every segment


def _run(environment: dict[str, str], child: Child, report: Connection, hold: Connection):
    """Run the child's procedures on a clock that moves when the run waits, sending each
    progress message and recorded step."""
    os.environ.update(environment)
    import contextlib

    from hotspin.instruments.interrupts import terminating_interrupts
    from hotspin.instruments.station import Station
    from hotspin.instruments.station_config import StationConfig
    from hotspin.procedures.base import run_procedure
    from hotspin.procedures.registry import PROCEDURES

    steps = 0

    def on_step(row: dict) -> None:
        nonlocal steps
        steps += 1
        report.send("step")  # sent after the step is flushed
        if steps == child.hold_at_step:
            hold.recv()  # nobody sends: the test signals or kills the child here

    if child.checkpoint_every_segment:
        from hotspin.procedures.recorder import RunFile

        RunFile.checkpoint_due = lambda self, interval_s=1.0: True
    if child.interrupts:  # as from a terminal, even where the test runner ignores Ctrl-C
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config = StationConfig.load(child.station_file)
    try:
        with (
            terminating_interrupts() if child.interrupts else contextlib.nullcontext(),
            Station(config, persist=child.persist, manual_clock=True) as station,
        ):
            station.configure()
            for index, (name, values) in enumerate(child.before):
                procedure = PROCEDURES[name].from_values(values)
                run_procedure(procedure, station, f"{child.out}-before-{index}.h5")
            report.send("started")
            run_procedure(
                PROCEDURES[child.name].from_values(child.values),
                station,
                child.out,
                progress=lambda percent, message: report.send(f"progress: {message}"),
                on_step=on_step,
            )
    except BaseException as error:  # a run that fails before its kill is the test's failure
        report.send(f"failed: {type(error).__name__}: {error}")
        raise
    report.send("done")


def start_child(child: Child) -> tuple[BaseProcess, Connection]:
    """Start ``child`` in a process of its own; return it and the end its reports arrive at."""
    receive, send = _CONTEXT.Pipe(duplex=False)
    held, hold = _CONTEXT.Pipe(duplex=False)
    environment = {k: v for k, v in os.environ.items() if k.startswith("HOTSPIN_")}
    process = _CONTEXT.Process(target=_run, args=(environment, child, send, held), daemon=True)
    process.start()
    send.close()
    held.close()
    process.hold = hold  # kept open while the child lives: closing it would release the hold
    return process, receive


def start_procedure(station_file, name: str, values: dict, out) -> tuple[BaseProcess, Connection]:
    """Start ``name`` in a child on the persisted lab of this test's HOTSPIN_STATE_DIR."""
    return start_child(Child(name, values, str(out), str(station_file), persist=True))


def next_report(reports: Connection) -> str:
    """Return the child's next report ("started", "progress: …", "step" or "done"); a failed run
    fails here, with the child's error, instead of looking like a run that ended early."""
    message = reports.recv()
    assert not message.startswith("failed"), f"the child's run failed: {message}"
    return message


def wait_for_steps(reports: Connection, steps: int, timeout_s: float = 120.0) -> None:
    """Read the child's reports until it has recorded ``steps`` steps."""
    seen = 0
    while seen < steps:
        assert reports.poll(timeout_s), f"no report within {timeout_s} s after {seen} steps"
        try:
            seen += next_report(reports) == "step"
        except EOFError:
            raise AssertionError(f"the child ended after {seen} of {steps} steps") from None
