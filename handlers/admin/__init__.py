"""Admin routers. Access is checked on every message and every callback query of the
package (an inner middleware on both observers), not only on the command that opens the
menu: a non-admin's command or forged callback gets a short localized refusal. A message or
callback that no handler of the package could take skips the package at its root
(``handlers.routing.gate_tree``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Router
from aiogram.types import CallbackQuery, Message, TelegramObject
from aiogram.utils.i18n import gettext as _

from handlers.admin import (
    alerts,
    errors,
    health,
    history,
    inventory,
    inventory_discrepancy,
    retries,
    retries_notification,
    workflow_recovery,
)
from handlers.routing import callback_prefixes, gate_tree
from handlers.screens import alert


class AdminOnlyMiddleware(BaseMiddleware):
    """Calls the handler only when ``data["is_admin"]`` is true; refuses otherwise."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if data.get("is_admin"):
            return await handler(event, data)
        refusal = _("This section is for administrators only.")
        if isinstance(event, CallbackQuery):  # answered by AnswerEveryCallback
            alert(data["callback_answer"], refusal)
        elif isinstance(event, Message):
            await event.answer(refusal)
        return None


# The menu's sections (alert mute buttons sit on alert messages, not in the menu)
MENU_ROUTERS = (
    workflow_recovery.router,
    health.router,
    errors.router,
    inventory.router,
    inventory_discrepancy.router,
    retries.router,
    retries_notification.router,
    history.router,
)

router = Router(name=__name__)
router.message.middleware(AdminOnlyMiddleware())
router.callback_query.middleware(AdminOnlyMiddleware())
router.include_routers(*MENU_ROUTERS, alerts.router)
gate_tree(router)

MENU_PREFIXES: frozenset[str] = callback_prefixes(*MENU_ROUTERS)
"""The ``CallbackData`` prefixes of every button of the admin menu, read off the menu
routers' callback filters (``wr``, ``wrs``, ``es``, ``eg``, ``iv``, ``nr``, ...)."""
