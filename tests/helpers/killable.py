"""Procedures in child processes that a test can SIGKILL at any moment.

The children come from one forkserver that has imported hotspin once, so each costs a fork, not
a fresh interpreter that imports scipy, h5py and pymeasure (about a second each on this
machine). They are real processes all the same: their own memory, their own run file, killed by
SIGKILL with nothing flushed on the way out.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(
    ["hotspin.instruments.station", "hotspin.procedures.registry", "hotspin.procedures.base"]
)


def _run(environment: dict[str, str], arguments: tuple[str, str, str, str], report: Connection):
    """Run one procedure on a persisted lab (its clock moves when the run waits), sending each
    progress message and recorded step."""
    os.environ.update(environment)
    from hotspin.instruments.station import Station
    from hotspin.instruments.station_config import StationConfig
    from hotspin.procedures.base import run_procedure
    from hotspin.procedures.registry import PROCEDURES

    station_file, name, values, out = arguments
    try:
        with Station(StationConfig.load(station_file), persist=True, manual_clock=True) as station:
            station.configure()
            run_procedure(
                PROCEDURES[name].from_values(json.loads(values)),
                station,
                out,
                progress=lambda percent, message: report.send("progress"),
                on_step=lambda row: report.send("step"),  # sent after the step is flushed
            )
    except BaseException as error:  # a run that fails before its kill is the test's failure
        report.send(f"failed: {type(error).__name__}: {error}")
        raise
    report.send("done")


def start_procedure(station_file, name: str, values: dict, out) -> tuple[BaseProcess, Connection]:
    """Start ``name`` in a child on the persisted lab of this test's HOTSPIN_STATE_DIR."""
    receive, send = _CONTEXT.Pipe(duplex=False)
    environment = {k: v for k, v in os.environ.items() if k.startswith("HOTSPIN_")}
    arguments = (str(station_file), name, json.dumps(values), str(out))
    child = _CONTEXT.Process(target=_run, args=(environment, arguments, send), daemon=True)
    child.start()
    send.close()
    return child, receive


def next_report(reports: Connection) -> str:
    """Return the child's next report ("progress", "step" or "done"); a failed run fails here,
    with the child's error, instead of looking like a run that ended early."""
    message = reports.recv()
    assert not message.startswith("failed"), f"the child's run failed: {message}"
    return message
