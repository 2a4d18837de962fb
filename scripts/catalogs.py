"""Compile the gettext catalogs (``bot/locales/<locale>/LC_MESSAGES/messages.po``) to
``.mo`` with Babel, parsing every catalog strictly first.

A build step, never a start-up one: ``setup.py`` runs it when the package is built or
installed (the ``.mo`` files ship in the wheel), ``scripts/test.sh``, ``scripts/run.sh`` and
the test session run it in a checkout. The bot only reads the compiled catalogs, so it runs
from a read-only install.

Strict: a catalog that Babel can only read leniently (a ``msgid`` whose ``msgstr`` was lost
in a merge, a line that is not PO syntax) or that holds a ``msgid`` twice fails the build.

Usage: ``python scripts/catalogs.py [OUT_DIR]`` (default: next to the ``.po`` files).
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).resolve().parent.parent / "bot" / "locales"
DOMAIN = "messages"


class CatalogError(ValueError):
    """A catalog that does not parse strictly; the message names the file and the line."""


def po_files(locales_dir: Path = LOCALES_DIR, domain: str = DOMAIN) -> list[Path]:
    """Every ``<locale>/LC_MESSAGES/<domain>.po`` under ``locales_dir``, sorted."""
    return sorted(locales_dir.glob(f"*/LC_MESSAGES/{domain}.po"))


def read_strict(po_path: Path) -> Catalog:
    """The catalog of ``po_path``, parsed with Babel's ``abort_invalid``.

    Raises:
        CatalogError: invalid PO syntax, a ``msgid`` without ``msgstr``, or a ``msgid``
            (with its context) that appears twice.
    """
    locale = po_path.parent.parent.name
    try:
        with po_path.open("rb") as po_file:
            catalog = read_po(po_file, locale=locale, abort_invalid=True)
    except Exception as exc:  # babel's PoFileError, or a decoding error
        raise CatalogError(f"{po_path}: {exc}") from exc
    seen: set[tuple[str | None, str]] = set()
    context: str | None = None
    for line in po_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("msgctxt "):
            context = line
        elif line.startswith("msgid "):
            key = (context, line)
            context = None
            if line != 'msgid ""' and key in seen:
                raise CatalogError(f"{po_path}: {line} appears twice")
            seen.add(key)
    return catalog


def compile_catalogs(
    locales_dir: Path = LOCALES_DIR, out_dir: Path | None = None, domain: str = DOMAIN
) -> list[Path]:
    """Parse every catalog strictly, then write each ``.mo`` (under ``out_dir`` with the
    same ``<locale>/LC_MESSAGES`` layout, default next to its ``.po``).

    Returns the ``.mo`` files written. Raises ``CatalogError`` before writing anything.
    """
    catalogs = [(po_path, read_strict(po_path)) for po_path in po_files(locales_dir, domain)]
    written: list[Path] = []
    for po_path, catalog in catalogs:
        relative = po_path.relative_to(locales_dir).with_suffix(".mo")
        mo_path = (out_dir or locales_dir) / relative
        mo_path.parent.mkdir(parents=True, exist_ok=True)
        with mo_path.open("wb") as mo_file:
            write_mo(mo_file, catalog)
        written.append(mo_path)
    return written


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]) if argv else None
    try:
        written = compile_catalogs(out_dir=out_dir)
    except CatalogError as exc:
        print(f"catalogs: {exc}", file=sys.stderr)
        return 1
    print(f"catalogs: {len(written)} compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
