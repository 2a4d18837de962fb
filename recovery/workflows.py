"""``WorkflowRecoveryManager``: find stuck workflows and repair them on an admin's order.

Stuck (design: Policies): an active request whose time in its state exceeds that state's
deadline (``thresholds`` per ``"workflow_type:state"``, default ``default_threshold_s`` =
24 h), or whose assignee is inactive or has blocked the bot, whatever the time.

The four recovery actions (``RecoveryAction``): force transition to the next step, reset to
the previous state of the history, force completion, reassign to an active user of the
owning role. Each is one transaction that locks the request row (``SELECT ... FOR
UPDATE``), checks the version the admin saw (optimistic locking), plans the change from the
locked row, writes ``workflow_transitions`` (kind force, reset, complete or reassign) and
``workflow_recovery_log`` (admin, reason, before, after), reverses with ``return`` ledger
rows the materials that a reset's undone step consumed (``database.compensation``), and
enqueues the notifications to the people now responsible and to the client (transactional
outbox). Each runs through ``TransactionalStateManager.run`` like the staff operations (a
``transaction_log`` row, whole-transaction retry of transient failures, in-doubt
resolution). A refused or failed action changes nothing and is logged with
``success = false`` outside the rolled-back transaction.

Refusals are the project's typed errors (``recovery.exceptions``); ``refusal_code`` turns
one into a short code the admin screens translate.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from database import compensation, outbox, recovery_actions, recovery_log, requests, stuck, users
from database.compensation import Outstanding, Reversal
from database.pool import AnyConnection
from database.stuck import Limit
from recovery import workflow_definitions as wf
from recovery.alerts import AdminAlerts, AlertKind
from recovery.classification import ErrorCategory, classify
from recovery.exceptions import (
    ConcurrentModificationError,
    DomainError,
    InputValidationError,
    InvalidTransitionError,
    NotFoundError,
    TransactionInDoubtError,
)
from recovery.transactions import TransactionalStateManager, TransactionContext, recorded
from recovery.workflow_events import notify_state_change

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
class AdminRef:
    """The admin performing an action: user id (None when only listed in ADMIN_IDS) and
    Telegram id."""

    user_id: int | None
    telegram_id: int

    @classmethod
    def of(cls, user: Mapping[str, Any] | asyncpg.Record) -> AdminRef:
        """The admin behind a ``users`` row (keys ``id`` and ``telegram_id``)."""
        return cls(user_id=user["id"], telegram_id=user["telegram_id"])


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


def _snapshot(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "state": row["current_state"],
        "role": row["owner_role"],
        "assignee_id": row["assignee_id"],
        "status": row["status"],
        "version": row["version"],
    }


def fingerprint(returns: Sequence[Outstanding]) -> int:
    """CRC-32 of the (issue id, quantity) pairs; 0 when there is nothing to give back."""
    if not returns:
        return 0
    text = ",".join(f"{r.issue_id}:{r.quantity}" for r in sorted(returns, key=lambda r: r.issue_id))
    return zlib.crc32(text.encode())


def refusal_code(exc: DomainError) -> str:
    """A short code for why an action was refused: ``stale``, ``materials_changed``,
    ``not_found``, ``not_active``, ``terminal``, ``no_history``, ``already_assigned``,
    ``assignee_unavailable`` or ``refused``."""
    if isinstance(exc, PreviewOutdatedError):
        return "materials_changed"
    if isinstance(exc, ConcurrentModificationError):
        return "stale"
    if isinstance(exc, NotFoundError):
        return "assignee_unavailable" if exc.entity == "user" else "not_found"
    if isinstance(exc, InputValidationError) and exc.field == "assignee_id":
        return "assignee_unavailable"
    if isinstance(exc, InvalidTransitionError):
        return {
            NOT_ACTIVE: "not_active",
            TERMINAL: "terminal",
            NO_HISTORY: "no_history",
            ALREADY_ASSIGNED: "already_assigned",
        }.get(exc.detail, "refused")
    return "refused"


def failure_code(exc: BaseException) -> str:
    """A short code for an action that failed without a refusal: ``in_doubt`` (its COMMIT
    outcome could not be settled: applied once or not at all), ``unavailable`` (a transient
    failure, e.g. the database connection lost on every attempt: nothing was changed) or
    ``error`` (anything else: nothing was changed)."""
    if isinstance(exc, TransactionInDoubtError):
        return "in_doubt"
    if classify(exc).category is ErrorCategory.TRANSIENT:
        return "unavailable"
    return "error"


def failure_text(exc: BaseException) -> str:
    """``"<failure_code>: <exception type> <SQLSTATE>"`` for the audit log (never the
    exception's text, which may hold user data)."""
    sqlstate = getattr(exc, "sqlstate", None)
    detail = f" {sqlstate}" if isinstance(sqlstate, str) else ""
    return f"{failure_code(exc)}: {type(exc).__name__}{detail}"


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """Where a reset goes and what it undoes.

    ``state`` and ``assignee_id``: the previous step on the history stack and who held it;
    ``undone_visits``: the ``state_entered_at`` of every visit of the current step (its
    entry, and each re-entry after a reset back to it), whose material issues the reset
    gives back.
    """

    state: str
    assignee_id: int | None
    undone_visits: tuple[datetime, ...]


def reset_target(
    path: Sequence[asyncpg.Record], current_state: str, current_entered_at: datetime
) -> ResetTarget | None:
    """Replay the history (oldest first) as a stack; None when there is nothing to go back to.

    Transitions that move (create, normal, force, complete) push their target state, entered
    at the row's ``created_at`` (the same ``now()`` as the request's ``state_entered_at``:
    one transaction); an assignment (assign, reassign) changes the top's holder; a reset pops
    the top and re-enters the step below it (a new visit of the same step). So a second reset
    goes one step further back instead of redoing the first, and what a step consumed in any
    of its visits goes back when that step is undone. A history whose top is not the current
    state (rows written outside the workflow) gives None.
    """
    stack: list[tuple[str, list[Any]]] = []  # (state, [assignee id, visits])
    for row in path:
        kind = row["kind"]
        if kind in ("assign", "reassign"):
            if stack:
                stack[-1][1][0] = row["to_assignee_id"]
            continue
        if kind == "reset" and stack:
            stack.pop()
            if stack and stack[-1][0] == row["to_state"]:
                stack[-1][1][0] = row["to_assignee_id"]
                stack[-1][1][1].append(row["created_at"])
                continue
        stack.append((row["to_state"], [row["to_assignee_id"], [row["created_at"]]]))
    if len(stack) < 2 or stack[-1][0] != current_state:
        return None
    visits = tuple(dict.fromkeys([*stack[-1][1][1], current_entered_at]))
    state, (assignee_id, _visits) = stack[-2]
    return ResetTarget(state=state, assignee_id=assignee_id, undone_visits=visits)


class WorkflowRecoveryManager:
    """Stuck detection and admin recovery actions.

    Args:
        pool: asyncpg pool.
        default_threshold_s: seconds in a state before a request counts as stuck (24 h).
        thresholds: per ``"workflow_type:state"`` deadlines in seconds (settings
            ``STUCK_THRESHOLDS``).
        transactions: runs the recovery actions (retry policy, step hook); share the state
            manager's so that staff operations and recovery actions take one path. Default:
            one on ``pool`` with the default ``TransactionRetryPolicy``.

    Raises:
        ValueError: a threshold names a workflow type or state that does not exist, or is
            not positive.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        default_threshold_s: float = 24 * 3600.0,
        thresholds: dict[str, float] | None = None,
        transactions: TransactionalStateManager | None = None,
    ) -> None:
        if default_threshold_s <= 0:
            raise ValueError("the default stuck threshold must be positive")
        self.pool = pool
        self.transactions = transactions or TransactionalStateManager(pool)
        self.default_threshold_s = float(default_threshold_s)
        self.thresholds: dict[tuple[str, str], float] = {}
        for key, seconds in (thresholds or {}).items():
            workflow_type, _, state = key.partition(":")
            try:
                wf.step_of(workflow_type, state)
            except KeyError:
                raise ValueError(f"stuck threshold for unknown workflow state {key!r}") from None
            if float(seconds) <= 0:
                raise ValueError(f"stuck threshold {key!r} must be positive")
            self.thresholds[(workflow_type, state)] = float(seconds)

    # --- detection ----------------------------------------------------------------------

    def threshold_s(self, workflow_type: str, state: str) -> float:
        """The deadline of a state in seconds."""
        return self.thresholds.get((workflow_type, state), self.default_threshold_s)

    def limits(self, workflow_type: str | None = None, state: str | None = None) -> list[Limit]:
        """The deadline of every non-terminal (workflow type, state), optionally filtered."""
        return [
            Limit(name, step.state, self.threshold_s(name, step.state))
            for name, steps in wf.WORKFLOWS.items()
            if workflow_type in (None, name)
            for step in steps
            if step.role is not None and state in (None, step.state)
        ]

    def _item(self, row: Mapping[str, Any] | asyncpg.Record) -> StuckRequest:
        reasons: list[str] = []
        if row["over_deadline"]:
            reasons.append("over_deadline")
        if row["assignee_id"] is not None and row["assignee_active"] is False:
            reasons.append("assignee_inactive")
        elif row["assignee_blocked"]:
            reasons.append("assignee_blocked")
        return StuckRequest(
            request_id=row["id"],
            workflow_type=row["workflow_type"],
            state=row["current_state"],
            role=row["owner_role"],
            assignee_id=row["assignee_id"],
            assignee_name=row["assignee_name"],
            version=row["version"],
            stuck_for_s=row["stuck_for_s"],
            threshold_s=row["threshold_s"],
            reasons=tuple(reasons) or ("over_deadline",),
        )

    async def find_stuck(
        self,
        *,
        workflow_type: str | None = None,
        state: str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> StuckPage:
        """A page of stuck requests (longest in state first) and how many there are."""
        limits = self.limits(workflow_type, state)
        async with self.pool.acquire() as conn:
            rows = await stuck.page(
                conn,
                limits,
                workflow_type=workflow_type,
                state=state,
                limit=limit,
                offset=max(offset, 0),
            )
            total = await stuck.count(conn, limits, workflow_type=workflow_type, state=state)
        return StuckPage(items=[self._item(row) for row in rows], total=total)

    async def stuck_targets(
        self,
        *,
        workflow_type: str | None = None,
        state: str | None = None,
        at_most: int = 1000,
    ) -> list[tuple[int, int]]:
        """(request id, version) of the stuck requests a batch would touch, longest in state
        first, at most ``at_most``: the review screen keeps them, the batch applies its
        action against exactly these versions."""
        return await stuck.targets(
            self.pool,
            self.limits(workflow_type, state),
            workflow_type=workflow_type,
            state=state,
            at_most=at_most,
        )

    async def alert_new_stuck(
        self, admin_telegram_ids: Sequence[int] = (), *, alerts: AdminAlerts | None = None
    ) -> StuckAlerts:
        """Alert the admins once per newly stuck request, in one digest per admin.

        With ``alerts`` the digest takes the admin alert path (kind ``stuck``: rate limit,
        per-admin mutes, mute buttons) in the same transaction; ``digests`` is then the
        number of admins it was enqueued for (0 when held back for the alert digest).

        In one transaction: forget alert marks of requests that left the alerted state,
        mark every stuck request not alerted yet for its current visit of its state
        (``stuck_alerts``), and enqueue one ``admin.stuck_digest`` notification per admin
        (admin-role users plus ``admin_telegram_ids``) listing them (``ids``: their numbers;
        ``items``: [id, workflow type, state, seconds in the state] of the first
        ``DIGEST_MAX_IDS``, shown as one line each in the admin's language). The outbox idempotency
        key is derived from the (request, state visit) pairs, so the same digest is never
        enqueued twice; a rollback forgets the marks and the digest together.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            forgotten = await stuck.forget_left(conn)
            rows = await stuck.remember_new(conn, self.limits())
            if not rows:
                return StuckAlerts([], 0, forgotten)
            ids = [row["request_id"] for row in rows]
            shown = ", ".join(f"#{i}" for i in ids[:DIGEST_MAX_IDS])
            if len(ids) > DIGEST_MAX_IDS:
                shown += f" (+{len(ids) - DIGEST_MAX_IDS})"
            items = [
                [r["id"], r["workflow_type"], r["current_state"], r["stuck_s"]]
                for r in await requests.digest_items(conn, ids[:DIGEST_MAX_IDS])
            ]
            params = {"count": len(ids), "ids": shown, "items": items}
            digest = hashlib.sha256(
                ",".join(
                    f"{r['request_id']}@{r['state_entered_at'].isoformat()}" for r in rows
                ).encode()
            ).hexdigest()[:24]
            if alerts is not None:
                alert = await alerts.raise_alert(
                    AlertKind.STUCK,
                    f"stuck-digest:{digest}",
                    "admin.stuck_digest",
                    params,
                    summary=f"stuck {shown}",
                    conn=conn,
                )
                return StuckAlerts(ids, alert.recipients, forgotten)
            digests = await outbox.enqueue_for_admins(
                conn,
                key_prefix=f"stuck-digest:{digest}",
                template_key="admin.stuck_digest",
                params=params,
                extra_telegram_ids=list(admin_telegram_ids),
            )
            return StuckAlerts(ids, digests, forgotten)

    # --- reading ------------------------------------------------------------------------

    async def get_detail(self, request_id: int, history_limit: int = 10) -> RequestDetail:
        """The request, its latest transitions and recovery actions, its assignee, whether
        it is stuck now and where a reset would take it.

        Raises:
            NotFoundError: no such request.
        """
        async with self.pool.acquire() as conn:
            request = await requests.get(conn, request_id)
            if request is None:
                raise NotFoundError("request", request_id)
            history = await requests.history(conn, request_id, history_limit)
            recovery = await recovery_log.recent(conn, limit=5, request_id=request_id)
            assignee = (
                await users.get(conn, request["assignee_id"]) if request["assignee_id"] else None
            )
            paths = await recovery_actions.state_paths(conn, [request_id])
            previous = reset_target(
                paths.get(request_id, []), request["current_state"], request["state_entered_at"]
            )
            stuck_now = (
                await self._stuck_item(conn, request, assignee)
                if request["status"] == "active"
                else None
            )
        return RequestDetail(
            request=request,
            history=list(history),
            recovery=list(recovery),
            assignee=assignee,
            stuck=stuck_now,
            previous_state=previous.state if previous else None,
        )

    async def _stuck_item(
        self,
        conn: AnyConnection,
        request: asyncpg.Record,
        assignee: asyncpg.Record | None,
    ) -> StuckRequest | None:
        """The request's stuck figures when it is stuck now, else None."""
        stuck_for_s = await conn.fetchval(
            "SELECT extract(epoch FROM now() - $1::timestamptz)::float8",
            request["state_entered_at"],
        )
        threshold = (
            self.threshold_s(request["workflow_type"], request["current_state"])
            if request["owner_role"] is not None
            else None
        )
        row = {
            "id": request["id"],
            "workflow_type": request["workflow_type"],
            "current_state": request["current_state"],
            "owner_role": request["owner_role"],
            "assignee_id": request["assignee_id"],
            "assignee_name": assignee["full_name"] if assignee else None,
            "assignee_active": assignee["is_active"] if assignee else None,
            "assignee_blocked": bool(assignee and assignee["blocked_bot_at"]),
            "version": request["version"],
            "stuck_for_s": stuck_for_s,
            "threshold_s": threshold,
            "over_deadline": threshold is not None and stuck_for_s > threshold,
        }
        unreachable = assignee is not None and (
            not assignee["is_active"] or assignee["blocked_bot_at"] is not None
        )
        if not row["over_deadline"] and not unreachable:
            return None
        return self._item(row)

    async def get_request(self, request_id: int) -> asyncpg.Record:
        """The request row.

        Raises:
            NotFoundError: no such request.
        """
        request = await requests.get(self.pool, request_id)
        if request is None:
            raise NotFoundError("request", request_id)
        return request

    async def get_user(self, user_id: int) -> asyncpg.Record | None:
        """A user row, or None."""
        return await users.get(self.pool, user_id)

    async def recovery_history(
        self, *, request_id: int | None = None, limit: int = 10, offset: int = 0
    ) -> tuple[list[asyncpg.Record], int]:
        """A page of ``workflow_recovery_log`` (one request, or all), newest first, and the
        total number of rows."""
        rows = await recovery_log.recent(
            self.pool, limit=limit, offset=max(offset, 0), request_id=request_id
        )
        if rows:
            return list(rows), rows[0]["total"]
        return [], 0

    async def reassign_candidates(
        self, role: str, *, exclude_user_id: int | None = None, limit: int = 5, offset: int = 0
    ) -> tuple[list[asyncpg.Record], int]:
        """A page of active, reachable users of ``role`` (by name, with their number of
        active requests) and how many there are."""
        return await recovery_actions.candidates(
            self.pool, role, exclude_user_id=exclude_user_id, limit=limit, offset=max(offset, 0)
        )

    # --- planning -----------------------------------------------------------------------

    async def preview(
        self, action: RecoveryAction, request_id: int, *, assignee_id: int | None = None
    ) -> Plan:
        """What ``action`` would do to the request now (for the confirmation screen).

        Raises the same refusals as ``apply`` would (except a stale version).
        """
        async with self.pool.acquire() as conn:
            current = await requests.get(conn, request_id)
            if current is None:
                raise NotFoundError("request", request_id)
            return await self._plan(conn, current, action, assignee_id)

    async def preview_batch_materials(
        self, action: RecoveryAction, request_ids: list[int]
    ) -> list[Outstanding]:
        """What a batch would give back (reset) or leave charged (complete), per issue."""
        if action is RecoveryAction.RESET:
            async with self.pool.acquire() as conn:
                paths = await recovery_actions.state_paths(conn, request_ids)
                visits = []
                for row in await recovery_actions.positions(conn, request_ids):
                    target = reset_target(
                        paths.get(row["id"], []), row["current_state"], row["state_entered_at"]
                    )
                    if target is not None:
                        visits += [
                            (row["id"], row["current_state"], t) for t in target.undone_visits
                        ]
                return await compensation.visit_issues(conn, visits)
        if action is RecoveryAction.COMPLETE:
            return await compensation.request_issues(self.pool, request_ids)
        return []

    async def _plan(
        self,
        conn: AnyConnection,
        current: asyncpg.Record,
        action: RecoveryAction,
        assignee_id: int | None,
    ) -> Plan:
        request_id = current["id"]
        state = current["current_state"]
        workflow_type = current["workflow_type"]
        if current["status"] != "active":
            raise InvalidTransitionError(request_id, state, NOT_ACTIVE)
        base = {
            "action": action,
            "request_id": request_id,
            "version": current["version"],
            "workflow_type": workflow_type,
            "from_state": state,
            "from_role": current["owner_role"],
            "from_assignee_id": current["assignee_id"],
        }
        if action is RecoveryAction.FORCE:
            step = wf.next_step(workflow_type, state)
            if step is None:
                raise InvalidTransitionError(request_id, state, TERMINAL)
            return Plan(
                **base,
                to_state=step.state,
                to_role=step.role,
                to_assignee_id=None,
                to_assignee_name=None,
                to_status="completed" if step.state == wf.TERMINAL_STATE else "active",
            )
        if action is RecoveryAction.COMPLETE:
            if state == wf.TERMINAL_STATE:
                raise InvalidTransitionError(request_id, state, TERMINAL)
            states = [s.state for s in wf.workflow(workflow_type)]
            skipped = states[states.index(state) + 1 : -1] if state in states else []
            kept = await compensation.request_issues(conn, [request_id])
            return Plan(
                **base,
                to_state=wf.TERMINAL_STATE,
                to_role=None,
                to_assignee_id=None,
                to_assignee_name=None,
                to_status="completed",
                skipped_states=tuple(skipped),
                kept=tuple(kept),
            )
        if action is RecoveryAction.RESET:
            paths = await recovery_actions.state_paths(conn, [request_id])
            previous = reset_target(paths.get(request_id, []), state, current["state_entered_at"])
            if previous is None:
                raise InvalidTransitionError(request_id, state, NO_HISTORY)
            to_state, holder_id = previous.state, previous.assignee_id
            try:
                to_role = wf.step_of(workflow_type, to_state).role
            except KeyError:
                raise InvalidTransitionError(request_id, state, NO_HISTORY) from None
            holder = await users.get(conn, holder_id) if holder_id is not None else None
            if holder is not None and not (
                holder["is_active"]
                and holder["blocked_bot_at"] is None
                and holder["role"] == to_role
            ):
                holder = None  # gone since: the whole role gets it back
            returns = await compensation.visit_issues(
                conn, [(request_id, state, at) for at in previous.undone_visits]
            )
            return Plan(
                **base,
                to_state=to_state,
                to_role=to_role,
                to_assignee_id=holder["id"] if holder else None,
                to_assignee_name=holder["full_name"] if holder else None,
                to_status="active",
                returns=tuple(returns),
                fingerprint=fingerprint(returns),
            )
        # reassign
        role = current["owner_role"]
        if role is None:
            raise InvalidTransitionError(request_id, state, TERMINAL)
        if assignee_id is None:
            raise InputValidationError("assignee_id", "missing")
        target = await users.get(conn, assignee_id)
        if target is None or not target["is_active"] or target["blocked_bot_at"] is not None:
            raise NotFoundError("user", assignee_id)
        if target["role"] != role:
            raise InputValidationError("assignee_id", f"role {target['role']} is not {role}")
        if current["assignee_id"] == assignee_id:
            raise InvalidTransitionError(request_id, state, ALREADY_ASSIGNED)
        return Plan(
            **base,
            to_state=state,
            to_role=role,
            to_assignee_id=assignee_id,
            to_assignee_name=target["full_name"],
            to_status="active",
        )

    # --- actions ------------------------------------------------------------------------

    async def apply(
        self,
        action: RecoveryAction,
        request_id: int,
        *,
        expected_version: int,
        admin: AdminRef,
        reason: str | None = None,
        assignee_id: int | None = None,
        expected_fingerprint: int | None = None,
        batch_id: uuid.UUID | None = None,
    ) -> Outcome:
        """Apply one recovery action in one transaction (see the module docstring), through
        ``TransactionalStateManager.run``: a ``transaction_log`` row, the whole transaction
        retried on transient failures, and an attempt whose COMMIT answer was lost answered
        from the log (done, never applied twice). Refusals and failures are logged in
        ``workflow_recovery_log`` with ``success = false``.

        Args:
            expected_version: the request version the admin saw.
            assignee_id: the new assignee (reassign only).
            expected_fingerprint: ``Plan.fingerprint`` of the confirmation screen; when given,
                a reset whose returns changed since is refused.
            batch_id: the batch this action belongs to (recorded in the log).

        Raises:
            NotFoundError: no such request (or, for reassign, no such reachable user).
            ConcurrentModificationError: the request moved since the admin looked (stale or
                repeated action, or another admin was first); nothing is changed.
            PreviewOutdatedError: the materials a reset gives back changed since the preview.
            InvalidTransitionError: not active, terminal, no history to reset to, or already
                assigned to that user.
            InputValidationError: reassign to a user of another role (or none given).
            Any other exception (``failure_code`` names it): nothing was changed, except
            ``TransactionInDoubtError`` (changed once or not at all).
        """
        before: dict[str, Any] | None = None
        # the outcome each attempt built, by its workflow_recovery_log id: an attempt whose
        # COMMIT answer was lost and that is found committed answers with its own outcome
        built: dict[int, Outcome] = {}

        async def body(ctx: TransactionContext) -> Outcome:
            nonlocal before
            conn = ctx.conn
            async with ctx.step("lock"):
                current = await requests.lock(conn, request_id)
                if current is None:
                    raise NotFoundError("request", request_id)
                before = _snapshot(current)
                if current["version"] != expected_version:
                    raise ConcurrentModificationError("request", request_id, expected_version)
                plan = await self._plan(conn, current, action, assignee_id)
                if expected_fingerprint is not None and plan.fingerprint != expected_fingerprint:
                    raise PreviewOutdatedError("request", request_id, expected_version)
            async with ctx.step("apply_state"):
                updated = await requests.apply_state(
                    conn,
                    request_id=request_id,
                    expected_version=expected_version,
                    state=plan.to_state,
                    role=plan.to_role,
                    assignee_id=plan.to_assignee_id,
                    status=plan.to_status,
                )
                if updated is None:  # cannot happen under the row lock; kept as a guard
                    raise ConcurrentModificationError("request", request_id, expected_version)
                after = _snapshot(updated)
                ctx.record("service_request", request_id, before=before, after=after)
            async with ctx.step("history"):
                transition = await requests.insert_transition(
                    conn,
                    request_id=request_id,
                    from_state=current["current_state"],
                    to_state=plan.to_state,
                    from_role=current["owner_role"],
                    to_role=plan.to_role,
                    from_assignee_id=current["assignee_id"],
                    to_assignee_id=plan.to_assignee_id,
                    actor_id=admin.user_id,
                    kind=action.transition_kind,
                    reason=reason,
                )
                ctx.record(
                    "workflow_transition", transition["id"], after={"kind": action.transition_kind}
                )
            async with ctx.step("compensation"):
                reversals = await compensation.reverse(
                    conn,
                    list(plan.returns),
                    actor_id=admin.user_id,
                    note=f"reset of request {request_id} from {current['current_state']}",
                )
                returned = [
                    {
                        "ledger_id": r.ledger_id,
                        "issue_id": r.issue_id,
                        "material_id": r.material_id,
                        "quantity": r.quantity,
                    }
                    for r in reversals
                ]
                for item in returned:
                    ctx.record("inventory_transaction", item["ledger_id"], after=item)
            if returned:
                after["returned"] = returned
            async with ctx.step("recovery_log"):
                log_id = await recovery_log.insert(
                    conn,
                    request_id=request_id,
                    action=action.value,
                    admin_id=admin.user_id,
                    admin_telegram_id=admin.telegram_id,
                    reason=reason,
                    before=before,
                    after=after,
                    success=True,
                    batch_id=batch_id,
                )
                ctx.record("workflow_recovery_log", log_id, after={"success": True})
            async with ctx.step("outbox"):
                await notify_state_change(
                    conn, updated, transition_id=transition["id"], kind=action.transition_kind
                )
            built[log_id] = Outcome(updated, plan, tuple(reversals), log_id)
            return built[log_id]

        async def resume(steps: list[dict[str, Any]]) -> Outcome:
            entry = recorded(steps, "workflow_recovery_log")
            if entry is None or entry["id"] not in built:  # pragma: no cover - a bug
                raise RuntimeError(f"no outcome of the committed {action.value} {request_id}")
            return built[entry["id"]]

        try:
            return await self.transactions.run(
                f"recovery.{action.value}", body, actor_id=admin.user_id, resume=resume
            )
        except DomainError as exc:
            await self._log_outcome(
                request_id if before is not None else None,
                action,
                admin,
                reason,
                before,
                f"{refusal_code(exc)}: {exc}",
                batch_id,
            )
            raise
        except Exception as exc:
            await self._log_outcome(
                request_id, action, admin, reason, before, failure_text(exc), batch_id
            )
            raise

    async def force_transition(
        self,
        request_id: int,
        *,
        expected_version: int,
        admin: AdminRef,
        reason: str | None = None,
    ) -> asyncpg.Record:
        """Move the request to the next step of its workflow; returns the updated request.
        Refusals as ``apply``."""
        outcome = await self.apply(
            RecoveryAction.FORCE,
            request_id,
            expected_version=expected_version,
            admin=admin,
            reason=reason,
        )
        return outcome.request

    async def reset_state(
        self,
        request_id: int,
        *,
        expected_version: int,
        admin: AdminRef,
        reason: str | None = None,
        expected_fingerprint: int | None = None,
    ) -> Outcome:
        """Move the request back to the previous state of its history, giving back (return
        ledger rows, balances) what the undone step consumed. Refusals as ``apply``; no
        history to go back to is ``InvalidTransitionError`` (detail ``NO_HISTORY``)."""
        return await self.apply(
            RecoveryAction.RESET,
            request_id,
            expected_version=expected_version,
            admin=admin,
            reason=reason,
            expected_fingerprint=expected_fingerprint,
        )

    async def complete(
        self,
        request_id: int,
        *,
        expected_version: int,
        admin: AdminRef,
        reason: str | None = None,
    ) -> Outcome:
        """Force the request to completion (materials issued stay charged). Refusals as
        ``apply``."""
        return await self.apply(
            RecoveryAction.COMPLETE,
            request_id,
            expected_version=expected_version,
            admin=admin,
            reason=reason,
        )

    async def reassign(
        self,
        request_id: int,
        *,
        expected_version: int,
        assignee_id: int,
        admin: AdminRef,
        reason: str | None = None,
    ) -> Outcome:
        """Give the request to ``assignee_id``, an active, reachable user of the role owning
        its state. Refusals as ``apply``."""
        return await self.apply(
            RecoveryAction.REASSIGN,
            request_id,
            expected_version=expected_version,
            admin=admin,
            reason=reason,
            assignee_id=assignee_id,
        )

    async def apply_batch(
        self,
        action: RecoveryAction,
        targets: Sequence[tuple[int, int]],
        *,
        admin: AdminRef,
        reason: str | None = None,
        assignee_id: int | None = None,
    ) -> BatchResult:
        """Apply ``action`` to each (request id, version seen at review), each in its own
        transaction (``apply``), all under one ``batch_id``.

        A batch never aborts on one request: a request that moved since the review is
        counted stale; a refusal is counted failed with its ``refusal_code``, any other
        exception (a lost connection, a timeout, a bug) failed with its ``failure_code``,
        and the batch goes on. Each outcome is in ``workflow_recovery_log`` with the batch
        id (failures as far as the database takes the row). Only cancellation stops it
        (``asyncio.CancelledError`` propagates).
        """
        result = BatchResult(batch_id=uuid.uuid4(), action=action, requested=len(targets))
        for request_id, version in targets:
            try:
                outcome = await self.apply(
                    action,
                    request_id,
                    expected_version=version,
                    admin=admin,
                    reason=reason,
                    assignee_id=assignee_id,
                    batch_id=result.batch_id,
                )
            except ConcurrentModificationError:
                result.stale.append(request_id)
            except DomainError as exc:
                result.failed.append((request_id, refusal_code(exc)))
            except Exception as exc:
                log.warning(
                    "batch %s: request %s failed: %s",
                    result.batch_id,
                    request_id,
                    failure_text(exc),
                )
                result.failed.append((request_id, failure_code(exc)))
            else:
                result.succeeded.append(request_id)
                result.returned_units += sum(r.quantity for r in outcome.reversals)
        return result

    # --- audit of refusals and failures ---------------------------------------------------

    async def _log_outcome(
        self,
        request_id: int | None,
        action: RecoveryAction,
        admin: AdminRef,
        reason: str | None,
        before: dict[str, Any] | None,
        error_message: str,
        batch_id: uuid.UUID | None,
    ) -> None:
        """A ``success = false`` row, outside the rolled-back transaction; never raises (the
        database may be what failed: the outcome is still the caller's to report)."""
        try:
            await recovery_log.insert(
                self.pool,
                request_id=request_id,
                action=action.value,
                admin_id=admin.user_id,
                admin_telegram_id=admin.telegram_id,
                reason=reason,
                before=before,
                after=None,
                success=False,
                error_message=error_message,
                batch_id=batch_id,
            )
        except Exception as exc:
            log.warning(
                "could not log %s of %s on request %s: %s",
                error_message.split(":", 1)[0],
                action.value,
                request_id,
                type(exc).__name__,
            )
