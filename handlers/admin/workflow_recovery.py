"""``/workflow_recovery``: the admin menu (stuck workflows, health, inventory, errors,
notification retries, recovery history)."""

from __future__ import annotations

import html

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.admin import stuck_workflows
from handlers.callbacks import MenuCb, StuckListCb
from handlers.screens import edit_or_send
from recovery.health import HealthMonitor

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


def back_markup(target: MenuCb) -> InlineKeyboardMarkup:
    """A single "back" button."""
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("« Back"), callback_data=target)
    return keyboard.as_markup()


@router.message(Command("workflow_recovery"))
async def open_menu(message: Message) -> None:
    """The main menu."""
    await message.answer(_("Workflow recovery. Choose a section:"), reply_markup=main_menu_markup())


@router.callback_query(MenuCb.filter(F.section == "main"))
async def main_menu(query: CallbackQuery) -> None:
    """Back to the main menu."""
    await edit_or_send(query, _("Workflow recovery. Choose a section:"), main_menu_markup())


@router.callback_query(MenuCb.filter(F.section == "health"))
async def health(query: CallbackQuery, health_monitor: HealthMonitor) -> None:
    """The live health figures."""
    summary = await health_monitor.summary()
    status = HealthMonitor.status_of(summary)
    notifications = summary["notifications"]
    text = "\n".join(
        [
            _("System health: {status}").format(status=status),
            _("Active requests: {n}").format(n=summary["active_requests"]),
            _("Stuck requests: {n}").format(n=summary["stuck_requests"]),
            _("Notifications pending / retrying / dead: {p} / {r} / {d}").format(
                p=notifications["pending"], r=notifications["retrying"], d=notifications["dead"]
            ),
            _("Negative balances: {n}").format(n=summary["negative_balances"]),
            _("Error groups in the last hour: {n}").format(
                n=sum(summary["errors_last_hour"].values())
            ),
        ]
    )
    await edit_or_send(query, text, back_markup(MenuCb(section="main")))


@router.callback_query(MenuCb.filter(F.section == "inventory"))
async def inventory(query: CallbackQuery, health_monitor: HealthMonitor) -> None:
    """Materials with a negative balance."""
    rows = await health_monitor.negative_balances()
    lines = [_("Negative balances: {n}").format(n=len(rows))]
    lines += [
        f"{html.escape(row['sku'])} {html.escape(row['name'])}: {row['balance']}" for row in rows
    ]
    await edit_or_send(query, "\n".join(lines), back_markup(MenuCb(section="main")))


@router.callback_query(MenuCb.filter(F.section == "errors"))
async def errors(query: CallbackQuery, health_monitor: HealthMonitor) -> None:
    """Error groups of the last 24 hours by category and severity."""
    rows = await health_monitor.error_counts(24)
    lines = [_("Errors in the last 24 hours:")]
    lines += [
        f"{row['category']}/{row['severity']}: {row['groups']} ({row['occurrences']})"
        for row in rows
    ] or [_("none")]
    await edit_or_send(query, "\n".join(lines), back_markup(MenuCb(section="main")))


@router.callback_query(MenuCb.filter(F.section == "retries"))
async def retries(query: CallbackQuery, health_monitor: HealthMonitor) -> None:
    """Notification outbox rows by status."""
    counts = await health_monitor.notification_counts()
    lines = [_("Notifications by status:")]
    lines += [f"{status}: {count}" for status, count in sorted(counts.items())] or [_("none")]
    await edit_or_send(query, "\n".join(lines), back_markup(MenuCb(section="main")))


@router.callback_query(MenuCb.filter(F.section == "history"))
async def history(query: CallbackQuery, health_monitor: HealthMonitor) -> None:
    """The latest admin recovery actions."""
    rows = await health_monitor.recent_recovery_actions(10)
    lines = [_("Recovery history:")]
    for row in rows:
        outcome = "✓" if row["success"] else "✗"
        lines.append(
            f"{row['created_at']:%Y-%m-%d %H:%M} {outcome} {row['action']} "
            f"#{row['request_id']} "
            f"{html.escape(row['admin_name'] or str(row['admin_telegram_id']))}"
        )
    if not rows:
        lines.append(_("none"))
    await edit_or_send(query, "\n".join(lines), back_markup(MenuCb(section="main")))


# the sections' own routers (stuck workflows: handlers/admin/stuck_workflows.py)
router.include_router(stuck_workflows.router)
