"""The driver registry: the station file's `driver =` names the class that talks to a role.

The built-in drivers are registered here; a third-party package adds its own through the
entry-point group `hotspin.drivers` (name = "package.module:Class"), and a station file then
names it like any other. An unknown name is refused, naming the known ones.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from hotspin.analysis.checks import ParameterError

ENTRY_POINT_GROUP = "hotspin.drivers"

#: Built-in driver name → "module:class" (imported when a station uses it).
BUILTIN = {
    "lakeshore336": "hotspin.instruments.lakeshore336:LakeShore336",
    "dlcpro": "hotspin.instruments.toptica_dlcpro:DLCpro",
    "ell14": "hotspin.instruments.thorlabs_ell14:ELL14",
    "redpitaya": "hotspin.instruments.redpitaya:RedPitaya",
    "keithley6221": "hotspin.instruments.keithley6221:Keithley6221",
}


def known_drivers() -> dict[str, str]:
    """Return every driver a station file may name: built-in and registered by packages."""
    known = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        known.setdefault(entry.name, entry.value)
    return known


def driver_class(key: str, name: str) -> type:
    """Return the driver class the station setting ``key`` = ``name`` selects."""
    from importlib import import_module

    # A built-in name wins over a registered one (see known_drivers): no need to read every
    # installed package's entry points for it (6 ms a role, five roles per station).
    known = BUILTIN if name in BUILTIN else known_drivers()
    if name not in known:
        raise ParameterError(
            f"{key} = {name!r} is not a known driver; known: {', '.join(sorted(known))}"
        )
    module, _, attribute = known[name].partition(":")
    try:
        return getattr(import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ParameterError(
            f"{key} = {name!r}: its driver {known[name]} failed to load: {error}"
        ) from error
