"""``/workflow_recovery``: the admin menu (stuck workflows, health, inventory, errors,
notification retries, recovery history). Health, errors and history live in their own
modules of this package."""

from __future__ import annotations

import html

import asyncpg
from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import MenuCb, StuckActionCb, StuckDetailCb, StuckListCb
from handlers.screens import edit_or_send
from handlers.texts import duration, role_label, state_label, workflow_label
from recovery import workflow_definitions as wf
from recovery.health import HealthMonitor
from recovery.workflows import AdminRef, WorkflowRecoveryManager

router = Router(name=__name__)

PAGE_SIZE = 5


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


def back_markup(target: MenuCb | StuckListCb | StuckDetailCb) -> InlineKeyboardMarkup:
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


@router.callback_query(StuckListCb.filter())
async def stuck_list(
    query: CallbackQuery, callback_data: StuckListCb, workflow_recovery: WorkflowRecoveryManager
) -> None:
    """A page of stuck requests, longest-stuck first."""
    page = max(callback_data.page, 0)
    result = await workflow_recovery.find_stuck(limit=PAGE_SIZE, offset=page * PAGE_SIZE)
    keyboard = InlineKeyboardBuilder()
    for item in result.items:
        keyboard.button(
            text=f"#{item.request_id} {workflow_label(item.workflow_type)} · "
            f"{state_label(item.state)} · {duration(item.stuck_for_s)}",
            callback_data=StuckDetailCb(request_id=item.request_id, page=page),
        )
    navigation = 0
    if page > 0:
        keyboard.button(text="‹", callback_data=StuckListCb(page=page - 1))
        navigation += 1
    if (page + 1) * PAGE_SIZE < result.total:
        keyboard.button(text="›", callback_data=StuckListCb(page=page + 1))
        navigation += 1
    keyboard.button(text=_("« Back"), callback_data=MenuCb(section="main"))
    keyboard.adjust(*([1] * len(result.items)), *([navigation] if navigation else []), 1)
    if result.total:
        text = _("Stuck workflows: {total}. Page {page} of {pages}.").format(
            total=result.total, page=page + 1, pages=(result.total + PAGE_SIZE - 1) // PAGE_SIZE
        )
    else:
        text = _("No stuck workflows.")
    await edit_or_send(query, text, keyboard.as_markup())


@router.callback_query(StuckDetailCb.filter())
async def stuck_detail(
    query: CallbackQuery, callback_data: StuckDetailCb, workflow_recovery: WorkflowRecoveryManager
) -> None:
    """A request's detail with its history and the recovery actions."""
    request, history = await workflow_recovery.get_detail(callback_data.request_id)
    lines = [
        _("Request #{id} ({workflow})").format(
            id=request["id"], workflow=workflow_label(request["workflow_type"])
        ),
        _("State: {state}, owner: {role}, status: {status}").format(
            state=state_label(request["current_state"]),
            role=role_label(request["owner_role"]),
            status=request["status"],
        ),
        _("Description: {text}").format(text=html.escape(request["description"][:300])),
        "",
        _("History:"),
    ]
    for row in history:
        lines.append(
            f"{row['created_at']:%Y-%m-%d %H:%M} {row['kind']}: "
            f"{state_label(row['from_state'])} → {state_label(row['to_state'])}"
        )
    keyboard = InlineKeyboardBuilder()
    if request["status"] == "active" and wf.next_step(
        request["workflow_type"], request["current_state"]
    ):
        keyboard.button(
            text=_("Force transition"),
            callback_data=StuckActionCb(
                action="force", request_id=request["id"], version=request["version"]
            ),
        )
    keyboard.button(text=_("« Back"), callback_data=StuckListCb(page=callback_data.page))
    keyboard.adjust(1)
    await edit_or_send(query, "\n".join(lines), keyboard.as_markup())


@router.callback_query(StuckActionCb.filter((F.action == "force") & ~F.confirm))
async def confirm_force(
    query: CallbackQuery, callback_data: StuckActionCb, workflow_recovery: WorkflowRecoveryManager
) -> None:
    """Spells out what a forced transition does and asks for confirmation."""
    request, _history = await workflow_recovery.get_detail(callback_data.request_id)
    step = wf.next_step(request["workflow_type"], request["current_state"])
    text = _(
        "Force request #{id} from {current} to {next}?\n"
        "The {role} staff and the client will be notified."
    ).format(
        id=request["id"],
        current=state_label(request["current_state"]),
        next=state_label(step.state if step else None),
        role=role_label(step.role if step else None),
    )
    keyboard = InlineKeyboardBuilder()
    keyboard.button(
        text=_("Confirm"),
        callback_data=StuckActionCb(
            action="force",
            request_id=callback_data.request_id,
            version=callback_data.version,
            confirm=True,
        ),
    )
    keyboard.button(text=_("Cancel"), callback_data=StuckDetailCb(request_id=request["id"]))
    await edit_or_send(query, text, keyboard.as_markup())


@router.callback_query(StuckActionCb.filter((F.action == "force") & F.confirm))
async def apply_force(
    query: CallbackQuery,
    callback_data: StuckActionCb,
    user: asyncpg.Record,
    workflow_recovery: WorkflowRecoveryManager,
) -> None:
    """Applies the forced transition against the version the admin saw."""
    updated = await workflow_recovery.force_transition(
        callback_data.request_id,
        expected_version=callback_data.version,
        admin=AdminRef(user_id=user["id"], telegram_id=user["telegram_id"]),
    )
    text = _("Request #{id} moved to {state}.").format(
        id=updated["id"], state=state_label(updated["current_state"])
    )
    await edit_or_send(query, text, back_markup(StuckDetailCb(request_id=updated["id"])))


@router.callback_query(MenuCb.filter(F.section == "retries"))
async def retries(query: CallbackQuery, health_monitor: HealthMonitor) -> None:
    """Notification outbox rows by status."""
    counts = await health_monitor.notification_counts()
    lines = [_("Notifications by status:")]
    lines += [f"{status}: {count}" for status, count in sorted(counts.items())] or [_("none")]
    await edit_or_send(query, "\n".join(lines), back_markup(MenuCb(section="main")))
