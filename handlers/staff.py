"""Staff see the requests waiting for their role (/tasks) and move them to the next step."""

from __future__ import annotations

import re

import asyncpg
from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import AdvanceCb
from handlers.render import cut, escape, html, plain
from handlers.texts import state_label, workflow_label
from recovery.state_manager import Actor, EnhancedStateManager
from recovery.workflow_definitions import STAFF_ROLES

router = Router(name=__name__)

# /use arguments: ASCII digits only (str.isdigit() also accepts "²" and "١", which int()
# then refuses or reads as another number); ids are BIGINT (at most 2**63 - 1)
_NUMBER = re.compile(r"[0-9]{1,18}")
MAX_QUANTITY = 1_000_000


def parse_use(args: str | None) -> tuple[int, int, int] | None:
    """``<request id> <material id> <quantity>`` as three positive integers (quantity at most
    ``MAX_QUANTITY``), or None when the arguments are anything else."""
    parts = (args or "").split()
    if len(parts) != 3 or not all(_NUMBER.fullmatch(part) for part in parts):
        return None
    request_id, material_id, quantity = (int(part) for part in parts)
    if min(request_id, material_id, quantity) < 1 or quantity > MAX_QUANTITY:
        return None
    return request_id, material_id, quantity


@router.message(Command("tasks"))
async def tasks(
    message: Message, user: asyncpg.Record, state_manager: EnhancedStateManager
) -> None:
    """Lists active requests owned by the user's role, each with a "next step" button."""
    if user["role"] not in STAFF_ROLES:
        await message.answer(_("Only staff have tasks."))
        return
    rows = await state_manager.list_for_role(user["role"], user_id=user["id"])
    if not rows:
        await message.answer(_("Nothing is waiting for your role."))
        return
    for row in rows:
        keyboard = InlineKeyboardBuilder()
        keyboard.button(
            text=_("Next step"),
            callback_data=AdvanceCb(request_id=row["id"], version=row["version"]),
        )
        await message.answer(
            html(
                "#{id} {workflow}: {state}\n{description}",
                id=row["id"],
                workflow=workflow_label(row["workflow_type"]),
                state=state_label(row["current_state"]),
                description=cut(row["description"], 200),
            ),
            reply_markup=keyboard.as_markup(),
        )


@router.callback_query(AdvanceCb.filter())
async def advance(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: AdvanceCb,
    user: asyncpg.Record,
    state_manager: EnhancedStateManager,
) -> None:
    """Moves the request on. A stale button gets the concurrent-modification answer; a user
    who may not act on the request gets one permission refusal, whatever the request."""
    request = await state_manager.advance(
        Actor(user["id"], user["role"]), callback_data.request_id, callback_data.version
    )
    template = _("Request #{id} moved to {state}.")
    values = {"id": request["id"], "state": state_label(request["current_state"])}
    callback_answer.text = plain(template, **values)
    if query.message is not None:
        await query.message.answer(html(template, **values))


@router.message(Command("use"))
async def use_material(
    message: Message,
    command: CommandObject,
    user: asyncpg.Record,
    state_manager: EnhancedStateManager,
) -> None:
    """``/use <request id> <material id> <quantity>``: a technician or the warehouse takes
    materials from stock for a request. The Telegram message names the use (idempotency
    key), so a re-delivered update takes nothing twice."""
    parsed = parse_use(command.args)
    if parsed is None:
        await message.answer(escape(_("Usage: /use <request> <material> <quantity>")))
        return
    request_id, material_id, quantity = parsed
    use = await state_manager.use_materials(
        Actor(user["id"], user["role"]),
        request_id,
        material_id,
        quantity,
        idempotency_key=f"tg:{message.chat.id}:{message.message_id}",
    )
    await message.answer(
        html(
            _("Used {quantity} of material #{material} for request #{id}; {balance} left."),
            quantity=use.quantity,
            material=use.material_id,
            id=use.request_id,
            balance=use.balance_after,
        )
    )
