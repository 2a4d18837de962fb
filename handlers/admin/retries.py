"""Notification retries screen: notifications by status, the dead and failing ones with
their last error, retry one or all now, discard one. Every action is audited, a refused one
(the notification was sent or discarded meanwhile) as refused.

Retrying asks first: the confirmation says when the notification's request has moved on
since it was written (the notification would tell an old state), and a retry confirmed on a
screen that did not say so, while the request has moved meanwhile, shows the screen again
instead of sending."""

from __future__ import annotations

import asyncpg
from aiogram import F, Router
from aiogram.types import CallbackQuery, InlineKeyboardMarkup
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import lazy_gettext as __
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import MenuCb, NotificationCb, RetriesCb, RetryListCb
from handlers.render import bold, cut, html, join, plain
from handlers.screens import edit_or_send, fetch_page, list_markup
from handlers.texts import ngettext, template_label
from recovery.actors import Actor
from recovery.audit import AdminAuditLog
from recovery.notifications import FailingNotification, NotificationRetryManager

router = Router(name=__name__)

PAGE_SIZE = 5
FAILING = ("dead", "retrying")
RETRYABLE = ("dead", "retrying", "skipped")
DISCARDABLE = ("pending", "retrying", "dead", "skipped")

STATUS_LABELS = {
    "pending": __("pending"),
    "sending": __("sending"),
    "sent": __("sent"),
    "retrying": __("retrying"),
    "dead": __("dead"),
    "skipped": __("skipped"),
    "discarded": __("discarded"),
}


def status_label(status: str) -> str:
    """The localized name of an outbox status."""
    return str(STATUS_LABELS.get(status, status))


def _valid_id(value: int) -> bool:
    return 0 < value < 2**63


def _back(target: MenuCb | RetriesCb | RetryListCb) -> InlineKeyboardMarkup:
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("« Back"), callback_data=target)
    return keyboard.as_markup()


@router.callback_query(MenuCb.filter(F.section == "retries"))
@router.callback_query(RetriesCb.filter(F.action == "menu"))
async def menu(query: CallbackQuery, notifications: NotificationRetryManager) -> None:
    """Counts by status, the retry queue, and the actions."""
    counts = await notifications.status_counts()
    failing = sum(counts.get(status, 0) for status in FAILING)
    lines: list[str] = [bold(_("Notification retries"))]
    lines += [
        html("• {status}: {n}", status=status_label(status), n=counts.get(status, 0))
        for status in STATUS_LABELS
        if counts.get(status) or status in FAILING
    ]
    lines.append(html(_("Waiting in the retry queue: {n}"), n=await notifications.queue_depth()))
    keyboard = InlineKeyboardBuilder()
    keyboard.button(
        text=plain(_("Dead and failing ({n})"), n=failing), callback_data=RetryListCb(page=0)
    )
    if failing:
        keyboard.button(text=_("Retry all now"), callback_data=RetriesCb(action="retry_all"))
    keyboard.button(text=_("« Back"), callback_data=MenuCb(section="main"))
    keyboard.adjust(1)
    await edit_or_send(query, join("\n", lines), keyboard.as_markup())


def _short_error(item: FailingNotification, limit: int = 80) -> str:
    return cut(item.last_error or item.dead_reason or "-", limit)


@router.callback_query(RetryListCb.filter())
async def failing_list(
    query: CallbackQuery, callback_data: RetryListCb, notifications: NotificationRetryManager
) -> None:
    """A page of dead and failing notifications with their last error."""
    (items, total), pager = await fetch_page(
        lambda limit, offset: notifications.list_failing(
            statuses=FAILING, limit=limit, offset=offset
        ),
        lambda r: r[1],
        callback_data.page,
        PAGE_SIZE,
    )
    lines: list[str] = [
        html(
            _("Dead and failing notifications: {total}. Page {page} of {pages}."),
            total=total,
            page=pager.page + 1,
            pages=pager.pages,
        )
        if items
        else _("No dead or failing notifications.")
    ]
    lines += [
        html(
            "#{id} {status}: {error}",
            id=item.id,
            status=status_label(item.status),
            error=_short_error(item),
        )
        for item in items
    ]
    buttons = [
        (
            f"#{item.id} · {status_label(item.status)} · {item.attempts}× · "
            f"{template_label(item.template_key)}",
            NotificationCb(action="show", notification_id=item.id, page=pager.page),
        )
        for item in items
    ]
    markup = list_markup(
        buttons, pager, lambda p: RetryListCb(page=p), (_("« Back"), RetriesCb(action="menu"))
    )
    await edit_or_send(query, join("\n", lines), markup)


@router.callback_query(RetriesCb.filter(F.action == "retry_all"))
async def confirm_retry_all(query: CallbackQuery, notifications: NotificationRetryManager) -> None:
    """Asks before retrying every dead and failing notification, saying how many of them
    name a state their request has left."""
    counts = await notifications.status_counts()
    moved = await notifications.moved_count(FAILING)
    total = sum(counts.get(status, 0) for status in FAILING)
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("Confirm"), callback_data=RetriesCb(action="retry_all_ok"))
    keyboard.button(text=_("Cancel"), callback_data=RetriesCb(action="menu"))
    lines = [
        html(
            ngettext(
                "Retry the {n} dead or failing notification now?",
                "Retry all {n} dead and failing notifications now?",
                total,
            ),
            n=total,
        )
    ]
    if moved:
        lines.append(
            html(
                ngettext(
                    "⚠ {n} of them speaks of a request that has moved on since; it is sent "
                    "as it was written.",
                    "⚠ {n} of them speak of a request that has moved on since; they are sent "
                    "as they were written.",
                    moved,
                ),
                n=moved,
            )
        )
    await edit_or_send(query, join("\n", lines), keyboard.as_markup())


@router.callback_query(RetriesCb.filter(F.action == "retry_all_ok"))
async def retry_all(
    query: CallbackQuery,
    user: asyncpg.Record,
    notifications: NotificationRetryManager,
    audit: AdminAuditLog,
) -> None:
    """Makes every dead and failing notification due now (audited)."""
    count = await audit.audited(
        Actor.of(user),
        "notification.retry_all",
        lambda: notifications.retry_all_now(statuses=FAILING, actor=Actor.of(user)),
        after=lambda n: {"count": n, "statuses": list(FAILING)},
    )
    await edit_or_send(
        query,
        html(
            ngettext(
                "{n} notification is due again; it goes out within seconds.",
                "{n} notifications are due again; they go out within seconds.",
                count,
            ),
            n=count,
        ),
        _back(RetriesCb(action="menu")),
    )
