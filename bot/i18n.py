"""Localization: gettext catalogs under ``bot/locales`` (en, ru, uz), compiled with Babel.

The ``.po`` files are the source; the ``.mo`` files are compiled from them at build time
(``scripts/catalogs.py``, run by ``setup.py``, ``scripts/test.sh``, ``scripts/run.sh`` and the
test session), never at start-up: an install may be read-only.
"""

from __future__ import annotations

from pathlib import Path

from aiogram.utils.i18n import I18n

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DOMAIN = "messages"


def create_i18n(default_locale: str = "en") -> I18n:
    """aiogram's ``I18n`` over the compiled catalogs.

    Raises:
        CatalogsNotCompiledError: a ``.po`` without its ``.mo`` (a checkout where
            ``scripts/catalogs.py`` has not run).
    """
    missing = [
        po
        for po in LOCALES_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")
        if not po.with_suffix(".mo").exists()
    ]
    if missing:
        raise CatalogsNotCompiledError(
            f"{len(missing)} catalog(s) not compiled; run: python scripts/catalogs.py"
        )
    return I18n(path=LOCALES_DIR, default_locale=default_locale, domain=DOMAIN)


class CatalogsNotCompiledError(RuntimeError):
    """The ``.mo`` files are missing: the catalogs are compiled at build time."""
