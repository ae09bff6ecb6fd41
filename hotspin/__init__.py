"""hotspin: control, acquisition and simulation for a hot-vapour ⁸⁷Rb spin-noise magnetometer.

The scripting API (`open_station`, `run`, `load_run`; see hotspin.api) is loaded on first use,
so that `hotspin --help`, `--version` and `list` import nothing they do not print.
"""

from typing import Any

from hotspin.procedures import __version__

__all__ = ["Measurement", "Run", "__version__", "load_run", "open_station", "run"]

_API = {"Measurement", "Run", "load_run", "open_station", "run"}


def __getattr__(name: str) -> Any:
    """Return a name of the scripting API, importing hotspin.api when first asked."""
    if name in _API:
        from hotspin import api

        return getattr(api, name)
    raise AttributeError(f"module 'hotspin' has no attribute {name!r}")
