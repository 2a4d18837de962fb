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


# --- Admin dashboard: health, errors, alerts, history (issue 8) ----------------------------
class ErrorsCb(CallbackData, prefix="es"):
    """Error statistics: ``view`` is ``stats``, ``top`` (``page`` of the top groups),
    ``chart`` (``hours`` of the per-hour chart) or ``lookup`` (ask for a reference)."""

    view: str
    page: int = 0
    hours: int = 24


class ErrorGroupCb(CallbackData, prefix="eg"):
    """One error group's detail; ``page`` is the top-groups page to go back to."""

    record_id: int
    page: int = 0


class ErrorResolveCb(CallbackData, prefix="ers"):
    """Mark an error group resolved (it reopens as regressed if it happens again)."""

    record_id: int
    page: int = 0


class AlertMuteCb(CallbackData, prefix="am"):
    """Mute one kind of admin alert (error, health, stuck, system) for ``seconds``; the
    button sits on the alert message itself."""

    kind: str
    seconds: int


class AlertUnmuteCb(CallbackData, prefix="au"):
    """Lift the admin's mute of one kind of alert."""

    kind: str


class HistoryCb(CallbackData, prefix="hs"):
    """A page of the recovery history."""

    page: int = 0


class InventoryCb(CallbackData, prefix="iv"):
    """Inventory reconciliation: ``action`` is ``menu``, ``check`` (run a check now),
    ``fixall`` (confirmation screen) or ``fixall_ok`` (apply)."""

    action: str


class DiscrepancyListCb(CallbackData, prefix="ivl"):
    """A page of open inventory discrepancies."""

    page: int = 0


class DiscrepancyCb(CallbackData, prefix="ivd"):
    """One discrepancy: ``action`` is ``show``, ``fix`` (confirmation screen), ``fix_ok``
    (apply) or ``accept`` (ask for the reason); ``page`` is the list page to go back to."""

    action: str
    discrepancy_id: int
    page: int = 0
