"""Localized labels shared by several screens (states, roles, workflow types, request
statuses, history kinds, notification templates, durations) and ``ngettext`` for counts.

Every code a screen shows goes through one of these maps; ``tests/unit/test_labels.py``
checks that each code has a label and each label a translation. The words are fixed per
language in ``docs/glossary.md``.
"""

from __future__ import annotations

from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import lazy_gettext as __
from aiogram.utils.i18n.context import get_i18n

from handlers.labels import ROLE_MSGIDS, STATE_MSGIDS, WORKFLOW_MSGIDS
from handlers.render import plain

# the msgids live in handlers/labels.py; here they are made lazy for the screens
STATE_LABELS = {code: __(msgid) for code, msgid in STATE_MSGIDS.items()}
ROLE_LABELS = {code: __(msgid) for code, msgid in ROLE_MSGIDS.items()}
WORKFLOW_LABELS = {code: __(msgid) for code, msgid in WORKFLOW_MSGIDS.items()}
# service_requests.status (migration 0001's check constraint)
REQUEST_STATUS_LABELS = {
    "active": __("active"),
    "completed": __("completed"),
    "cancelled": __("cancelled"),
}
# workflow_transitions.kind (migration 0001's check constraint)
TRANSITION_KIND_LABELS = {
    "create": __("opened"),
    "normal": __("next step"),
    "assign": __("taken"),
    "force": __("forced"),
    "reset": __("reset"),
    "complete": __("forced completion"),
    "reassign": __("reassigned"),
}
# notification template keys (bot/notification_texts.TEMPLATES): what each tells
TEMPLATE_LABELS = {
    "request.waiting_for_you": __("a request waits for them"),
    "request.status_changed": __("their request moved on"),
    "request.moving_again": __("their request is moving again"),
    "admin.error_alert": __("critical error alert"),
    "admin.text": __("message to admins"),
    "admin.health_changed": __("system health changed"),
    "admin.alert_digest": __("digest of admin alerts"),
    "admin.retry_queue_full": __("retry queue full"),
    "telegram.resend": __("resent message"),
    "admin.stuck_digest": __("newly stuck requests"),
    "admin.outage_database": __("database outage report"),
    "admin.outage_telegram": __("Telegram outage report"),
}
# materials.unit: the usual ones are translated, any other is shown as stored
UNIT_LABELS = {
    "pcs": __("pcs"),
    "m": __("m"),
    "kg": __("kg"),
    "l": __("l"),
}


def unit_label(unit: str | None) -> str:
    """The localized abbreviation of a material's unit (``pcs``, ``m``...), else as stored."""
    return str(UNIT_LABELS.get(unit or "", unit or ""))


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of ``singular``/``plural`` for the count ``n`` in the current locale (the
    catalog's ``Plural-Forms``: three forms in Russian, one in Uzbek, two in English)."""
    return get_i18n().gettext(singular, plural, n)


def status_label(status: str | None) -> str:
    """The localized name of a request status (active, completed, cancelled)."""
    return str(REQUEST_STATUS_LABELS.get(status or "", status or "-"))


def kind_label(kind: str | None) -> str:
    """The localized name of a history row's kind (opened, next step, forced, ...)."""
    return str(TRANSITION_KIND_LABELS.get(kind or "", kind or "-"))


def template_label(template_key: str | None) -> str:
    """A short localized description of what a notification template tells."""
    return str(TEMPLATE_LABELS.get(template_key or "", template_key or "-"))


def state_label(state: str | None) -> str:
    """The localized name of a workflow state."""
    return str(STATE_LABELS.get(state or "", state or "-"))


def role_label(role: str | None) -> str:
    """The localized name of a role."""
    return str(ROLE_LABELS.get(role or "", role or "-"))


def workflow_label(workflow_type: str) -> str:
    """The localized name of a workflow type."""
    return str(WORKFLOW_LABELS.get(workflow_type, workflow_type))


def request_count(n: int) -> str:
    """``1 request``, ``5 requests`` (plural rules of the locale)."""
    return plain(ngettext("{n} request", "{n} requests", n), n=n)


def duration(seconds: float) -> str:
    """A short localized duration: ``2d 5h``, ``5h 10m`` or ``7m``."""
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return plain(_("{days}d {hours}h"), days=days, hours=hours)
    if hours:
        return plain(_("{hours}h {minutes}m"), hours=hours, minutes=mins)
    return plain(_("{minutes}m"), minutes=mins)
