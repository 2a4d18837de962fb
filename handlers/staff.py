"""Staff see the requests waiting for their role (/tasks) and move them to the next step;
technicians and the warehouse take materials for a request (/use: request, material and
quantity chosen with buttons, or typed as ``/use <request> <material> <quantity>``)."""

from __future__ import annotations

import re

import asyncpg
from aiogram import Router
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import AdvanceCb, UseMaterialCb, UseRequestCb
from handlers.filters import TextAnswer
from handlers.render import cut, html, plain
from handlers.routing import gate_tree
from handlers.texts import state_label, unit_label, workflow_label
from recovery import workflow_definitions as wf
from recovery.actors import Actor
from recovery.exceptions import NotFoundError
from recovery.state_manager import EnhancedStateManager
from recovery.workflow_definitions import STAFF_ROLES

router = Router(name=__name__)

# /use arguments: ASCII digits only (str.isdigit() also accepts "²" and "١", which int()
# then refuses or reads as another number); ids are BIGINT (at most 2**63 - 1)
_NUMBER = re.compile(r"[0-9]{1,18}")
MAX_QUANTITY = 1_000_000
MATERIALS_PAGE = 8  # material buttons per page
MATERIAL_ROLES = ("technician", "warehouse", "admin")


class UseMaterial(StatesGroup):
    """/use: the request and material are chosen; waiting for the quantity."""

    quantity = State()


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
        following = wf.next_step(row["workflow_type"], row["current_state"])
        keyboard = InlineKeyboardBuilder()
        keyboard.button(
            text=plain(_("Next step: {state}"), state=state_label(following.state))
            if following is not None
            else _("Next step"),
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
        Actor.of(user), callback_data.request_id, callback_data.version
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
    state: FSMContext,
) -> None:
    """``/use``: the user's requests that can take materials, as buttons; typed as
    ``/use <request id> <material id> <quantity>`` it takes the materials at once."""
    await state.clear()
    if not command.args:
        await _offer_requests(message, user, state_manager)
        return
    parsed = parse_use(command.args)
    if parsed is None:
        await message.answer(
            _(
                "Send /use alone to choose the request and the material with buttons, or "
                "/use followed by the request number, the material number and the quantity."
            ),
            parse_mode=None,
        )
        return
    request_id, material_id, quantity = parsed
    await _take(message, user, state_manager, request_id, material_id, quantity)


async def _offer_requests(
    message: Message, user: asyncpg.Record, state_manager: EnhancedStateManager
) -> None:
    if user["role"] not in MATERIAL_ROLES:
        await message.answer(_("Only technicians and the warehouse take materials."))
        return
    role = user["role"] if user["role"] != "admin" else "technician"
    rows = [
        row
        for row in await state_manager.list_for_role(role, user_id=user["id"])
        if row["current_state"] in wf.MATERIAL_STATES
    ]
    if not rows:
        await message.answer(_("None of your requests takes materials now."))
        return
    keyboard = InlineKeyboardBuilder()
    for row in rows:
        keyboard.button(
            text=plain(
                "#{id} {workflow}: {state}",
                id=row["id"],
                workflow=workflow_label(row["workflow_type"]),
                state=state_label(row["current_state"]),
            ),
            callback_data=UseRequestCb(request_id=row["id"]),
        )
    keyboard.adjust(1)
    await message.answer(_("Materials for which request?"), reply_markup=keyboard.as_markup())


@router.callback_query(UseRequestCb.filter())
async def choose_material(
    query: CallbackQuery, callback_data: UseRequestCb, state_manager: EnhancedStateManager
) -> None:
    """A page of materials as buttons: name and balance."""
    page = callback_data.page
    rows, total = await state_manager.list_materials(
        limit=MATERIALS_PAGE, offset=page * MATERIALS_PAGE
    )
    keyboard = InlineKeyboardBuilder()
    for row in rows:
        keyboard.button(
            text=plain(
                _("{name} · {balance} {unit} in stock"),
                name=row["name"],
                balance=row["balance"],
                unit=unit_label(row["unit"]),
            ),
            callback_data=UseMaterialCb(request_id=callback_data.request_id, material_id=row["id"]),
        )
    navigation = 0
    if page > 0:
        keyboard.button(
            text="‹", callback_data=UseRequestCb(request_id=callback_data.request_id, page=page - 1)
        )
        navigation += 1
    if (page + 1) * MATERIALS_PAGE < total:
        keyboard.button(
            text="›", callback_data=UseRequestCb(request_id=callback_data.request_id, page=page + 1)
        )
        navigation += 1
    keyboard.adjust(*([1] * len(rows)), *([navigation] if navigation else []))

    if query.message is not None:
        text = (
            html(_("Request #{id}: which material?"), id=callback_data.request_id)
            if rows
            else _("There are no materials in the warehouse list.")
        )
        await query.message.answer(text, reply_markup=keyboard.as_markup())


@router.callback_query(UseMaterialCb.filter())
async def ask_quantity(
    query: CallbackQuery,
    callback_data: UseMaterialCb,
    state_manager: EnhancedStateManager,
    state: FSMContext,
) -> None:
    """Remembers the request and the material; asks how many."""
    material = await state_manager.get_material(callback_data.material_id)

    if material is None or query.message is None:
        if query.message is not None:
            await query.message.answer(
                _("This material is no longer in the list. Send /use again.")
            )
        return
    await state.set_state(UseMaterial.quantity)
    await state.update_data(use_request=callback_data.request_id, use_material=material["id"])
    await query.message.answer(
        html(
            _("How many {unit} of {name} for request #{id}? In stock: {balance}. Send a number."),
            unit=unit_label(material["unit"]),
            name=material["name"],
            id=callback_data.request_id,
            balance=material["balance"],
        )
    )


@router.message(StateFilter(UseMaterial.quantity), TextAnswer())
async def quantity_given(
    message: Message,
    user: asyncpg.Record,
    state_manager: EnhancedStateManager,
    state: FSMContext,
) -> None:
    """Takes the quantity; anything but a whole number from 1 to ``MAX_QUANTITY`` is asked
    again."""
    text = (message.text or "").strip()
    if not _NUMBER.fullmatch(text) or not 1 <= int(text) <= MAX_QUANTITY:
        await message.answer(
            html(_("Send the quantity as a whole number from 1 to {n}."), n=MAX_QUANTITY)
        )
        return
    data = await state.get_data()
    await state.clear()
    await _take(message, user, state_manager, data["use_request"], data["use_material"], int(text))


async def _take(
    message: Message,
    user: asyncpg.Record,
    state_manager: EnhancedStateManager,
    request_id: int,
    material_id: int,
    quantity: int,
) -> None:
    """Takes the materials. The Telegram message names the use (idempotency key), so a
    re-delivered update takes nothing twice. A material that does not exist is the user's
    typing mistake: answered, not recorded as an error (a stock too small is an inventory
    error, recorded and answered by the error middleware)."""
    try:
        use = await state_manager.use_materials(
            Actor.of(user),
            request_id,
            material_id,
            quantity,
            idempotency_key=f"tg:{message.chat.id}:{message.message_id}",
        )
    except NotFoundError as exc:
        if exc.entity != "material":
            raise
        await message.answer(
            html(
                _("There is no material #{id}. Send /use alone to choose from the list."),
                id=material_id,
            )
        )
        return
    material = await state_manager.get_material(use.material_id)
    await message.answer(
        html(
            _("Used {quantity} {unit} of {name} for request #{id}; {balance} left."),
            quantity=use.quantity,
            unit=unit_label(material["unit"]) if material else "",
            name=material["name"] if material else use.material_id,
            id=use.request_id,
            balance=use.balance_after,
        )
    )


# a message or callback query that no handler above could take skips this router at its root
gate_tree(router)
