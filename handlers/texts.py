"""Localized labels shared by several screens (states, roles, workflow types, durations)."""

from __future__ import annotations

from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import lazy_gettext as __

from handlers.render import plain

STATE_LABELS = {
    "new": __("new"),
    "assigned": __("assigned"),
    "review": __("review"),
    "in_work": __("in work"),
    "materials": __("materials"),
    "quality_check": __("quality check"),
    "completed": __("completed"),
}
ROLE_LABELS = {
    "client": __("client"),
    "manager": __("manager"),
    "junior_manager": __("junior manager"),
    "controller": __("controller"),
    "technician": __("technician"),
    "warehouse": __("warehouse"),
    "admin": __("admin"),
}
WORKFLOW_LABELS = {
    "connection": __("connection"),
    "repair": __("repair"),
}


def state_label(state: str | None) -> str:
    """The localized name of a workflow state."""
    return str(STATE_LABELS.get(state or "", state or "-"))


def role_label(role: str | None) -> str:
    """The localized name of a role."""
    return str(ROLE_LABELS.get(role or "", role or "-"))


def workflow_label(workflow_type: str) -> str:
    """The localized name of a workflow type."""
    return str(WORKFLOW_LABELS.get(workflow_type, workflow_type))


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
