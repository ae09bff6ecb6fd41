"""The `hotspin` command line: headless runs, the simulator, analysis and the GUI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hotspin.procedures import __version__

# Every command imports its modules when it runs: `hotspin --help`, `--version` and `list` stay
# fast (`list` prints the procedure catalogue, cached by hotspin.catalogue).


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotspin",
        description="Control, acquisition and simulation for a hot-vapour 87Rb spin-noise "
        "magnetometer.",
    )
    parser.add_argument("--version", action="version", version=f"hotspin {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("list", help="list every procedure with its parameters, units and limits")

    simulate = commands.add_parser(
        "simulate",
        help="write a synthetic polarimeter record with its truth to an HDF5 file",
        description="Write a synthetic polarimeter record (volts and rotation angle) drawn "
        "exactly from the two-manifold spin model, with a group 'truth' of every parameter.",
    )
    simulate.add_argument("--duration-s", type=float, required=True, help="record length in s")
    simulate.add_argument("--sample-rate-Hz", type=float, required=True, help="sample rate in Hz")
    simulate.add_argument("--out", required=True, help="HDF5 file to write (must not exist)")
    _add_settings(simulate, "change a setting (see 'hotspin list'); repeat for several")
    sim = commands.add_parser("sim", help="the simulated lab")
    sim_commands = sim.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")
    serve = sim_commands.add_parser(
        "serve",
        help="serve every simulated instrument on 127.0.0.1 and print its VISA resource",
        description="Serve each simulated instrument of a (simulated) station file on its "
        "loopback port, answering its real command set, until Ctrl-C.",
    )
    _add_station(serve)
    serve.add_argument(
        "--client-station", metavar="FILE",
        help="also write the station file that reaches the served lab over TCP, for "
        "'hotspin run/gui --station FILE': one lab that keeps its state between runs",
    )  # fmt: skip
    serve.add_argument(
        "--port-base", type=int, metavar="N",
        help="serve every instrument on ports N, N+2, ..., N+12 (in the order heater, laser, "
        "mount, digitiser, coil_x, coil_y, coil_z) instead of the station file's ports; the "
        "--client-station file gets the same ports",
    )  # fmt: skip
    reset = sim_commands.add_parser(
        "reset",
        help="start the embedded simulated lab again: cold, or ready to measure",
        description="The embedded simulated lab keeps its state between hotspin processes, as a "
        "real lab does. 'reset --cold' (the default) forgets it: the cell at room temperature, "
        "the polarimeter not balanced, the field not zeroed. 'reset --ready' then runs warmup, "
        "balance and field_zeroing on it, so that spectra can be taken at once.",
    )
    state = reset.add_mutually_exclusive_group()
    state.add_argument("--cold", action="store_true", help="a cold lab (the default)")
    state.add_argument("--ready", action="store_true", help="warmed, balanced, field zeroed")
    run = commands.add_parser(
        "run",
        help="run one procedure on a station, with a progress bar and a summary",
        description="Run a procedure headless. Every parameter is checked before any "
        "instrument is touched; Ctrl-C stops it safely (status 'aborted'). Procedures (their "
        "parameters: 'hotspin list'):\n" + procedure_summaries(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("procedure", help="procedure name")
    _add_settings(run, "change a parameter; repeat for several")
    _add_station(run)
    run.add_argument("--out", help="HDF5 file to write (default: data/<date>/<time>_<name>.h5)")
    run.add_argument(
        "--save-calibration", action="store_true",
        help="after a completed run, write what it calibrated into the --station file "
        "(balance: polarimeter.plate_zero_deg; field_zeroing: coils.zero_field_currents_A)",
    )  # fmt: skip
    analyze = commands.add_parser(
        "analyze",
        help="re-run the spin-noise analysis of a run file and write the results into it",
        description="Fit every spectrum of a saved run (or of a 'hotspin simulate' record), "
        "print the results with uncertainties and store them in the file's group 'analysis'.",
    )
    analyze.add_argument("file", help="HDF5 run file or simulated record")
    gui = commands.add_parser(
        "gui",
        help="the live monitor and procedure runner",
        description="Watch the polarimeter signal, the spin-noise spectrum and every "
        "instrument live; tune the apparatus; queue, watch and abort procedures; open runs.",
    )
    _add_station(gui)
    gui.add_argument("--data", default="data", help="directory for run files (default: data)")
    gui.add_argument(
        "--watch",
        metavar="FILE",
        help="follow a run file another process is writing (SWMR; a continuous record in the "
        "live monitor's view: spectrum, fit, duty cycle, QND panel); needs no station",
    )
    return parser


def _add_settings(parser: argparse.ArgumentParser, help: str) -> None:
    """Add the repeatable ``--set NAME=VALUE`` option."""
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help=help)


def _add_station(parser: argparse.ArgumentParser) -> None:
    """Add ``--station FILE`` (none: the embedded simulated lab)."""
    parser.add_argument("--station", help="station file (default: the embedded simulated lab)")


def procedure_summaries() -> str:
    """Return one line per procedure: its name and what it measures (from the catalogue)."""
    from hotspin.catalogue import catalogue

    entries = catalogue()["procedures"]
    width = max(len(name) for name in entries)
    return "\n".join(f"  {name.ljust(width)}  {e['summary']}" for name, e in entries.items())


def _list() -> int:
    from hotspin.catalogue import catalogue

    print(catalogue()["listing"])
    return 0


def _run(args: argparse.Namespace) -> int:
    from hotspin.headless import run_command

    return run_command(args.procedure, args.set, args.station, args.out, args.save_calibration)


def _simulate(args: argparse.Namespace) -> int:
    from hotspin.procedures.parameters import assign
    from hotspin.progress import ProgressBar
    from hotspin.simulate import SIMULATE_PARAMETERS, describe_truth, simulate_record

    values = assign(SIMULATE_PARAMETERS, args.set)
    path = simulate_record(
        args.out, args.duration_s, args.sample_rate_Hz, values, progress=ProgressBar("simulate")
    )
    print(describe_truth(path))
    return 0


def _sim(args: argparse.Namespace) -> int:
    if args.sim_command == "reset":
        from hotspin.reset import reset_lab

        reset_lab(ready=args.ready, announce=lambda line: print(line, flush=True))
        return 0
    from hotspin.serve import serve

    serve(
        args.station,
        announce=lambda line: print(line, flush=True),
        client_station=args.client_station,
        port_base=args.port_base,
    )
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from hotspin.procedures.analyze import analyze_file, format_report

    print(format_report(analyze_file(args.file)))
    return 0


def _gui(args: argparse.Namespace) -> int:
    if args.watch:
        from hotspin.gui.watch import main as watch_main  # Qt is loaded only for the GUI

        return watch_main(args.watch)
    from hotspin.gui.app import main as gui_main  # Qt is loaded only for the GUI

    return gui_main(args.station, args.data)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `hotspin` command line; return the process exit status."""
    args = _build_parser().parse_args(argv)
    handlers = {
        "list": lambda: _list(),
        "simulate": lambda: _simulate(args),
        "sim": lambda: _sim(args),
        "analyze": lambda: _analyze(args),
        "run": lambda: _run(args),
        "gui": lambda: _gui(args),
    }
    try:
        return handlers[args.command]()
    except BrokenPipeError:  # the output went to `head` or a closed pager: nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"hotspin {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # classified here so that no command imports what it never raises
        return _report(args.command, error)


def _report(command: str, error: Exception) -> int:
    """Print why ``command`` stopped; return its exit status (2 refused, 1 failed, 3 an
    instrument gave up or could not be reached)."""
    from hotspin.analysis.checks import ParameterError
    from hotspin.instruments.errors import InstrumentError

    if isinstance(error, ParameterError | FileExistsError):
        print(f"hotspin {command}: error: {error}", file=sys.stderr)
        return 2
    if not isinstance(error, InstrumentError | RuntimeError | TimeoutError | ValueError | OSError):
        raise error
    from hotspin.procedures.recorder import DiskFullError

    # An instrument's and a disk's errors name what failed; others need their kind to be read.
    text = str(error) if isinstance(error, InstrumentError | DiskFullError) else None
    if command == "run":  # the run started and failed: its file says so too
        print(f"hotspin run: failed: {text or f'{type(error).__name__}: {error}'}", file=sys.stderr)
        # An instrument that cannot be reached, or gave up, is exit 3 wherever it happened.
        return 3 if isinstance(error, InstrumentError) else 1
    print(f"hotspin {command}: error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
