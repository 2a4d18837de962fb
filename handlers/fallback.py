"""Last router: a button nobody handles (an older menu layout, a removed feature, a field
out of range) is answered with "this menu is outdated" instead of a spinning button or an
error; an admin's outdated admin-menu button also gets a fresh admin menu in place of the
old one."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import CallbackQuery
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _

from handlers.admin import MENU_PREFIXES
from handlers.admin.menu import fresh_menu
from handlers.screens import alert

router = Router(name=__name__)


def is_admin_menu_data(data: str | None) -> bool:
    """True for callback data whose prefix (before the first ``:``, aiogram's separator)
    is one of the admin menu's ``CallbackData`` prefixes."""
    return bool(data) and (data or "").split(":", 1)[0] in MENU_PREFIXES


@router.callback_query()
async def outdated_button(
    query: CallbackQuery, callback_answer: CallbackAnswer, is_admin: bool = False
) -> None:
    """Answers any callback no other router took."""
    if is_admin and is_admin_menu_data(query.data):
        await fresh_menu(query, callback_answer)
        return
    alert(callback_answer, _("This menu is outdated. Send the command again."))
