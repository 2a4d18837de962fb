"""Last router: a button nobody handles (an older menu layout, a removed feature) is
answered with "this menu is outdated" instead of a spinning button."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _

router = Router(name=__name__)


@router.callback_query()
async def outdated_button(query: CallbackQuery) -> None:
    """Answers any callback no other router took."""
    await query.answer(_("This menu is outdated. Send the command again."), show_alert=True)
