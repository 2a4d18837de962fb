"""``WorkflowRecoveryManager``: find stuck workflows and repair them on an admin's order.

A request is stuck when it is active and has been in its state longer than that state's
threshold (``STUCK_THRESHOLDS`` per ``workflow_type:state``, default ``STUCK_DEFAULT_THRESHOLD_S``
= 24 h). Every recovery action is one transaction that locks the row (``FOR UPDATE``),
checks the version the admin saw, writes ``workflow_transitions`` and
``workflow_recovery_log``, and enqueues the notifications (outbox). A refused action is
logged too (``success = false``), outside the rolled-back transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from database import recovery_log, requests, stuck
from recovery import workflow_definitions as wf
from recovery.exceptions import (
    ConcurrentModificationError,
    DomainError,
    InvalidTransitionError,
    NotFoundError,
)
from recovery.workflow_events import notify_state_change

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdminRef:
    """The admin performing an action: user id (None when only listed in ADMIN_IDS) and
    Telegram id."""

    user_id: int | None
    telegram_id: int


@dataclass(frozen=True, slots=True)
class StuckRequest:
    """One stuck request: how long (seconds), against which threshold, who holds it."""

    request_id: int
    workflow_type: str
    state: str
    role: str | None
    assignee_name: str | None
    version: int
    stuck_for_s: float
    threshold_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class StuckPage:
    """A page of stuck requests and the total number of matches."""

    items: list[StuckRequest]
    total: int


def _snapshot(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "state": row["current_state"],
        "role": row["owner_role"],
        "assignee_id": row["assignee_id"],
        "status": row["status"],
        "version": row["version"],
    }


class WorkflowRecoveryManager:
    """Stuck detection and admin recovery actions.

    Args:
        pool: asyncpg pool.
        default_threshold_s: seconds in a state before a request counts as stuck.
        thresholds: per ``"workflow_type:state"`` thresholds in seconds.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        default_threshold_s: float = 24 * 3600.0,
        thresholds: dict[str, float] | None = None,
    ) -> None:
        self.pool = pool
        self.default_threshold_s = default_threshold_s
        self.thresholds: dict[tuple[str, str], float] = {}
        for key, seconds in (thresholds or {}).items():
            workflow_type, _, state = key.partition(":")
            self.thresholds[(workflow_type, state)] = float(seconds)

    async def find_stuck(
        self,
        *,
        workflow_type: str | None = None,
        state: str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> StuckPage:
        """A page of stuck requests, longest-stuck first."""
        rows = await stuck.find_stuck(
            self.pool,
            thresholds=self.thresholds,
            default_threshold_s=self.default_threshold_s,
            workflow_type=workflow_type,
            state=state,
            limit=limit,
            offset=offset,
        )
        items = [
            StuckRequest(
                request_id=row["id"],
                workflow_type=row["workflow_type"],
                state=row["current_state"],
                role=row["owner_role"],
                assignee_name=row["assignee_name"],
                version=row["version"],
                stuck_for_s=row["stuck_for_s"],
                threshold_s=row["threshold_s"],
                reason="over_deadline",
            )
            for row in rows
        ]
        return StuckPage(items=items, total=rows[0]["total"] if rows else 0)

    async def get_detail(
        self, request_id: int, history_limit: int = 10
    ) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
        """The request and its latest transitions (newest first).

        Raises:
            NotFoundError: no such request.
        """
        request = await requests.get(self.pool, request_id)
        if request is None:
            raise NotFoundError("request", request_id)
        return request, await requests.history(self.pool, request_id, history_limit)

    async def force_transition(
        self,
        request_id: int,
        *,
        expected_version: int,
        admin: AdminRef,
        reason: str | None = None,
    ) -> asyncpg.Record:
        """Move the request to the next step of its workflow, whatever its owner did.

        Returns the updated request.

        Raises:
            NotFoundError: no such request.
            ConcurrentModificationError: the request moved since the admin looked (stale or
                repeated action); nothing is changed.
            InvalidTransitionError: the request is not active or already terminal.
        """
        before: dict[str, Any] | None = None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                current = await requests.lock(conn, request_id)
                if current is None:
                    raise NotFoundError("request", request_id)
                before = _snapshot(current)
                if current["version"] != expected_version:
                    raise ConcurrentModificationError("request", request_id, expected_version)
                if current["status"] != "active":
                    raise InvalidTransitionError(request_id, current["current_state"], "not active")
                step = wf.next_step(current["workflow_type"], current["current_state"])
                if step is None:
                    raise InvalidTransitionError(request_id, current["current_state"], "terminal")
                updated = await requests.apply_state(
                    conn,
                    request_id=request_id,
                    expected_version=expected_version,
                    state=step.state,
                    role=step.role,
                    assignee_id=None,
                    status="completed" if step.state == wf.TERMINAL_STATE else "active",
                )
                if updated is None:  # cannot happen under the row lock; kept as a guard
                    raise ConcurrentModificationError("request", request_id, expected_version)
                transition = await requests.insert_transition(
                    conn,
                    request_id=request_id,
                    from_state=current["current_state"],
                    to_state=step.state,
                    from_role=current["owner_role"],
                    to_role=step.role,
                    from_assignee_id=current["assignee_id"],
                    to_assignee_id=None,
                    actor_id=admin.user_id,
                    kind="force",
                    reason=reason,
                )
                await recovery_log.insert(
                    conn,
                    request_id=request_id,
                    action="force_transition",
                    admin_id=admin.user_id,
                    admin_telegram_id=admin.telegram_id,
                    reason=reason,
                    before=before,
                    after=_snapshot(updated),
                    success=True,
                )
                await notify_state_change(
                    conn, updated, transition_id=transition["id"], kind="force"
                )
                return updated
        except DomainError as exc:
            await self._log_refusal(request_id, "force_transition", admin, reason, before, exc)
            raise

    async def _log_refusal(
        self,
        request_id: int,
        action: str,
        admin: AdminRef,
        reason: str | None,
        before: dict[str, Any] | None,
        exc: DomainError,
    ) -> None:
        exists = before is not None
        try:
            await recovery_log.insert(
                self.pool,
                request_id=request_id if exists else None,
                action=action,
                admin_id=admin.user_id,
                admin_telegram_id=admin.telegram_id,
                reason=reason,
                before=before,
                after=None,
                success=False,
                error_message=str(exc),
            )
        except asyncpg.PostgresError:
            log.exception("could not log refused %s on request %s", action, request_id)
