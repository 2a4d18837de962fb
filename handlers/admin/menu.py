"""The admin menu's main screen, and the fresh one an outdated admin button gets."""

from __future__ import annotations

from aiogram.types import CallbackQuery, InlineKeyboardMarkup
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import MenuCb, StuckListCb
from handlers.screens import alert, edit_or_send


def main_menu_markup() -> InlineKeyboardMarkup:
    """The five sections and the recovery history."""
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("Stuck workflows"), callback_data=StuckListCb(page=0))
    keyboard.button(text=_("System health"), callback_data=MenuCb(section="health"))
    keyboard.button(text=_("Inventory reconciliation"), callback_data=MenuCb(section="inventory"))
    keyboard.button(text=_("Error statistics"), callback_data=MenuCb(section="errors"))
    keyboard.button(text=_("Notification retries"), callback_data=MenuCb(section="retries"))
    keyboard.button(text=_("Recovery history"), callback_data=MenuCb(section="history"))
    keyboard.adjust(1)
    return keyboard.as_markup()


def main_menu_text() -> str:
    """The main screen's title."""
    return _("Workflow recovery. Choose a section:")


async def fresh_menu(query: CallbackQuery, callback_answer: CallbackAnswer) -> None:
    """An outdated admin-menu button: say so, and show a fresh main menu in place of the
    old one (edit, else a new message)."""
    alert(callback_answer, _("This menu is outdated. Here is a fresh one."))
    await edit_or_send(query, main_menu_text(), main_menu_markup())
