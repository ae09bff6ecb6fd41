"""Print pip constraints pinning every dependency of pyproject.toml to its lowest allowed version.

CI installs the project with these and runs the suite, so that a range never claims a version
the code cannot run on.
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
requirements = list(project["project"]["dependencies"])
for extra in sys.argv[1:]:
    requirements += project["project"]["optional-dependencies"][extra]
for requirement in requirements:
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:\[[^]]*\])?\s*(.*)$", requirement)
    name, spec = match.group(1), match.group(2)
    lowest = re.search(r">=\s*([0-9][^,;\s]*)", spec)
    if lowest:
        print(f"{name}=={lowest.group(1)}")
