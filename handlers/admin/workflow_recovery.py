"""``/workflow_recovery``: the admin menu (stuck workflows, health, inventory, errors,
notification retries, recovery history); each section lives in its own module of this
package (stuck workflows: ``stuck_workflows``; health, errors, inventory, retries, history)."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from handlers.admin import stuck_workflows
from handlers.admin.menu import main_menu_markup, main_menu_text
from handlers.callbacks import MenuCb
from handlers.screens import edit_or_send

router = Router(name=__name__)


@router.message(Command("workflow_recovery"))
async def open_menu(message: Message) -> None:
    """The main menu."""
    await message.answer(main_menu_text(), reply_markup=main_menu_markup())


@router.callback_query(MenuCb.filter(F.section == "main"))
async def main_menu(query: CallbackQuery) -> None:
    """Back to the main menu."""
    await edit_or_send(query, main_menu_text(), main_menu_markup())


# the sections' own routers (stuck workflows: handlers/admin/stuck_workflows.py)
router.include_router(stuck_workflows.router)
