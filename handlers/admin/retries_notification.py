"""One dead or failing notification: its detail, sending it again or discarding it (each
after a confirmation, audited, refused when it is no longer possible)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.admin.retries import (
    DISCARDABLE,
    RETRYABLE,
    _back,
    _valid_id,
    status_label,
)
from handlers.callbacks import NotificationCb, RetryListCb
from handlers.labels import DEAD_REASON_MSGIDS
from handlers.render import Html, bold, cut, html, join
from handlers.screens import alert, edit_or_send
from handlers.texts import state_label, template_label
from recovery.actors import Actor
from recovery.audit import AdminAuditLog
from recovery.notifications import NotificationRetryManager, RequestMoved

router = Router(name=__name__)


async def _notification_or_refuse(
    callback_answer: CallbackAnswer,
    notifications: NotificationRetryManager,
    notification_id: int,
    *,
    audit_as: tuple[AdminAuditLog, Actor, str] | None = None,
) -> asyncpg.Record | None:
    """The notification, or None after a "does not exist" answer (recorded as a refused
    ``audit_as`` = (log, admin, action) when the button was an action)."""
    row = await notifications.get(notification_id) if _valid_id(notification_id) else None
    if row is None:
        if audit_as is not None:
            log, admin, action = audit_as
            await log.record(
                admin,
                action,
                target_type="notification",
                target_id=notification_id,
                success=False,
                error=f"not_found: notification {notification_id}",
            )
        alert(callback_answer, _("This notification does not exist."))
    return row


def render_notification(row: asyncpg.Record) -> Html:
    """One notification's detail (the stored error is already masked; values escaped)."""
    lines = [
        bold(
            html(
                _("Notification #{id}: {status}"),
                id=row["id"],
                status=status_label(row["status"]),
            )
        ),
        html(
            _("To {name}: {template}"),
            name=row.get("recipient_name") or html(_("chat {chat}"), chat=row["chat_id"]),
            template=template_label(row["template_key"]),
        ),
        html(_("Attempts: {n}"), n=row["attempts"])
        if row["status"] not in ("pending", "retrying")
        else html(
            _("Attempts: {n}; next attempt: {when} UTC"),
            n=row["attempts"],
            when=f"{row['next_attempt_at']:%Y-%m-%d %H:%M}",
        ),
        html(_("Last error: {error}"), error=cut(row["last_error"] or "-", 500)),
    ]
    if row["dead_reason"]:
        reason = row["dead_reason"]
        label = _(DEAD_REASON_MSGIDS[reason]) if reason in DEAD_REASON_MSGIDS else cut(reason, 500)
        lines.append(html(_("Why it stopped: {reason}"), reason=label))
    if row["request_id"] is not None:
        lines.append(html(_("Request: #{id}"), id=row["request_id"]))
    return join("\n", lines)


def moved_text(moved: RequestMoved) -> Html:
    """The warning of a notification whose request has moved on since it was written."""
    if moved.state is None:
        return html(
            _("⚠ Request #{id} no longer exists; this notification speaks of it as {said}."),
            id=moved.request_id,
            said=state_label(moved.said_state),
        )
    return html(
        _(
            "⚠ Request #{id} has moved on since this notification was written: it says "
            "«{said}», the request is now «{now}». It is sent as it was written."
        ),
        id=moved.request_id,
        said=state_label(moved.said_state),
        now=state_label(moved.state),
    )


@router.callback_query(NotificationCb.filter(F.action == "show"))
async def detail(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: NotificationCb,
    notifications: NotificationRetryManager,
) -> None:
    """One notification with the actions its status allows."""
    row = await _notification_or_refuse(
        callback_answer, notifications, callback_data.notification_id
    )
    if row is None:
        return
    keyboard = InlineKeyboardBuilder()
    for action, label, allowed in (
        ("retry", _("Retry now"), RETRYABLE),
        ("discard", _("Discard"), DISCARDABLE),
    ):
        if row["status"] in allowed:
            keyboard.button(
                text=label,
                callback_data=NotificationCb(
                    action=action, notification_id=row["id"], page=callback_data.page
                ),
            )
    keyboard.button(text=_("« Back"), callback_data=RetryListCb(page=callback_data.page))
    keyboard.adjust(1)
    await edit_or_send(query, render_notification(row), keyboard.as_markup())


async def _confirm_retry(
    query: CallbackQuery, row: asyncpg.Record, moved: RequestMoved | None, page: int
) -> None:
    keyboard = InlineKeyboardBuilder()
    keyboard.button(
        text=_("Confirm"),
        callback_data=NotificationCb(
            action="retry_ok", notification_id=row["id"], page=page, ack=int(moved is not None)
        ),
    )
    keyboard.button(
        text=_("Cancel"),
        callback_data=NotificationCb(action="show", notification_id=row["id"], page=page),
    )
    text = html(_("Retry notification #{id} now?"), id=row["id"])
    if moved is not None:
        text = join("\n", [text, moved_text(moved)])
    await edit_or_send(query, text, keyboard.as_markup())


@router.callback_query(NotificationCb.filter(F.action == "retry"))
async def confirm_retry(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: NotificationCb,
    notifications: NotificationRetryManager,
) -> None:
    """Asks before sending a notification again, saying so when its request has moved on."""
    row = await _notification_or_refuse(
        callback_answer, notifications, callback_data.notification_id
    )
    if row is None:
        return
    moved = await notifications.request_moved(row["id"])
    await _confirm_retry(query, row, moved, callback_data.page)


async def _refusal(notifications: NotificationRetryManager, notification_id: int) -> str:
    """``not_retryable`` / ``not_discardable`` detail: the status the row has now."""
    now = await notifications.get(notification_id)
    return now["status"] if now is not None else "gone"


# the refusal code of each audited action when the outbox refuses the change
REFUSALS = {"notification.retry": "not_retryable", "notification.discard": "not_discardable"}


async def _audited(
    audit: AdminAuditLog,
    notifications: NotificationRetryManager,
    admin: Actor,
    action: str,
    row: asyncpg.Record,
    change: Callable[[], Awaitable[bool]],
    *,
    before: dict[str, Any],
    after: Callable[[bool], dict[str, Any]],
) -> bool:
    """Runs ``change`` on the notification ``row``, audited as ``action``; a refused change
    (False) is audited as ``REFUSALS[action]`` with the status the row has now."""

    async def refused(done: bool) -> str | None:
        if done:
            return None
        return f"{REFUSALS[action]}: {await _refusal(notifications, row['id'])}"

    return await audit.audited(
        admin,
        action,
        change,
        target_type="notification",
        target_id=row["id"],
        before=before,
        after=after,
        refused=refused,
    )


@router.callback_query(NotificationCb.filter(F.action == "retry_ok"))
async def retry_one(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: NotificationCb,
    user: asyncpg.Record,
    notifications: NotificationRetryManager,
    audit: AdminAuditLog,
) -> None:
    """Makes one notification due now (audited; refused when it is no longer retryable)."""
    row = await _notification_or_refuse(
        callback_answer,
        notifications,
        callback_data.notification_id,
        audit_as=(audit, Actor.of(user), "notification.retry"),
    )
    if row is None:
        return
    moved = await notifications.request_moved(row["id"])
    if moved is not None and not callback_data.ack:  # moved after the screen was shown
        await _confirm_retry(query, row, moved, callback_data.page)
        return

    done = await _audited(
        audit,
        notifications,
        Actor.of(user),
        "notification.retry",
        row,
        lambda: notifications.retry_now(row["id"], actor=Actor.of(user)),
        before={"status": row["status"], "attempts": row["attempts"]},
        after=lambda ok: {"done": ok},
    )
    text = html(
        _("Notification #{id} is due again; it goes out within seconds.")
        if done
        else _(
            "Notification #{id} cannot be retried now: it was sent, discarded or is being sent."
        ),
        id=row["id"],
    )
    await edit_or_send(query, text, _back(RetryListCb(page=callback_data.page)))


@router.callback_query(NotificationCb.filter(F.action == "discard"))
async def confirm_discard(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: NotificationCb,
    notifications: NotificationRetryManager,
) -> None:
    """Asks before giving up on a notification."""
    row = await _notification_or_refuse(
        callback_answer, notifications, callback_data.notification_id
    )
    if row is None:
        return
    keyboard = InlineKeyboardBuilder()
    keyboard.button(
        text=_("Confirm"),
        callback_data=NotificationCb(
            action="discard_ok", notification_id=row["id"], page=callback_data.page
        ),
    )
    keyboard.button(
        text=_("Cancel"),
        callback_data=NotificationCb(
            action="show", notification_id=row["id"], page=callback_data.page
        ),
    )
    await edit_or_send(
        query,
        html(
            _("Discard notification #{id}? It will not be sent; it stays visible as discarded."),
            id=row["id"],
        ),
        keyboard.as_markup(),
    )


@router.callback_query(NotificationCb.filter(F.action == "discard_ok"))
async def discard(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: NotificationCb,
    user: asyncpg.Record,
    notifications: NotificationRetryManager,
    audit: AdminAuditLog,
) -> None:
    """Discards one notification (audited; refused when it was sent or is being sent)."""
    row = await _notification_or_refuse(
        callback_answer,
        notifications,
        callback_data.notification_id,
        audit_as=(audit, Actor.of(user), "notification.discard"),
    )
    if row is None:
        return

    done = await _audited(
        audit,
        notifications,
        Actor.of(user),
        "notification.discard",
        row,
        lambda: notifications.discard(row["id"], actor=Actor.of(user)),
        before={"status": row["status"]},
        after=lambda ok: {"done": ok, "status": "discarded" if ok else row["status"]},
    )
    text = html(
        _("Notification #{id} discarded.")
        if done
        else _("Notification #{id} cannot be discarded now: it was sent or is being sent."),
        id=row["id"],
    )
    await edit_or_send(query, text, _back(RetryListCb(page=callback_data.page)))
