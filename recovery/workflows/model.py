"""The shapes of workflow recovery: the actions, refusal details, the stuck list, plans,
outcomes and the admin who acts."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

import asyncpg

from database.compensation import Outstanding, Reversal
from recovery.exceptions import (
    ConcurrentModificationError,
)

log = logging.getLogger(__name__)


# Details of ``InvalidTransitionError`` raised by the recovery actions.
NOT_ACTIVE = "not active"
TERMINAL = "terminal"
NO_HISTORY = "no earlier state in the history"
ALREADY_ASSIGNED = "already assigned to this user"

# Digest: at most this many request ids are listed, the rest are counted.
DIGEST_MAX_IDS = 30


class RecoveryAction(StrEnum):
    """The four recovery actions; the value is the ``workflow_recovery_log.action``."""

    FORCE = "force_transition"
    RESET = "reset_state"
    COMPLETE = "complete"
    REASSIGN = "reassign"

    @property
    def transition_kind(self) -> str:
        """The ``workflow_transitions.kind`` this action writes."""
        return _TRANSITION_KINDS[self]


_TRANSITION_KINDS = {
    RecoveryAction.FORCE: "force",
    RecoveryAction.RESET: "reset",
    RecoveryAction.COMPLETE: "complete",
    RecoveryAction.REASSIGN: "reassign",
}


class PreviewOutdatedError(ConcurrentModificationError):
    """The materials a reset would give back changed since the admin saw the confirmation
    screen (a new issue, or a return meanwhile); nothing was changed."""


@dataclass(frozen=True, slots=True)
class StuckRequest:
    """One stuck request: how long (seconds), against which deadline, why, who holds it.

    ``reasons``: one or more of ``over_deadline``, ``assignee_inactive``,
    ``assignee_blocked``. ``threshold_s`` is None for a state without a deadline (terminal).
    """

    request_id: int
    workflow_type: str
    state: str
    role: str | None
    assignee_id: int | None
    assignee_name: str | None
    version: int
    stuck_for_s: float
    threshold_s: float | None
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        """The main reason (an unreachable assignee first, it needs a reassignment)."""
        return self.reasons[-1]


@dataclass(frozen=True, slots=True)
class StuckPage:
    """A page of stuck requests and the total number of matches."""

    items: list[StuckRequest]
    total: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What an action does to a request, computed from the request row (locked when the
    action is applied, unlocked for a confirmation screen).

    Attributes:
        to_state, to_role, to_assignee_id, to_status: the request after the action.
        skipped_states: states passed over on the way (a completion from the middle).
        returns: issues of the undone step a reset gives back (empty for other actions).
        kept: a completion's materials that stay charged to the request.
        fingerprint: CRC-32 of ``returns`` (ids and quantities); a confirmation screen
            passes it back so that a changed set of returns is refused, not applied.
    """

    action: RecoveryAction
    request_id: int
    version: int
    workflow_type: str
    from_state: str
    from_role: str | None
    from_assignee_id: int | None
    to_state: str
    to_role: str | None
    to_assignee_id: int | None
    to_assignee_name: str | None
    to_status: str
    skipped_states: tuple[str, ...] = ()
    returns: tuple[Outstanding, ...] = ()
    kept: tuple[Outstanding, ...] = ()
    fingerprint: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """An applied action: the updated request, the plan it followed, the ledger returns
    written and the id of the ``workflow_recovery_log`` row."""

    request: asyncpg.Record
    plan: Plan
    reversals: tuple[Reversal, ...]
    log_id: int


@dataclass(slots=True)
class BatchResult:
    """The outcome of one batch: every request was handled in its own transaction.

    ``requested``: how many requests the batch was given; each ends in exactly one of
    ``succeeded``, ``stale`` (moved since the review: refused, unchanged) and ``failed``
    ((request id, ``refusal_code`` or ``failure_code``)), in the order they were handled.
    """

    batch_id: uuid.UUID
    action: RecoveryAction
    requested: int = 0
    succeeded: list[int] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    returned_units: int = 0

    @property
    def total(self) -> int:
        """How many requests the batch touched."""
        return len(self.succeeded) + len(self.stale) + len(self.failed)


@dataclass(frozen=True, slots=True)
class RequestDetail:
    """A request with what the detail screen shows.

    ``history``: latest transitions, newest first; ``recovery``: latest recovery actions on
    it, newest first; ``stuck``: its stuck figures when it is stuck now, else None;
    ``previous_state``: where a reset would take it (None: no history to go back to).
    """

    request: asyncpg.Record
    history: list[asyncpg.Record]
    recovery: list[asyncpg.Record]
    assignee: asyncpg.Record | None
    stuck: StuckRequest | None
    previous_state: str | None


@dataclass(frozen=True, slots=True)
class StuckAlerts:
    """One run of the stuck-detection job: the newly stuck request ids (each alerted once),
    how many admin digests were enqueued, how many alert marks were dropped because their
    request left the alerted state."""

    new_request_ids: list[int]
    digests: int
    forgotten: int
