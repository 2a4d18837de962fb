"""Localization: gettext catalogs under ``bot/locales`` (en, ru, uz), compiled with Babel.

The ``.po`` files are the source; ``.mo`` files are compiled from them at start-up (and by
the tests), so a stale binary catalog can never ship.
"""

from __future__ import annotations

from pathlib import Path

from aiogram.utils.i18n import I18n

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DOMAIN = "messages"


def compile_catalogs(locales_dir: Path = LOCALES_DIR, domain: str = DOMAIN) -> list[Path]:
    """Compile every ``<locale>/LC_MESSAGES/<domain>.po`` whose ``.mo`` is missing or older.

    Returns the ``.mo`` files written. Raises ``babel`` parse errors on a broken catalog.
    """
    written: list[Path] = []
    for po_path in sorted(locales_dir.glob(f"*/LC_MESSAGES/{domain}.po")):
        mo_path = po_path.with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        from babel.messages.mofile import write_mo  # only when a catalog changed
        from babel.messages.pofile import read_po

        with po_path.open("rb") as po_file:
            catalog = read_po(po_file, locale=po_path.parent.parent.name)
        with mo_path.open("wb") as mo_file:
            write_mo(mo_file, catalog)
        written.append(mo_path)
    return written


def create_i18n(default_locale: str = "en") -> I18n:
    """Compile the catalogs and return aiogram's ``I18n`` over them."""
    compile_catalogs()
    return I18n(path=LOCALES_DIR, default_locale=default_locale, domain=DOMAIN)
