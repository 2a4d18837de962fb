"""One inventory discrepancy: its detail, fixing it (after a confirmation) and accepting it
with a reason; each action audited."""

from __future__ import annotations

import asyncpg
from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.admin.inventory import (
    ACTION_LABELS,
    REASON_MAX,
    STATUS_LABELS,
    InventoryAccept,
    _valid_id,
    kind_label,
)
from handlers.callbacks import DiscrepancyCb, DiscrepancyListCb
from handlers.filters import TextAnswer
from handlers.render import Html, bold, html, join
from handlers.screens import alert, edit_or_send
from recovery.actors import Actor
from recovery.audit import AdminAuditLog
from recovery.exceptions import (
    ConcurrentModificationError,
    DomainError,
    InputValidationError,
    NotFoundError,
)
from recovery.inventory import Discrepancy, FixOutcome, InventoryReconciliationManager

router = Router(name=__name__)


def render_discrepancy(d: Discrepancy) -> Html:
    """One discrepancy's detail (every value escaped)."""
    lines = [
        html(
            "{title} · {status}",
            title=bold(html(_("Discrepancy #{id}: {kind}"), id=d.id, kind=kind_label(d.kind))),
            status=str(STATUS_LABELS.get(d.status, d.status)),
        ),
        html(_("Material: {sku} (#{id})"), sku=d.sku or "-", id=d.material_id),
        html(
            _("Balance: {balance}, ledger: {ledger}, correction: {amount}"),
            balance=d.balance,
            ledger=d.ledger_sum,
            amount=f"{d.amount:+d}",
        ),
    ]
    if d.request_id is not None:
        lines.append(html(_("Request: #{id}"), id=d.request_id))
    if d.transaction_id is not None:
        lines.append(html(_("Ledger row: #{id}"), id=d.transaction_id))
    if d.reason:
        lines.append(html(_("Reason: {reason}"), reason=d.reason))
    return join("\n", lines)


async def _discrepancy_or_refuse(
    callback_answer: CallbackAnswer, inventory: InventoryReconciliationManager, discrepancy_id: int
) -> Discrepancy | None:
    if _valid_id(discrepancy_id):
        try:
            return await inventory.get(discrepancy_id)
        except NotFoundError:
            pass
    alert(callback_answer, _("This discrepancy does not exist."))
    return None


@router.callback_query(DiscrepancyCb.filter(F.action == "show"))
async def detail(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: DiscrepancyCb,
    inventory: InventoryReconciliationManager,
) -> None:
    """One discrepancy with its actions (when it is still open)."""
    d = await _discrepancy_or_refuse(callback_answer, inventory, callback_data.discrepancy_id)
    if d is None:
        return
    keyboard = InlineKeyboardBuilder()
    if d.status == "open":
        for action, label in (("fix", _("Fix")), ("accept", _("Accept with a reason"))):
            keyboard.button(
                text=label,
                callback_data=DiscrepancyCb(
                    action=action,
                    discrepancy_id=callback_data.discrepancy_id,
                    page=callback_data.page,
                ),
            )
    keyboard.button(text=_("« Back"), callback_data=DiscrepancyListCb(page=callback_data.page))
    keyboard.adjust(1)
    await edit_or_send(query, render_discrepancy(d), keyboard.as_markup())


@router.callback_query(DiscrepancyCb.filter(F.action == "fix"))
async def confirm_fix(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: DiscrepancyCb,
    inventory: InventoryReconciliationManager,
) -> None:
    """Says what fixing the discrepancy does and asks for confirmation."""
    d = await _discrepancy_or_refuse(callback_answer, inventory, callback_data.discrepancy_id)
    if d is None:
        return
    text = html(
        _(
            "Fix discrepancy #{id} ({kind}) of {sku}? A correction of {amount} is written and "
            "logged; the fix uses the figures current at that moment."
        ),
        id=d.id,
        kind=kind_label(d.kind),
        sku=d.sku or "-",
        amount=f"{d.amount:+d}",
    )
    keyboard = InlineKeyboardBuilder()
    keyboard.button(
        text=_("Confirm"),
        callback_data=DiscrepancyCb(
            action="fix_ok", discrepancy_id=d.id or 0, page=callback_data.page
        ),
    )
    keyboard.button(
        text=_("Cancel"),
        callback_data=DiscrepancyCb(
            action="show", discrepancy_id=d.id or 0, page=callback_data.page
        ),
    )
    await edit_or_send(query, text, keyboard.as_markup())


def _outcome_text(discrepancy_id: int, outcome: FixOutcome) -> Html:
    text = html(
        _("Discrepancy #{id}: {action}."),
        id=discrepancy_id,
        action=str(ACTION_LABELS.get(outcome.action, outcome.action)),
    )
    if outcome.before and outcome.after:
        text += "\n" + html(
            _("Balance {b0} → {b1}, ledger {l0} → {l1}."),
            b0=outcome.before.get("balance"),
            b1=outcome.after.get("balance"),
            l0=outcome.before.get("ledger_sum"),
            l1=outcome.after.get("ledger_sum"),
        )
    return text


def _refusal(exc: DomainError) -> str:
    if isinstance(exc, ConcurrentModificationError):
        return _("This discrepancy was fixed, accepted or resolved meanwhile.")
    if isinstance(exc, NotFoundError):
        return _("This discrepancy does not exist.")
    return _("This action cannot be done right now.")


@router.callback_query(DiscrepancyCb.filter(F.action == "fix_ok"))
async def fix_one(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: DiscrepancyCb,
    user: asyncpg.Record,
    inventory: InventoryReconciliationManager,
    audit: AdminAuditLog,
) -> None:
    """Fixes one discrepancy (audited); a stale or missing one is refused with a clear
    answer, and audited as refused."""
    d = await _discrepancy_or_refuse(callback_answer, inventory, callback_data.discrepancy_id)
    if d is None:
        await audit.record(
            Actor.of(user),
            "inventory.fix_one",
            target_type="discrepancy",
            target_id=callback_data.discrepancy_id,
            success=False,
            error=f"not_found: discrepancy {callback_data.discrepancy_id}",
        )
        return
    back = InlineKeyboardBuilder()
    back.button(text=_("« Back"), callback_data=DiscrepancyListCb(page=callback_data.page))
    try:
        outcome = await audit.audited(
            Actor.of(user),
            "inventory.fix_one",
            lambda: inventory.fix_one(d.id or 0, Actor.of(user)),
            target_type="discrepancy",
            target_id=d.id,
            before={"kind": str(d.kind), "amount": d.amount, "status": d.status},
            after=lambda o: {
                "action": o.action,
                "before": o.before,
                "after": o.after,
                "transaction_id": o.transaction_id,
            },
        )
    except (ConcurrentModificationError, NotFoundError) as exc:
        alert(callback_answer, _refusal(exc))
        return
    await edit_or_send(query, _outcome_text(d.id or 0, outcome), back.as_markup())


@router.callback_query(DiscrepancyCb.filter(F.action == "accept"))
async def ask_reason(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: DiscrepancyCb,
    inventory: InventoryReconciliationManager,
    state: FSMContext,
) -> None:
    """Asks for the reason of accepting the discrepancy."""
    d = await _discrepancy_or_refuse(callback_answer, inventory, callback_data.discrepancy_id)
    if d is None:
        return
    await state.set_state(InventoryAccept.reason)
    await state.update_data(discrepancy_id=d.id, page=callback_data.page)
    keyboard = InlineKeyboardBuilder()
    keyboard.button(
        text=_("Cancel"),
        callback_data=DiscrepancyCb(
            action="show", discrepancy_id=d.id or 0, page=callback_data.page
        ),
    )
    await edit_or_send(
        query,
        html(
            _("Send the reason for accepting discrepancy #{id} (at most {n} characters)."),
            id=d.id,
            n=REASON_MAX,
        ),
        keyboard.as_markup(),
    )


@router.message(StateFilter(InventoryAccept.reason), TextAnswer())
async def accept(
    message: Message,
    user: asyncpg.Record,
    inventory: InventoryReconciliationManager,
    audit: AdminAuditLog,
    state: FSMContext,
) -> None:
    """Accepts the discrepancy with the reason sent (audited)."""
    data = await state.get_data()
    discrepancy_id, page = int(data.get("discrepancy_id", 0)), int(data.get("page", 0))
    reason = (message.text or "").replace("\x00", "").strip()  # PostgreSQL text has no NUL
    if len(reason) > REASON_MAX:
        await message.answer(
            html(_("The reason is too long: at most {n} characters."), n=REASON_MAX)
        )
        return
    back = InlineKeyboardBuilder()
    back.button(text=_("« Back"), callback_data=DiscrepancyListCb(page=page))
    try:
        accepted = await audit.audited(
            Actor.of(user),
            "inventory.accept",
            lambda: inventory.accept(discrepancy_id, Actor.of(user), reason),
            target_type="discrepancy",
            target_id=discrepancy_id,
            reason=reason,
            before={"status": "open"},
            after=lambda d: {"status": d.status, "kind": str(d.kind), "amount": d.amount},
        )
    except InputValidationError:
        await message.answer(_("The reason cannot be empty. Send it again."))
        return
    except (ConcurrentModificationError, NotFoundError) as exc:
        await state.clear()
        await message.answer(_refusal(exc), reply_markup=back.as_markup())
        return
    await state.clear()
    await message.answer(
        html(_("Discrepancy #{id} accepted: {reason}"), id=accepted.id, reason=reason),
        reply_markup=back.as_markup(),
    )
