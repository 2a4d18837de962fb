"""Localized labels shared by several screens (states, roles, workflow types, durations), in
the screen's language; the msgids are ``handlers/labels.py``'s."""

from __future__ import annotations

from aiogram.utils.i18n import gettext as _

from handlers.labels import ROLE_MSGIDS, STATE_MSGIDS, WORKFLOW_MSGIDS
from handlers.render import plain


def state_label(state: str | None) -> str:
    """The localized name of a workflow state."""
    msgid = STATE_MSGIDS.get(state or "")
    return _(msgid) if msgid else state or "-"


def role_label(role: str | None) -> str:
    """The localized name of a role."""
    msgid = ROLE_MSGIDS.get(role or "")
    return _(msgid) if msgid else role or "-"


def workflow_label(workflow_type: str) -> str:
    """The localized name of a workflow type."""
    msgid = WORKFLOW_MSGIDS.get(workflow_type)
    return _(msgid) if msgid else workflow_type


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
