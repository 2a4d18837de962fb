"""Planning a recovery action from the locked request: what it changes and gives back."""

from __future__ import annotations

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
