"""Every ``CallbackData`` of the bot in one place (never string-built callback data).

Telegram limits callback data to 64 bytes; every field here is an id, a number or a short
code, never a name, so the limit holds in every language.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from aiogram.filters.callback_data import CallbackData
from pydantic import Field

# Out-of-range numbers fail validation, so the button counts as outdated (a clear answer and
# a fresh menu) instead of reaching PostgreSQL: ids are BIGINT, versions INTEGER > 0.
RequestId = Annotated[int, Field(ge=1, le=2**63 - 1)]
IdOrZero = Annotated[int, Field(ge=0, le=2**63 - 1)]
Version = Annotated[int, Field(ge=1, le=2**31 - 1)]
Page = Annotated[int, Field(ge=0, le=10**6)]
AnyPage = Annotated[int, Field(ge=-(10**6), le=10**6)]
"""A dashboard page: the screens clamp it into range (a forged -3 shows the first page)."""
RowId = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""Any other table's id (error group, discrepancy, notification): within BIGINT, so that it
reaches the handler (which answers "does not exist" for an id that is not there)."""


class LanguageCb(CallbackData, prefix="lang"):
    """Pick the interface language."""

    code: str


class NewRequestCb(CallbackData, prefix="new"):
    """A client picks the workflow type of a new request."""

    workflow_type: str


class AdvanceCb(CallbackData, prefix="adv"):
    """Staff move a request to its next step; ``version`` is the one they saw."""

    request_id: RequestId
    version: Version


class MenuCb(CallbackData, prefix="wr"):
    """A section of the admin recovery menu (main, stuck, health, inventory, errors,
    retries, history)."""

    section: str


# --- The stuck-workflow section of the admin menu (issue 7) --------------------------------
# Every prefix of this section starts with "wr"; handlers/fallback.py knows every prefix of
# the admin menu (read off the menu routers' filters) and answers an outdated one with a
# fresh menu. Filters are workflow type and state codes, never labels. Worst
# case, with 19-digit ids and 10-digit versions, each packs into at most 64 bytes
# (tests/unit/test_workflow_recovery_callbacks.py).
ADMIN_MENU_PREFIX = "wr"


class ActionCode(StrEnum):
    """A recovery action in callback data (two letters, to stay within 64 bytes)."""

    FORCE = "fw"
    RESET = "rs"
    COMPLETE = "cp"
    REASSIGN = "ra"


class StuckListCb(CallbackData, prefix="wrs"):
    """A page of the stuck-workflow list, optionally filtered by workflow type and state."""

    page: Page = 0
    wf: str | None = None
    st: str | None = None


class StuckFilterCb(CallbackData, prefix="wrf"):
    """The filter picker: workflow types, then the states of ``wf`` when it is set."""

    wf: str | None = None


class StuckDetailCb(CallbackData, prefix="wrd"):
    """One request's detail; ``page``/``wf``/``st``: the list to go back to."""

    request_id: RequestId
    page: Page = 0
    wf: str | None = None
    st: str | None = None


class StuckActionCb(CallbackData, prefix="wra"):
    """A recovery action on a request against the ``version`` the admin saw.

    ``step`` 0: the confirmation screen (for reassign without ``arg``: the candidates);
    1: confirmed, ask for an optional reason; 2: apply without a reason.
    ``arg``: reassign: the new assignee's user id; reset: the fingerprint (CRC-32) of the
    materials the confirmation screen showed; otherwise 0.
    """

    action: ActionCode
    request_id: RequestId
    version: Version
    arg: IdOrZero = 0
    step: Annotated[int, Field(ge=0, le=2)] = 0


class StuckAssigneesCb(CallbackData, prefix="wrp"):
    """A page of the users a request can be reassigned to."""

    request_id: RequestId
    version: Version
    page: Page = 0


class StuckHistoryCb(CallbackData, prefix="wrh"):
    """A page of the recovery history: of one request, or of all (``request_id`` 0)."""

    request_id: IdOrZero = 0
    page: Page = 0


class StuckBatchCb(CallbackData, prefix="wrb"):
    """Batch recovery of the stuck requests matching a filter: without ``action`` choose
    it; reassign without ``arg`` choose the assignee (``page`` of candidates); otherwise
    the review screen, which keeps the exact (request, version) list in the admin's FSM
    data under a token."""

    wf: str | None = None
    st: str | None = None
    action: ActionCode | None = None
    arg: IdOrZero = 0
    page: Page = 0


class StuckBatchRunCb(CallbackData, prefix="wrx"):
    """A reviewed batch (``token`` names the review): ``step`` 1 confirmed, ask for an
    optional reason; 2 apply without a reason."""

    token: Annotated[str, Field(pattern=r"^[0-9a-f]{8}$")]
    step: Annotated[int, Field(ge=1, le=2)] = 1


# --- Admin dashboard: health, errors, alerts, history (issue 8) ----------------------------
class HealthRefreshCb(CallbackData, prefix="hr"):
    """Refresh the health screen; ``fp``: the fingerprint (CRC-32) of the status and figures
    the screen showed, taken at ``at`` (seconds since the epoch, UTC)."""

    fp: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    at: Annotated[int, Field(ge=0, le=2**40)] = 0


class ErrorsCb(CallbackData, prefix="es"):
    """Error statistics: ``view`` is ``stats``, ``top`` (``page`` of the top groups),
    ``chart`` (``hours`` of the per-hour chart) or ``lookup`` (ask for a reference)."""

    view: str
    page: AnyPage = 0
    hours: Annotated[int, Field(ge=1, le=24 * 366)] = 24


class ErrorGroupCb(CallbackData, prefix="eg"):
    """One error group's detail; ``page`` is the top-groups page to go back to."""

    record_id: RowId
    page: AnyPage = 0


class ErrorResolveCb(CallbackData, prefix="ers"):
    """Mark an error group resolved (it reopens as regressed if it happens again)."""

    record_id: RowId
    page: AnyPage = 0


class AlertMuteCb(CallbackData, prefix="am"):
    """Mute one kind of admin alert (error, health, stuck, system) for ``seconds``; the
    button sits on the alert message itself."""

    kind: str
    seconds: Annotated[int, Field(ge=1, le=10**7)]


class AlertUnmuteCb(CallbackData, prefix="au"):
    """Lift the admin's mute of one kind of alert."""

    kind: str


class HistoryCb(CallbackData, prefix="hs"):
    """A page of the recovery history."""

    page: AnyPage = 0


class InventoryCb(CallbackData, prefix="iv"):
    """Inventory reconciliation: ``action`` is ``menu``, ``check`` (run a check now),
    ``fixall`` (confirmation screen) or ``fixall_ok`` (apply)."""

    action: str


class DiscrepancyListCb(CallbackData, prefix="ivl"):
    """A page of open inventory discrepancies."""

    page: AnyPage = 0


class DiscrepancyCb(CallbackData, prefix="ivd"):
    """One discrepancy: ``action`` is ``show``, ``fix`` (confirmation screen), ``fix_ok``
    (apply) or ``accept`` (ask for the reason); ``page`` is the list page to go back to."""

    action: str
    discrepancy_id: RowId
    page: AnyPage = 0


class RetriesCb(CallbackData, prefix="nr"):
    """Notification retries: ``action`` is ``menu``, ``retry_all`` (confirmation screen) or
    ``retry_all_ok`` (apply)."""

    action: str


class RetryListCb(CallbackData, prefix="nrl"):
    """A page of dead and failing notifications."""

    page: AnyPage = 0


class NotificationCb(CallbackData, prefix="nrn"):
    """One notification: ``action`` is ``show``, ``retry`` or ``discard`` (confirmation
    screens), ``retry_ok`` or ``discard_ok`` (apply); ``page`` is the list page to go back
    to; ``ack`` 1: the confirmation screen said that the request has moved on since the
    notification was written."""

    action: str
    notification_id: RowId
    page: AnyPage = 0
    ack: Annotated[int, Field(ge=0, le=1)] = 0


class UseRequestCb(CallbackData, prefix="ur"):
    """``/use``: the request chosen; ``page`` of the materials list."""

    request_id: RequestId
    page: Page = 0


class UseMaterialCb(CallbackData, prefix="um"):
    """``/use``: the material chosen for the request; the quantity is asked next."""

    request_id: RequestId
    material_id: RequestId
