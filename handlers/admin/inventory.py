"""Inventory reconciliation screen: open discrepancies by kind, run a check now (progress
shown by editing the message), list and inspect discrepancies, fix one, fix all, accept one
with a reason (asked in a second step). Every action is audited."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiogram import F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import lazy_gettext as __
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import DiscrepancyCb, DiscrepancyListCb, InventoryCb, MenuCb
from handlers.render import Html, bold, html, join, plain
from handlers.screens import Pager, answer_now, edit_or_send, list_markup, replace
from recovery.actors import Actor
from recovery.audit import AdminAuditLog
from recovery.inventory import InventoryReconciliationManager, RunReport

log = logging.getLogger(__name__)
router = Router(name=__name__)

PAGE_SIZE = 5
REASON_MAX = 500
PROGRESS_EDIT_INTERVAL_S = 1.0
"""At most one progress edit per second (Telegram's per-chat pace), plus the first and last."""

KIND_LABELS = {
    "drift": __("balance differs from the ledger"),
    "negative_balance": __("negative balance"),
    "negative_ledger": __("negative ledger"),
    "orphaned_transaction": __("orphaned transaction"),
    "duplicate_reference": __("duplicate reference"),
}
STATUS_LABELS = {
    "open": __("open"),
    "fixed": __("fixed"),
    "accepted": __("accepted"),
    "resolved": __("resolved"),
}
ACTION_LABELS = {
    "adjusted": __("adjusted"),
    "reversed": __("reversed"),
    "skipped": __("already gone, closed"),
    "failed": __("failed"),
}


class InventoryAccept(StatesGroup):
    """Waiting for the reason of an acceptance (``discrepancy_id``, ``page`` in the data)."""

    reason = State()


def kind_label(kind: str) -> str:
    """The localized name of a discrepancy kind."""
    return str(KIND_LABELS.get(kind, kind))


def _valid_id(value: int) -> bool:
    return 0 < value < 2**63


class ProgressMessage:
    """Progress callback of a run (``recovery.inventory.Progress``) that edits one message:
    "checking" for the detection pass, "fixing" once a second pass starts (a fix run)."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.phase = -1
        self.last_edit = 0.0
        self.last_text = ""

    async def __call__(self, done: int, total: int) -> None:
        if done == 0:
            self.phase += 1
        now = time.monotonic()
        if 0 < done < total and now - self.last_edit < PROGRESS_EDIT_INTERVAL_S:
            return
        template = (
            _("Checking materials: {done} of {total}…")
            if self.phase <= 0
            else _("Fixing: {done} of {total} materials…")
        )
        text = plain(template, done=done, total=total)
        if text == self.last_text:
            return
        try:
            await self.message.edit_text(text)
        except TelegramAPIError as exc:  # flood control or an old message: skip this step
            log.info("progress edit skipped: %s", exc.message)
        self.last_edit, self.last_text = now, text


def _counts_lines(counts: dict[str, int]) -> list[Html]:
    return [html("• {kind}: {n}", kind=kind_label(kind), n=n) for kind, n in sorted(counts.items())]


def menu_markup(open_total: int) -> InlineKeyboardMarkup:
    """The section's actions."""
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("Run a check now"), callback_data=InventoryCb(action="check"))
    keyboard.button(
        text=plain(_("Open discrepancies ({n})"), n=open_total),
        callback_data=DiscrepancyListCb(page=0),
    )
    keyboard.button(text=_("Fix all"), callback_data=InventoryCb(action="fixall"))
    keyboard.button(text=_("« Back"), callback_data=MenuCb(section="main"))
    keyboard.adjust(1)
    return keyboard.as_markup()


def render_report(report: RunReport) -> list[Html]:
    """Lines describing a finished run."""
    lines = [
        html(_("Materials checked: {n}."), n=report.materials_checked),
        html(
            _("Discrepancies found: {n} (accepted ones skipped: {accepted})."),
            n=len(report.discrepancies),
            accepted=report.accepted,
        ),
    ]
    lines += _counts_lines(report.counts)
    if report.fixed or report.failed:
        lines.append(
            html(
                _("Fixed: {fixed}, failed: {failed}."),
                fixed=len(report.fixed),
                failed=len(report.failed),
            )
        )
    return lines


@router.callback_query(MenuCb.filter(F.section == "inventory"))
@router.callback_query(InventoryCb.filter(F.action == "menu"))
async def menu(
    query: CallbackQuery, inventory: InventoryReconciliationManager, state: FSMContext
) -> None:
    """Open discrepancies by kind and the actions."""
    await state.clear()
    counts = await inventory.open_counts()
    total = sum(counts.values())
    lines = [
        bold(_("Inventory reconciliation")),
        html(_("Open discrepancies: {n}"), n=total),
        *_counts_lines(counts),
    ]
    await edit_or_send(query, join("\n", lines), menu_markup(total))


@router.callback_query(InventoryCb.filter(F.action == "check"))
async def check(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    user: asyncpg.Record,
    inventory: InventoryReconciliationManager,
    audit: AdminAuditLog,
) -> None:
    """Runs a check now (records what is open, fixes nothing), showing its progress."""
    await answer_now(query, callback_answer, _("Checking the inventory…"))
    await _run_audited(
        query,
        Actor.of(user),
        inventory,
        audit,
        "inventory.check",
        inventory.check_now,
        _("Check done."),
    )


async def _run_audited(
    query: CallbackQuery,
    admin: Actor,
    inventory: InventoryReconciliationManager,
    audit: AdminAuditLog,
    action: str,
    run: Callable[[Actor, ProgressMessage], Awaitable[RunReport]],
    done: str,
) -> None:
    """Runs ``run`` (a check or a fix of everything) audited as ``action``, showing its
    progress in the menu message, then the report headed by ``done``."""
    if not isinstance(query.message, Message):
        return
    progress = ProgressMessage(query.message)
    report = await audit.audited(
        admin, action, lambda: run(admin, progress), after=lambda r: r.summary()
    )
    total = sum((await inventory.open_counts()).values())
    text = join("\n", [bold(done), *render_report(report)])
    await replace(query.message, text, menu_markup(total))


@router.callback_query(DiscrepancyListCb.filter())
async def open_list(
    query: CallbackQuery,
    callback_data: DiscrepancyListCb,
    inventory: InventoryReconciliationManager,
) -> None:
    """A page of open discrepancies, oldest first."""
    total = sum((await inventory.open_counts()).values())
    pager = Pager.of(total, callback_data.page, PAGE_SIZE)
    result = await inventory.list_open(limit=PAGE_SIZE, offset=pager.offset)
    buttons = [
        (
            f"#{d.id} {d.sku or d.material_id} · {kind_label(d.kind)} · {d.amount:+d}",
            DiscrepancyCb(action="show", discrepancy_id=d.id or 0, page=pager.page),
        )
        for d in result.items
    ]
    markup = list_markup(
        buttons,
        pager,
        lambda p: DiscrepancyListCb(page=p),
        (_("« Back"), InventoryCb(action="menu")),
    )
    if result.items:
        text: str = html(
            _("Open discrepancies: {total}. Page {page} of {pages}."),
            total=total,
            page=pager.page + 1,
            pages=pager.pages,
        )
    else:
        text = _("No open discrepancies.")
    await edit_or_send(query, text, markup)


@router.callback_query(InventoryCb.filter(F.action == "fixall"))
async def confirm_fix_all(query: CallbackQuery, inventory: InventoryReconciliationManager) -> None:
    """Says what "fix all" does and asks for confirmation."""
    total = sum((await inventory.open_counts()).values())
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("Confirm"), callback_data=InventoryCb(action="fixall_ok"))
    keyboard.button(text=_("Cancel"), callback_data=InventoryCb(action="menu"))
    text = html(
        _(
            "Fix every discrepancy ({n} open now)? The inventory is checked again first; "
            "accepted discrepancies are left alone. Each fix is logged."
        ),
        n=total,
    )
    await edit_or_send(query, text, keyboard.as_markup())


@router.callback_query(InventoryCb.filter(F.action == "fixall_ok"))
async def fix_all(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    user: asyncpg.Record,
    inventory: InventoryReconciliationManager,
    audit: AdminAuditLog,
) -> None:
    """Fixes every discrepancy (audited), showing the progress."""
    await answer_now(query, callback_answer, _("Fixing the inventory…"))
    await _run_audited(
        query,
        Actor.of(user),
        inventory,
        audit,
        "inventory.fix_all",
        inventory.fix_all,
        _("Fix all done."),
    )
