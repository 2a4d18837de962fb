"""aiogram's gettext i18n with the locale chosen by ``UserMiddleware``."""

from __future__ import annotations

from typing import Any

from aiogram.types import TelegramObject
from aiogram.utils.i18n import I18nMiddleware


class UserLocaleMiddleware(I18nMiddleware):
    """Uses ``data["locale"]`` (the user's stored language) or the default locale."""

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        return data.get("locale") or self.i18n.default_locale
