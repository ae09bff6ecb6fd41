"""Imports point down the layers only: app → gui → procedures → instruments → analysis."""

import ast
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What each layer may import of hotspin, besides itself. The station alone reaches the simulators,
#: and only to start the simulated lab.
ALLOWED = {
    "analysis": set(),
    "simulators": {"analysis"},
    "instruments": {"analysis"},
    "procedures": {"instruments", "analysis"},
    "gui": {"procedures", "instruments", "analysis"},
}
STATION_EXTRA = {"simulators"}


def hotspin_imports(path: Path) -> list[tuple[int, str]]:
    """Return (line, hotspin module) for every import in ``path``, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "hotspin"]


def layer_of(module: str) -> str:
    """Return the layer a dotted hotspin module belongs to ('app' for hotspin itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "app"


def upward_imports(layer: str, path: Path) -> list[str]:
    """Return the imports of ``path`` (in ``layer``) that point up or sideways."""
    allowed = ALLOWED[layer] | {layer}
    if layer == "instruments" and path.name == "station.py":
        allowed |= STATION_EXTRA
    bad = []
    for line, module in hotspin_imports(path):
        # The version string is the one thing every layer reads from the package's root.
        if module == "hotspin.procedures" and layer in {"gui", "procedures"}:
            continue
        if layer_of(module) not in allowed:
            bad.append(f"{path.name}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_layer_imports_upward(layer):
    bad = [b for path in sorted((ROOT / layer).glob("*.py")) for b in upward_imports(layer, path)]
    assert not bad, "\n".join(bad)


def test_the_check_fails_on_an_upward_import(tmp_path):
    module = tmp_path / "fake.py"
    module.write_text("import numpy\n\ndef f():\n    from hotspin.gui.app import main\n")
    assert upward_imports("procedures", module) == ["fake.py:4 imports hotspin.gui.app"]
    assert upward_imports("gui", module) == []


GENERIC_NAMES = ("analysis", "simulators", "instruments", "procedures", "gui")


def test_no_generic_top_level_name_is_ours(tmp_path):
    # Outside the source tree, none of the layer folders' bare names leads into this project.
    code = (
        "import importlib.util, json; "
        f"print(json.dumps({{n: getattr(importlib.util.find_spec(n), 'origin', None) "
        f"for n in {GENERIC_NAMES!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    origins = json.loads(result.stdout)
    ours = {n: o for n, o in origins.items() if o and Path(o).resolve().parent.parent == ROOT}
    assert not ours, ours


def test_instrumentkit_beside_hotspin_breaks_nothing(tmp_path):
    try:
        distribution("instrumentkit")
    except PackageNotFoundError:
        pytest.skip("InstrumentKit is installed by `make test`")
    code = (
        "import instruments, hotspin.instruments.station; "
        "print(instruments.__name__, hasattr(instruments, 'lakeshore'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["instruments", "True"]
    listing = subprocess.run(
        [sys.executable, "-m", "hotspin.cli", "list"], cwd=tmp_path, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert "spin_noise" in listing.stdout
