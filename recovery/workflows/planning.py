"""Planning a recovery action from the locked request: what it changes and gives back."""

from __future__ import annotations

from typing import Any

import asyncpg

from database import compensation, recovery_actions, requests, users
from database.compensation import Outstanding
from database.pool import AnyConnection
from recovery import workflow_definitions as wf
from recovery.exceptions import (
    InputValidationError,
    InvalidTransitionError,
    NotFoundError,
)
from recovery.workflows.base import ManagerBase
from recovery.workflows.history import fingerprint, reset_target
from recovery.workflows.model import (
    ALREADY_ASSIGNED,
    NO_HISTORY,
    NOT_ACTIVE,
    TERMINAL,
    Plan,
    RecoveryAction,
)


class RecoveryPlanning(ManagerBase):
    """Planning a recovery action from the locked request: what it changes and gives back."""

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
        """What ``action`` does to the request row ``current`` (read on ``conn``).

        Raises:
            InvalidTransitionError: not active, terminal, no history to reset to, or
                (reassign) already assigned to that user.
            NotFoundError: (reassign) no such active, reachable user.
            InputValidationError: (reassign) no assignee, or one of another role.
        """
        if current["status"] != "active":
            raise InvalidTransitionError(current["id"], current["current_state"], NOT_ACTIVE)
        base = _plan_base(current, action)
        if action is RecoveryAction.FORCE:
            return _plan_force(current, base)
        if action is RecoveryAction.COMPLETE:
            return await _plan_complete(conn, current, base)
        if action is RecoveryAction.RESET:
            return await _plan_reset(conn, current, base)
        return await _plan_reassign(conn, current, base, assignee_id)


def _plan_base(current: asyncpg.Record, action: RecoveryAction) -> dict[str, Any]:
    """The fields of a ``Plan`` every action shares: the action and the request before it."""
    return {
        "action": action,
        "request_id": current["id"],
        "version": current["version"],
        "workflow_type": current["workflow_type"],
        "from_state": current["current_state"],
        "from_role": current["owner_role"],
        "from_assignee_id": current["assignee_id"],
    }


def _plan_force(current: asyncpg.Record, base: dict[str, Any]) -> Plan:
    """Force: on to the next step of the workflow, held by nobody."""
    state = current["current_state"]
    step = wf.next_step(current["workflow_type"], state)
    if step is None:
        raise InvalidTransitionError(current["id"], state, TERMINAL)
    return Plan(
        **base,
        to_state=step.state,
        to_role=step.role,
        to_assignee_id=None,
        to_assignee_name=None,
        to_status="completed" if step.state == wf.TERMINAL_STATE else "active",
    )


async def _plan_complete(
    conn: AnyConnection, current: asyncpg.Record, base: dict[str, Any]
) -> Plan:
    """Complete: straight to the terminal state, the states between skipped; the materials
    issued to the request stay charged (``kept``)."""
    request_id, state = current["id"], current["current_state"]
    if state == wf.TERMINAL_STATE:
        raise InvalidTransitionError(request_id, state, TERMINAL)
    states = [s.state for s in wf.workflow(current["workflow_type"])]
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


async def _plan_reset(conn: AnyConnection, current: asyncpg.Record, base: dict[str, Any]) -> Plan:
    """Reset: back to the previous state of the recorded history, to its holder when that
    user may still hold it (else the whole role); the issues of the undone visits are
    given back (``returns``, with their ``fingerprint``)."""
    request_id, state = current["id"], current["current_state"]
    workflow_type = current["workflow_type"]
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
        holder["is_active"] and holder["blocked_bot_at"] is None and holder["role"] == to_role
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


async def _plan_reassign(
    conn: AnyConnection, current: asyncpg.Record, base: dict[str, Any], assignee_id: int | None
) -> Plan:
    """Reassign: the same state, held by ``assignee_id``, an active reachable user of the
    role owning it."""
    request_id, state = current["id"], current["current_state"]
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
