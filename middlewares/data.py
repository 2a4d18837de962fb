"""What the middlewares put into handler data (aiogram passes these as keyword arguments)."""

from __future__ import annotations

from typing import TypedDict

import asyncpg


class UserData(TypedDict, total=False):
    """Keys set by ``UserMiddleware``."""

    user: asyncpg.Record
    """The ``users`` row of the update's sender (created on first contact)."""
    is_admin: bool
    """True for the admin role or a Telegram id listed in ``ADMIN_IDS``."""
    locale: str
    """The language replies are rendered in (en, ru, uz)."""
