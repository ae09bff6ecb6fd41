"""hotspin: control, acquisition and simulation for a hot-vapour ⁸⁷Rb spin-noise magnetometer.

The scripting API (`open_station`, `run`, `load_run`) is loaded on first use, so that the
command line's `--help` and `--version` stay fast.
"""

from hotspin.procedures import __version__

__all__ = ["__version__"]
