"""Check that requirements.lock matches pyproject.toml and this environment (run by
scripts/test.sh after installing from the lock).

1. Every dependency of pyproject.toml (main and every extra) has a pinned version in
   requirements.lock that its range allows.
2. Every distribution installed for the project (its dependencies, theirs, and so on, for
   the extras installed) is at the version the lock pins: nothing came in unpinned.

Exit 0 when both hold; else 1 with the differences and the command that refreshes the lock.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
REFRESH = "scripts/lock.sh"

Pins = dict[str, list[tuple[Version, Marker | None]]]


def read_lock(path: Path) -> Pins:
    """``name==version [; marker]`` lines of a uv/pip-compile lock, by canonical name."""
    pins: Pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        pins.setdefault(canonicalize_name(requirement.name), []).append(
            (Version(spec.version), requirement.marker)
        )
    return pins


def pinned(pins: Pins, name: str, extra: str = "") -> Version | None:
    """The locked version of ``name`` on this platform (None when not locked)."""
    env = {**default_environment(), "extra": extra}
    for version, marker in pins.get(canonicalize_name(name), []):
        if marker is None or marker.evaluate(env):
            return version
    return None


def applies(requirement: Requirement, extra: str) -> bool:
    """Whether ``requirement`` is needed here when ``extra`` is asked for."""
    marker = requirement.marker
    return marker is None or marker.evaluate({**default_environment(), "extra": extra})


def check_pyproject(pins: Pins) -> list[str]:
    """Direct dependencies missing from the lock or pinned outside their range."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own = canonicalize_name(project["name"])
    groups = {"": project.get("dependencies", []), **project.get("optional-dependencies", {})}
    problems = []
    for extra, lines in groups.items():
        for line in lines:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == own or not applies(requirement, extra):
                continue
            where = f"extra {extra!r}" if extra else "dependencies"
            version = pinned(pins, requirement.name, extra)
            if version is None:
                problems.append(f"{requirement.name} ({where}) is not in requirements.lock")
            elif version not in requirement.specifier:
                problems.append(
                    f"{requirement.name}=={version} in requirements.lock is outside "
                    f"{requirement.specifier} ({where})"
                )
    return problems


def check_installed(pins: Pins, project: str) -> list[str]:
    """Installed distributions of the project's dependency tree not at the locked version."""
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    own = metadata.distribution(project)
    extras = own.metadata.get_all("Provides-Extra") or []
    stack: list[tuple[Requirement, str]] = [
        (Requirement(line), extra) for line in own.requires or [] for extra in ["", *extras]
    ]
    while stack:
        requirement, extra = stack.pop()
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project) or not applies(requirement, extra):
            continue
        for wanted in ["", *sorted(requirement.extras)]:
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                break  # an extra that is not installed here
            version = pinned(pins, name, wanted)
            if version is None:
                problems.append(f"{dist.name}=={dist.version} is installed but not locked")
            elif Version(dist.version) != version:
                problems.append(f"{dist.name}=={dist.version} is installed, the lock has {version}")
            stack.extend((Requirement(line), wanted) for line in dist.requires or [])
    return problems


def main() -> int:
    pins = read_lock(LOCK)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    problems = check_pyproject(pins) + check_installed(pins, project)
    if problems:
        print("requirements.lock does not match pyproject.toml:", file=sys.stderr)
        for problem in sorted(set(problems)):
            print(f"  - {problem}", file=sys.stderr)
        print(f"refresh it with `{REFRESH}` and commit requirements.lock", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
