"""The procedure catalogue that `hotspin list` and `hotspin run --help` print, cached on disk.

Building it imports every procedure, and so pymeasure.experiment, pandas and scipy: over a second
of CPU for text that changes only when the code does. It is kept in the user's cache directory
under a key made of the version and the size and modification time of every source file it is
built from, so an edited procedure is listed as it now is, and a warm `hotspin list` imports
nothing but json.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hotspin.procedures import __version__

_ROOT = Path(__file__).resolve().parent.parent
#: The folders whose modules define what the catalogue lists.
_SOURCES = ("procedures", "hotspin")


def cache_directory() -> Path:
    """Return the user's cache directory for hotspin (HOTSPIN_CACHE_DIR overrides it)."""
    if "HOTSPIN_CACHE_DIR" in os.environ:
        return Path(os.environ["HOTSPIN_CACHE_DIR"])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hotspin"))


def _source_key() -> str:
    digest = hashlib.sha256(__version__.encode())
    for folder in _SOURCES:
        for path in sorted((_ROOT / folder).glob("*.py")):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def build_catalogue() -> dict[str, Any]:
    """Return every procedure's summary and the full listing of parameters, units and ranges."""
    from hotspin.procedures.parameters import parameters_table
    from hotspin.procedures.registry import PROCEDURES
    from hotspin.simulate import SIMULATE_PARAMETERS

    blocks = [
        f"{name}: {cls.SUMMARY}\n{parameters_table(cls.parameter_map())}"
        for name, cls in PROCEDURES.items()
    ]
    blocks.append(
        "simulate: a synthetic record drawn exactly from the spin model (hotspin simulate "
        "--duration-s T --sample-rate-Hz F --out FILE --set NAME=VALUE ...)\n"
        + parameters_table(SIMULATE_PARAMETERS)
    )
    return {
        "procedures": {name: {"summary": cls.SUMMARY} for name, cls in PROCEDURES.items()},
        "listing": "\n\n".join(blocks),
    }


def catalogue() -> dict[str, Any]:
    """Return the catalogue: from the cache when it is current, else built and cached."""
    path = cache_directory() / f"catalogue-{_source_key()}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    entries = build_catalogue()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(entries))
        partial.replace(path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        pass  # a read-only cache costs speed, never the listing
    return entries
