"""Notification templates: a template key and parameters stored on the outbox row are
rendered at send time in the recipient's language.

The text is built like every other message (``handlers.render``): the template is trusted,
every parameter is escaped for HTML, the parse mode the bot uses
(``DefaultBotProperties(parse_mode=HTML)``), so user-supplied text (a description, a name)
can never break the markup or inject tags. Long values are cut (``MAX_PARAM_CHARS``
per parameter, ``MAX_TEXT_CHARS`` for a whole-message ``{text}`` template) so that a message
stays below Telegram's limit of 4096 characters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiogram.utils.i18n import I18n

from handlers.labels import HEALTH_STATUS_MSGIDS, STATE_MSGIDS, WORKFLOW_MSGIDS
from handlers.render import Html, cut, html, html_map


def _(text: str) -> str:
    """Mark a msgid for extraction; translated at send time."""
    return text


def N_(singular: str, plural: str) -> tuple[str, str]:
    """Mark a plural msgid pair for extraction; chosen by the number at send time."""
    return singular, plural


TEMPLATES: dict[str, str] = {
    "request.waiting_for_you": _(
        "Request #{request_id} ({workflow_type}) is waiting for you: {state}."
    ),
    "request.status_changed": _("Your request #{request_id} is now: {state}."),
    "request.moving_again": _("Your request #{request_id} is moving again. It is now: {state}."),
    "admin.error_alert": _(
        "Critical error {reference}: {category}/{severity} {error_type} (occurrences: {count})."
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
    "admin.retry_queue_full": _(
        "The notification retry queue is full ({size} of {limit}): new delivery failures are "
        "dead-lettered until it drains. See /workflow_recovery."
    ),
    # a Telegram send that failed transiently, queued by recovery.errors.ErrorHandler
    "telegram.resend": "{text}",
    "admin.stuck_digest": _(
        "Newly stuck requests: {count}.\n{items}\nOpen /workflow_recovery to repair them."
    ),
    # recovery.outages: one alert after an outage of PostgreSQL or of the Bot API
    "admin.outage_database": _(
        "The database was unreachable from {start} to {end} UTC ({seconds} s) and is back. "
        "{updates} {errors_spooled}"
    ),
    "admin.outage_telegram": _(
        "Telegram was unreachable from {start} to {end} UTC ({seconds} s) and is back. "
        "{failures} {updates} What users sent meanwhile waited at Telegram and is handled "
        "now; notifications due meanwhile are being delivered now."
    ),
}

PLURAL_PARAMS: dict[str, dict[str, tuple[str, str]]] = {
    "admin.outage_database": {
        "updates": N_("{n} update arrived meanwhile.", "{n} updates arrived meanwhile."),
        "errors_spooled": N_(
            "{n} error was held in memory and written afterwards.",
            "{n} errors were held in memory and written afterwards.",
        ),
    },
    "admin.outage_telegram": {
        "failures": N_("{n} Bot API call failed.", "{n} Bot API calls failed."),
        # polling takes nothing while Telegram is away: what was received, not what was sent
        "updates": N_("{n} update was received meanwhile.", "{n} updates were received meanwhile."),
    },
}
"""Per template, the number parameters shown as a sentence in the plural form the
recipient's language uses for that number (``ngettext``)."""

MAX_PARAM_CHARS = 1000
MAX_TEXT_CHARS = 4000  # a template that is one parameter: the message itself

CATEGORY_MSGIDS = {
    "transient": _("transient"),
    "data": _("data"),
    "business_logic": _("business logic"),
    "system": _("system"),
    "inventory": _("inventory"),
    "notification": _("notification"),
}
SEVERITY_MSGIDS = {
    "low": _("low"),
    "medium": _("medium"),
    "high": _("high"),
    "critical": _("critical"),
}


class UnknownTemplateError(KeyError):
    """An outbox row names a template this version of the bot does not know."""


def make_renderer(i18n: I18n) -> Callable[[str, dict[str, Any], str], Html]:
    """A renderer bound to ``i18n``: ``render(template_key, params, locale) -> Html``."""

    def render(template_key: str, params: dict[str, Any], locale: str) -> Html:
        try:
            msgid = TEMPLATES[template_key]
        except KeyError as exc:
            raise UnknownTemplateError(template_key) from exc
        values: dict[str, Any] = {}
        plurals = PLURAL_PARAMS.get(template_key, {})
        for key, value in params.items():
            if key in plurals and isinstance(value, int):
                singular, plural = plurals[key]
                value = html(i18n.gettext(singular, plural, value, locale=locale), n=value)
            elif key == "state" and isinstance(value, str) and value in STATE_MSGIDS:
                value = i18n.gettext(STATE_MSGIDS[value], locale=locale)
            elif key == "workflow_type" and isinstance(value, str) and value in WORKFLOW_MSGIDS:
                value = i18n.gettext(WORKFLOW_MSGIDS[value], locale=locale)
            elif (
                key in ("status", "previous")
                and isinstance(value, str)
                and value in HEALTH_STATUS_MSGIDS
            ):
                value = i18n.gettext(HEALTH_STATUS_MSGIDS[value], locale=locale)
            elif key == "category" and isinstance(value, str) and value in CATEGORY_MSGIDS:
                value = i18n.gettext(CATEGORY_MSGIDS[value], locale=locale)
            elif key == "severity" and isinstance(value, str) and value in SEVERITY_MSGIDS:
                value = i18n.gettext(SEVERITY_MSGIDS[value], locale=locale)
            limit = MAX_TEXT_CHARS if msgid == "{text}" else MAX_PARAM_CHARS
            values[key] = limit_param(value, limit)
        if template_key == "admin.stuck_digest":
            values["items"] = digest_lines(i18n, params, locale)
        text = i18n.gettext(msgid, locale=locale) if msgid != "{text}" else msgid
        return html_map(text, _Missing(values))

    return render


def digest_lines(i18n: I18n, params: dict[str, Any], locale: str) -> Html:
    """The stuck digest's lines, one per request: ``#12 repair · in work · 2d 4h`` in
    ``locale``; the plain numbers of ``params["ids"]`` for a row written without ``items``."""
    from handlers.render import escape, join
    from handlers.texts import duration, state_label, workflow_label

    items = params.get("items")
    if not isinstance(items, list) or not items:
        return escape(limit_param(params.get("ids", ""), MAX_PARAM_CHARS))
    with i18n.context(), i18n.use_locale(locale):
        lines = [
            html_map(
                "#{id} {workflow} · {state} · {time}",
                {
                    "id": item[0],
                    "workflow": workflow_label(str(item[1])),
                    "state": state_label(str(item[2])),
                    "time": duration(float(item[3])),
                },
            )
            for item in items
            if isinstance(item, list) and len(item) == 4
        ]
        count = params.get("count")
        if isinstance(count, int) and count > len(lines):
            lines.append(escape(f"… (+{count - len(lines)})"))
    return join("\n", lines)


def limit_param(value: Any, limit: int = MAX_PARAM_CHARS) -> Any:
    """A parameter ready for a message: numbers as they are, anything else as text cut to
    ``limit`` characters (the template escapes it)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return cut(str(value), limit)


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
