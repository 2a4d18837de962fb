"""Last router: a button nobody handles (an older menu layout, a removed feature) is
answered with "this menu is outdated" instead of a spinning button or an error; an admin's
outdated admin-menu button also gets a fresh admin menu in place of the old one."""

from __future__ import annotations

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from handlers.callbacks import ADMIN_MENU_PREFIX

router = Router(name=__name__)


def is_admin_menu_data(data: str | None) -> bool:
    """True for callback data of the admin menu (every prefix starts with ``wr``)."""
    return bool(data) and (data or "").split(":", 1)[0].startswith(ADMIN_MENU_PREFIX)


async def answer_outdated(query: CallbackQuery, *, is_admin: bool) -> None:
    """Answer ``query`` with "this menu is outdated"; for an admin's admin-menu button,
    replace the old menu with a fresh main menu (edit, else a new message)."""
    if not (is_admin and is_admin_menu_data(query.data)):
        await query.answer(_("This menu is outdated. Send the command again."), show_alert=True)
        return
    from handlers.admin.workflow_recovery import main_menu_markup  # the admin menu's owner

    await query.answer(_("This menu is outdated. Here is a fresh one."), show_alert=True)
    text, markup = _("Workflow recovery. Choose a section:"), main_menu_markup()
    message = query.message
    if isinstance(message, Message):
        try:
            await message.edit_text(text, reply_markup=markup)
            return
        except TelegramBadRequest:
            pass
        await message.answer(text, reply_markup=markup)
    elif query.from_user is not None and query.bot is not None:
        await query.bot.send_message(query.from_user.id, text, reply_markup=markup)


@router.callback_query()
async def outdated_button(query: CallbackQuery, is_admin: bool = False) -> None:
    """Answers any callback no other router took."""
    await answer_outdated(query, is_admin=is_admin)
