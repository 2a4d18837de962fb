"""Notification templates: a template key and parameters stored on the outbox row are
rendered at send time in the recipient's language. Parameters are escaped for HTML, the
parse mode the bot uses."""

from __future__ import annotations

import html
from typing import Any

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
            values[key] = html.escape(str(value)) if isinstance(value, str) else value
        text = i18n.gettext(msgid, locale=locale) if msgid != "{text}" else msgid
        return text.format_map(_Missing(values))

    return render


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
