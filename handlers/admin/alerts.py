"""Buttons on admin alert messages: mute a kind of alert for a period, or lift the mute.
``recovery.alerts.AdminAlerts`` offers the mutes on the outbox row (kinds and durations);
``offer_markup`` makes the buttons when the message is sent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import AlertMuteCb, AlertUnmuteCb
from handlers.labels import DIGEST_MUTE_TEXTS, KIND_LABELS, MUTE_BUTTON_TEXTS
from handlers.render import plain
from handlers.screens import alert
from recovery.actors import Actor
from recovery.alerts import MUTE_DURATIONS_S, AdminAlerts, AlertKind, mute_offer
from recovery.audit import AdminAuditLog

log = logging.getLogger(__name__)
router = Router(name=__name__)

KINDS = {kind.value for kind in AlertKind}


def offer_markup(
    offer: Mapping[str, Any], gettext: Callable[[str], str]
) -> InlineKeyboardMarkup | None:
    """The buttons of a mute offer (``recovery.alerts.mute_offer``), texts through
    ``gettext``: a row per kind; with several durations each button names its duration (the
    message names the kind), with one the button names the kind. None when nothing is left
    to offer (unknown kinds or durations are left out)."""
    durations = [s for s in offer.get("durations", []) if s in MUTE_DURATIONS_S]
    keyboard = InlineKeyboardBuilder()
    rows = 0
    for kind in offer.get("kinds", []):
        if kind not in KINDS:
            continue
        if len(durations) > 1:
            for seconds in durations:
                keyboard.button(
                    text=gettext(MUTE_BUTTON_TEXTS[seconds]),
                    callback_data=AlertMuteCb(kind=kind, seconds=seconds),
                )
            keyboard.adjust(len(durations))
            rows += 1
        elif durations:
            keyboard.row(
                InlineKeyboardButton(
                    text=gettext(DIGEST_MUTE_TEXTS[kind]),
                    callback_data=AlertMuteCb(kind=kind, seconds=durations[0]).pack(),
                )
            )
            rows += 1
    return keyboard.as_markup() if rows else None


def unmute_markup(kind: str) -> InlineKeyboardMarkup:
    """The alert message's keyboard while muted: one button to lift the mute."""
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("Unmute"), callback_data=AlertUnmuteCb(kind=kind))
    return keyboard.as_markup()


def mute_markup(kind: str) -> InlineKeyboardMarkup:
    """The alert message's keyboard when not muted."""
    markup = offer_markup(mute_offer([kind], MUTE_DURATIONS_S), _)
    assert markup is not None  # a known kind
    return markup


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
            Actor.of(user),
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
        Actor.of(user),
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
            Actor.of(user),
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
        Actor.of(user),
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
