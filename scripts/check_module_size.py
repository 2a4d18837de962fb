"""Fail when a module of the bot's packages is longer than ``MAX_LINES`` lines.

A module does one job and a newcomer reads it in one sitting; 400 lines is the ceiling the
project set itself (docs/architecture.md). ``ALLOWED`` names the modules still over it,
each with the reason; the check also fails when an allowed module has come under the
ceiling, so that the list only shrinks.

Usage: ``python scripts/check_module_size.py`` (exit status 1 with one line per offender).
"""

from __future__ import annotations

import sys
from pathlib import Path

MAX_LINES = 400
PACKAGES = ("bot", "handlers", "middlewares", "recovery", "database")

# Modules over the ceiling that are still to be split, and why each waits.
ALLOWED: dict[str, str] = {}


def line_count(path: Path) -> int:
    """Lines of ``path`` (a last line without a newline counts)."""
    with path.open("rb") as file:
        return sum(1 for _ in file)


def offenders(root: Path) -> list[str]:
    """One message per module over the ceiling and not allowed, or allowed but under it."""
    problems: list[str] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            lines = line_count(path)
            if lines > MAX_LINES and name not in ALLOWED:
                problems.append(f"{name}: {lines} lines (at most {MAX_LINES}); split it")
            elif lines <= MAX_LINES and name in ALLOWED:
                problems.append(f"{name}: {lines} lines now; take it off ALLOWED")
    for name in ALLOWED:
        if not (root / name).exists():
            problems.append(f"{name}: allowed but missing; take it off ALLOWED")
    return problems


def main() -> int:
    problems = offenders(Path(__file__).resolve().parent.parent)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
