"""Clients open requests (/new) and follow them (/my)."""

from __future__ import annotations

import asyncpg
from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import NewRequestCb
from handlers.filters import TextAnswer
from handlers.render import html, lines
from handlers.routing import gate_tree
from handlers.texts import ngettext, state_label, workflow_label
from recovery.actors import Actor
from recovery.exceptions import InputValidationError
from recovery.state_manager import MAX_DESCRIPTION_LENGTH, EnhancedStateManager
from recovery.workflow_definitions import WORKFLOWS

router = Router(name=__name__)


class NewRequest(StatesGroup):
    """The /new conversation: pick a type, then describe the problem."""

    description = State()


@router.message(Command("new"))
async def new_request(message: Message, state: FSMContext) -> None:
    """Asks for the workflow type."""
    await state.clear()
    keyboard = InlineKeyboardBuilder()
    for workflow_type in WORKFLOWS:
        keyboard.button(
            text=workflow_label(workflow_type),
            callback_data=NewRequestCb(workflow_type=workflow_type),
        )
    await message.answer(_("What do you need?"), reply_markup=keyboard.as_markup())


@router.callback_query(NewRequestCb.filter(F.workflow_type.in_(WORKFLOWS)))
async def pick_type(query: CallbackQuery, callback_data: NewRequestCb, state: FSMContext) -> None:
    """Remembers the type and asks for a description."""
    await state.set_state(NewRequest.description)
    await state.update_data(workflow_type=callback_data.workflow_type)
    if query.message is not None:
        await query.message.answer(_("Describe the problem and the address in one message."))


@router.message(StateFilter(NewRequest.description), TextAnswer())
async def describe(
    message: Message,
    state: FSMContext,
    user: asyncpg.Record,
    state_manager: EnhancedStateManager,
) -> None:
    """Opens the request. A description that cannot be one (blanks only, too long) is the
    user's mistake: it is explained and the next message is taken instead."""
    data = await state.get_data()
    try:
        request = await state_manager.create_request(
            Actor.of(user),
            workflow_type=data.get("workflow_type", "repair"),
            description=message.text or "",
        )
    except InputValidationError as exc:
        if exc.field != "description":
            raise
        length = len((message.text or "").strip())
        if length > MAX_DESCRIPTION_LENGTH:
            text = html(
                ngettext(
                    "Your description has {length} character; the limit is {n}. Please "
                    "shorten it and send it again.",
                    "Your description has {length} characters; the limit is {n}. Please "
                    "shorten it and send it again.",
                    length,
                ),
                length=length,
                n=MAX_DESCRIPTION_LENGTH,
            )
        else:
            text = html(
                _("Please describe the problem in words, at most {n} characters."),
                n=MAX_DESCRIPTION_LENGTH,
            )
        await message.answer(text)
        return
    await state.clear()
    await message.answer(
        html(
            _("Request #{id} is open ({workflow}). We will keep you informed."),
            id=request["id"],
            workflow=workflow_label(request["workflow_type"]),
        )
    )


@router.message(Command("my"))
async def my_requests(
    message: Message, user: asyncpg.Record, state_manager: EnhancedStateManager
) -> None:
    """Lists the client's latest requests."""
    rows = await state_manager.list_for_client(user["id"])
    if not rows:
        await message.answer(_("You have no requests yet. Send /new to open one."))
        return
    items = [
        html(
            "#{id} {workflow}: {state}",
            id=row["id"],
            workflow=workflow_label(row["workflow_type"]),
            state=state_label(row["current_state"]),
        )
        for row in rows
    ]
    await message.answer(lines(_("Your requests:"), items))


# a message or callback query that no handler above could take skips this router at its root
gate_tree(router)
