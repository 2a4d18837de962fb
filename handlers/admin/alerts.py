"""Buttons on admin alert messages: mute a kind of alert for a period, or lift the mute.
The buttons are attached by ``recovery.alerts.AdminAlerts`` through the outbox."""

from __future__ import annotations

import logging

import asyncpg
from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import AlertMuteCb, AlertUnmuteCb
from handlers.render import plain
from handlers.screens import alert
from recovery.alerts import KIND_LABELS, MUTE_BUTTON_TEXTS, MUTE_DURATIONS_S, AdminAlerts, AlertKind
from recovery.audit import AdminAuditLog
from recovery.workflows import AdminRef

log = logging.getLogger(__name__)
router = Router(name=__name__)

KINDS = {kind.value for kind in AlertKind}


def mute_callback(kind: str, seconds: int) -> str:
    """Callback data of a mute button (``recovery.alerts.MuteCallback``)."""
    return AlertMuteCb(kind=kind, seconds=seconds).pack()


def unmute_markup(kind: str) -> InlineKeyboardMarkup:
    """The alert message's keyboard while muted: one button to lift the mute."""
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("Unmute"), callback_data=AlertUnmuteCb(kind=kind))
    return keyboard.as_markup()


def mute_markup(kind: str) -> InlineKeyboardMarkup:
    """The alert message's keyboard when not muted."""
    keyboard = InlineKeyboardBuilder()
    for seconds in MUTE_DURATIONS_S:
        keyboard.button(
            text=_(MUTE_BUTTON_TEXTS[seconds]),
            callback_data=AlertMuteCb(kind=kind, seconds=seconds),
        )
    keyboard.adjust(len(MUTE_DURATIONS_S))
    return keyboard.as_markup()


async def _replace_keyboard(query: CallbackQuery, markup: InlineKeyboardMarkup) -> None:
    if not isinstance(query.message, Message):
        return
    try:
        await query.message.edit_reply_markup(reply_markup=markup)
    except TelegramBadRequest as exc:  # too old to edit, or already showing this keyboard
        log.info("alert keyboard not replaced: %s", exc.message)


@router.callback_query(AlertMuteCb.filter())
async def mute(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: AlertMuteCb,
    user: asyncpg.Record,
    alerts: AdminAlerts,
    audit: AdminAuditLog,
) -> None:
    """Mutes the kind for this admin for the chosen period (audited)."""
    kind, seconds = callback_data.kind, callback_data.seconds
    if kind not in KINDS or seconds not in MUTE_DURATIONS_S:
        await audit.record(
            AdminRef.of(user),
            "alert.mute",
            target_type="alert_kind",
            target_id=kind,
            success=False,
            error=f"refused: no mute option {kind} for {seconds} s",
        )
        alert(callback_answer, _("This mute option is not available."))
        return
    chat_id = query.from_user.id
    before = await alerts.muted_until(chat_id=chat_id, kind=kind)
    until = await audit.audited(
        AdminRef.of(user),
        "alert.mute",
        lambda: alerts.mute(chat_id=chat_id, kind=kind, duration_s=seconds, muted_by=user["id"]),
        target_type="alert_kind",
        target_id=kind,
        before={"muted_until": before.isoformat() if before else None},
        after=lambda end: {"muted_until": end.isoformat(), "seconds": seconds},
    )
    alert(
        callback_answer,
        plain(
            _("Alerts about {kind} are muted for you until {until} UTC."),
            kind=_(KIND_LABELS[AlertKind(kind)]),
            until=f"{until:%Y-%m-%d %H:%M}",
        ),
    )
    await _replace_keyboard(query, unmute_markup(kind))


@router.callback_query(AlertUnmuteCb.filter())
async def unmute(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: AlertUnmuteCb,
    user: asyncpg.Record,
    alerts: AdminAlerts,
    audit: AdminAuditLog,
) -> None:
    """Lifts this admin's mute of the kind (audited)."""
    kind = callback_data.kind
    if kind not in KINDS:
        await audit.record(
            AdminRef.of(user),
            "alert.unmute",
            target_type="alert_kind",
            target_id=kind,
            success=False,
            error=f"refused: no alert kind {kind}",
        )
        alert(callback_answer, _("This mute option is not available."))
        return
    chat_id = query.from_user.id
    ended = await audit.audited(
        AdminRef.of(user),
        "alert.unmute",
        lambda: alerts.unmute(chat_id=chat_id, kind=kind),
        target_type="alert_kind",
        target_id=kind,
        after=lambda was: {"was_muted_until": was.isoformat() if was else None},
    )
    text = (
        _("Alerts about {kind} are on again.")
        if ended is not None
        else _("Alerts about {kind} were not muted.")
    )
    alert(callback_answer, plain(text, kind=_(KIND_LABELS[AlertKind(kind)])))
    await _replace_keyboard(query, mute_markup(kind))
