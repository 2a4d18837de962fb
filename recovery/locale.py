"""The languages the bot speaks and how one is picked for a user.

Below the Telegram layer so that settings, middlewares and handlers share one list.
"""

from __future__ import annotations

SUPPORTED_LOCALES: tuple[str, ...] = ("en", "ru", "uz")
"""The catalogs under ``bot/locales``; the first is the default of ``DEFAULT_LOCALE``."""


def pick_locale(
    user_language: str | None, telegram_language: str | None, default_locale: str
) -> str:
    """The user's stored language, else Telegram's ``language_code`` when we support it,
    else the default."""
    for candidate in (user_language, (telegram_language or "")[:2].lower()):
        if candidate in SUPPORTED_LOCALES:
            return candidate
    return default_locale
