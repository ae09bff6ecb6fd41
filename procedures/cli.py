"""The `hotspin` command line: headless runs, the simulator, analysis and the GUI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from analysis.checks import ParameterError
from procedures import __version__
from procedures.progress import ProgressBar
from procedures.settings import format_settings_table, parse_assignments
from procedures.simulate import SIMULATE_SETTINGS, describe_truth, simulate_record


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
    simulate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a setting (see 'hotspin list'); repeat for several",
    )
    return parser


def _list() -> int:
    print(
        "simulate: synthetic record (hotspin simulate --duration-s T --sample-rate-Hz F "
        "--out FILE --set NAME=VALUE ...)"
    )
    print(format_settings_table(SIMULATE_SETTINGS))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    values = parse_assignments(args.set, SIMULATE_SETTINGS)
    path = simulate_record(
        args.out, args.duration_s, args.sample_rate_Hz, values, progress=ProgressBar("simulate")
    )
    print(describe_truth(path))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `hotspin` command line; return the process exit status."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        return _simulate(args)
    except (ParameterError, ValueError, FileExistsError) as error:
        print(f"hotspin {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hotspin {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
