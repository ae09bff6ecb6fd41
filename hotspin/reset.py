"""`hotspin sim reset [--cold | --ready]`: the embedded simulated lab started again."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

#: What `--ready` runs, in order, with the settings that make it quick on the simulated lab.
READY_SEQUENCE = (
    ("warmup", {"target_temperature_K": 450.0, "dwell_s": 30.0}),
    ("balance", {}),
    ("field_zeroing", {"averages": 4, "iterations": 1}),
)


def reset_lab(ready: bool, announce: Callable[[str], None]) -> None:
    """Forget the embedded lab's state; with ``ready``, warm, balance and zero it again."""
    from hotspin.api import open_station, run
    from hotspin.simulators.persistence import LabStore

    store = LabStore()
    store.acquire()  # refused while another process drives the lab
    try:
        store.reset()
    finally:
        store.release()
    announce(f"embedded simulated lab reset: cold ({store.state_path} removed)")
    if not ready:
        return
    with tempfile.TemporaryDirectory() as directory, open_station() as station:
        for name, values in READY_SEQUENCE:
            result = run(name, station, Path(directory) / f"{name}.h5", **values)
            announce(f"  {name}: {result.status}")
    announce("embedded simulated lab ready: cell at 450 K, balanced, field zeroed")
