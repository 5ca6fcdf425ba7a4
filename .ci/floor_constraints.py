"""Print a pip constraints file that pins every lower bound pyproject.toml declares (``name>=X`` becomes
``name==X``), for CI's floor job (``.ci/floors``).

torch is left out: CI tests one torch, 2.13.0 (the CPU wheel; older public wheels are CUDA builds of several GB), and
so is hatchling, the build backend (not installed with the package)."""

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

UNPINNED = {"torch", "hatchling"}


def floors(pyproject: Path) -> dict[str, str]:
    """Each package's declared lower bound (the highest one, where extras declare several)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    bounds: dict[str, str] = {}
    for text in requirements:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        for specifier in requirement.specifier:
            if specifier.operator == ">=" and name not in UNPINNED:
                bounds[name] = max(bounds.get(name, specifier.version), specifier.version, key=Version)
    return bounds


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "pyproject.toml"
    for name, version in sorted(floors(path).items()):
        print(f"{name}=={version}")
