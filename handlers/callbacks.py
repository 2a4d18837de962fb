"""Every ``CallbackData`` of the bot in one place (never string-built callback data).

Telegram limits callback data to 64 bytes; every field here is an id, a number or a short
code, never a name, so the limit holds in every language.
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class LanguageCb(CallbackData, prefix="lang"):
    """Pick the interface language."""

    code: str


class NewRequestCb(CallbackData, prefix="new"):
    """A client picks the workflow type of a new request."""

    workflow_type: str


class AdvanceCb(CallbackData, prefix="adv"):
    """Staff move a request to its next step; ``version`` is the one they saw."""

    request_id: int
    version: int


class MenuCb(CallbackData, prefix="wr"):
    """A section of the admin recovery menu (main, stuck, health, inventory, errors,
    retries, history)."""

    section: str


class StuckListCb(CallbackData, prefix="wrs"):
    """A page of the stuck-workflow list."""

    page: int = 0


class StuckDetailCb(CallbackData, prefix="wrd"):
    """One request's detail; ``page`` is the list page to go back to."""

    request_id: int
    page: int = 0


class StuckActionCb(CallbackData, prefix="wra"):
    """A recovery action on a request: ``confirm`` false shows the confirmation screen,
    true applies it against the ``version`` the admin saw."""

    action: str
    request_id: int
    version: int
    confirm: bool = False
