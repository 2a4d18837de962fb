"""Notification templates: a template key and parameters stored on the outbox row are
rendered at send time in the recipient's language. Parameters are escaped for HTML, the
parse mode the bot uses."""

from __future__ import annotations

import html
from typing import Any

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiogram.utils.i18n import I18n


def _(text: str) -> str:
    """Mark a msgid for extraction; translated at send time."""
    return text


TEMPLATES: dict[str, str] = {
    "request.waiting_for_you": _(
        "Request #{request_id} ({workflow_type}) is waiting for you: {state}."
    ),
    "request.status_changed": _("Your request #{request_id} is now: {state}."),
    "request.moving_again": _("Your request #{request_id} is moving again. It is now: {state}."),
    "admin.error_alert": _(
        "Critical error {reference}: {category}/{severity} {error_type} (seen {count} times)."
    ),
    "admin.text": "{text}",
    "admin.health_changed": _(
        "System health changed: {previous} → {status}.\n"
        "Stuck workflows: {stuck}, dead notifications: {dead}, notification backlog: "
        "{backlog}, critical errors in the last hour: {critical_errors}, open inventory "
        "discrepancies: {discrepancies}.\nDetails: /workflow_recovery"
    ),
    "admin.alert_digest": _(
        "{total} admin alerts arrived together.\n"
        "Critical errors: {error}, health changes: {health}, stuck workflows: {stuck}, "
        "other: {system}.\n{details}"
    ),
    # a Telegram send that failed transiently, queued by recovery.errors.ErrorHandler
    "telegram.resend": "{text}",
    "admin.stuck_digest": _(
        "Newly stuck requests: {count} ({ids}). Open /workflow_recovery to repair them."
    ),
}

STATE_MSGIDS = {
    "new": _("new"),
    "assigned": _("assigned"),
    "review": _("review"),
    "in_work": _("in work"),
    "materials": _("materials"),
    "quality_check": _("quality check"),
    "completed": _("completed"),
}
WORKFLOW_MSGIDS = {"connection": _("connection"), "repair": _("repair")}
HEALTH_MSGIDS = {"healthy": _("healthy"), "degraded": _("degraded"), "critical": _("critical")}


class UnknownTemplateError(KeyError):
    """An outbox row names a template this version of the bot does not know."""


def make_renderer(i18n: I18n):
    """A renderer bound to ``i18n``: ``render(template_key, params, locale) -> str``."""

    def render(template_key: str, params: dict[str, Any], locale: str) -> str:
        try:
            msgid = TEMPLATES[template_key]
        except KeyError as exc:
            raise UnknownTemplateError(template_key) from exc
        values: dict[str, Any] = {}
        for key, value in params.items():
            if key == "state" and value in STATE_MSGIDS:
                value = i18n.gettext(STATE_MSGIDS[value], locale=locale)
            elif key == "workflow_type" and value in WORKFLOW_MSGIDS:
                value = i18n.gettext(WORKFLOW_MSGIDS[value], locale=locale)
            elif key in ("status", "previous") and value in HEALTH_MSGIDS:
                value = i18n.gettext(HEALTH_MSGIDS[value], locale=locale)
            values[key] = html.escape(str(value)) if isinstance(value, str) else value
        text = i18n.gettext(msgid, locale=locale) if msgid != "{text}" else msgid
        return text.format_map(_Missing(values))

    return render


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def inline_keyboard(
    i18n: I18n, buttons: list[list[dict[str, str]]] | None, locale: str
) -> InlineKeyboardMarkup | None:
    """An outbox row's ``params["buttons"]`` (rows of ``{"text": msgid, "callback_data"}``)
    as an inline keyboard with the texts in ``locale``; None without buttons."""
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=i18n.gettext(button["text"], locale=locale),
                    callback_data=button["callback_data"],
                )
                for button in row
            ]
            for row in buttons
        ]
    )
