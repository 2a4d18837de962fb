"""``/workflow_recovery``: the admin menu (stuck workflows, health, inventory, errors,
notification retries, recovery history); each section lives in its own module of this
package (stuck workflows: ``stuck_workflows``; health, errors, inventory, retries, history)."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.admin import stuck_workflows
from handlers.callbacks import MenuCb, StuckListCb
from handlers.screens import edit_or_send

router = Router(name=__name__)


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


@router.message(Command("workflow_recovery"))
async def open_menu(message: Message) -> None:
    """The main menu."""
    await message.answer(_("Workflow recovery. Choose a section:"), reply_markup=main_menu_markup())


@router.callback_query(MenuCb.filter(F.section == "main"))
async def main_menu(query: CallbackQuery) -> None:
    """Back to the main menu."""
    await edit_or_send(query, _("Workflow recovery. Choose a section:"), main_menu_markup())


# the sections' own routers (stuck workflows: handlers/admin/stuck_workflows.py)
router.include_router(stuck_workflows.router)
