"""Build hook: the gettext catalogs are compiled (``scripts/catalogs.py``) when the package is
built, so the wheel ships ``.mo`` files and the bot never writes into its install.

Everything else is in ``pyproject.toml``.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithCatalogs(build_py):
    """``build_py`` that compiles ``bot/locales/*/LC_MESSAGES/*.po`` first (into the build
    directory; into the source tree for an editable install, which runs from it)."""

    def run(self) -> None:
        catalogs = runpy.run_path(str(ROOT / "scripts" / "catalogs.py"))
        if getattr(self, "editable_mode", False):
            catalogs["compile_catalogs"]()
        else:
            catalogs["compile_catalogs"](out_dir=Path(self.build_lib) / "bot" / "locales")
        super().run()


setup(cmdclass={"build_py": BuildPyWithCatalogs})
