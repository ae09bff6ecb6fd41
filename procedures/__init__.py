"""Measurement procedures, the run file and the `hotspin` command line."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hotspin")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
