"""The steps the operations share: lock and check, apply a state, write the history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from database import ledger, requests
from database.pool import AnyConnection
from recovery.actors import Actor
from recovery.exceptions import (
    ConcurrentModificationError,
    InputValidationError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from recovery.state_manager.base import ManagerBase
from recovery.state_manager.model import (
    MaterialUse,
)
from recovery.transaction_context import TransactionContext, recorded
from recovery.workflow_events import notify_state_change


class SharedSteps(ManagerBase):
    """The steps the operations share: lock and check, apply a state, write the history."""

    @staticmethod
    async def _lock_for_change(
        ctx: TransactionContext,
        request_id: int,
        expected_version: int,
        *,
        allowed: Callable[[asyncpg.Record | None], bool],
        action: str = "advance",
        role: str | None = None,
    ) -> asyncpg.Record:
        """Lock the request, then: ``allowed`` (the permission, asked first, with None for
        a missing request) or ``PermissionDeniedError``; then it must exist, be at
        ``expected_version`` and be active."""
        current = await requests.lock(ctx.conn, request_id)
        if not allowed(current):
            raise PermissionDeniedError(action, role)
        if current is None:
            raise NotFoundError("request", request_id)
        if current["version"] != expected_version:
            raise ConcurrentModificationError("request", request_id, expected_version)
        if current["status"] != "active":
            raise InvalidTransitionError(request_id, current["current_state"], "not active")
        return current

    async def _apply(
        self,
        ctx: TransactionContext,
        actor: Actor,
        current: asyncpg.Record,
        *,
        state: str,
        role: str | None,
        assignee_id: int | None,
        status: str,
        kind: str,
    ) -> asyncpg.Record:
        async with ctx.step("apply_state"):
            updated = await requests.apply_state(
                ctx.conn,
                request_id=current["id"],
                expected_version=current["version"],
                state=state,
                role=role,
                assignee_id=assignee_id,
                status=status,
            )
            if updated is None:  # cannot happen under the row lock; kept as a guard
                raise ConcurrentModificationError("request", current["id"], current["version"])
            ctx.record(
                "service_request",
                current["id"],
                before=requests.snapshot(current),
                after=requests.snapshot(updated),
            )
        await self._write_history(ctx, actor, current, updated, kind=kind)
        return updated

    @staticmethod
    async def _write_history(
        ctx: TransactionContext,
        actor: Actor,
        current: asyncpg.Record | None,
        updated: asyncpg.Record,
        *,
        kind: str,
    ) -> None:
        """The ``workflow_transitions`` row, then the notifications (outbox)."""
        async with ctx.step("history"):
            transition = await requests.insert_transition(
                ctx.conn,
                request_id=updated["id"],
                from_state=current["current_state"] if current is not None else None,
                to_state=updated["current_state"],
                from_role=current["owner_role"] if current is not None else None,
                to_role=updated["owner_role"],
                from_assignee_id=current["assignee_id"] if current is not None else None,
                to_assignee_id=updated["assignee_id"],
                actor_id=actor.user_id,
                kind=kind,
            )
            ctx.record("workflow_transition", transition["id"], after={"kind": kind})
        async with ctx.step("outbox"):
            await notify_state_change(ctx.conn, updated, transition_id=transition["id"], kind=kind)

    async def _resume_request(self, steps: list[dict[str, Any]]) -> asyncpg.Record:
        """The request an earlier, committed attempt changed (its current row)."""
        changed = recorded(steps, "service_request")
        assert changed is not None  # every request operation records its request
        row = await requests.get(self.pool, changed["id"])
        assert row is not None  # requests are never deleted by the workflow
        return row

    @staticmethod
    async def _existing_use(
        conn: AnyConnection | asyncpg.Pool,
        idempotency_key: str,
        request_id: int,
        material_id: int,
        quantity: int,
    ) -> MaterialUse:
        existing = await ledger.get_by_key(conn, idempotency_key)
        if (
            existing is None
            or existing["kind"] != "issue"
            or existing["material_id"] != material_id
            or existing["request_id"] != request_id
            or existing["quantity"] != -quantity
        ):
            raise InputValidationError("idempotency_key", "already used for another movement")
        balance = await ledger.balance(conn, material_id)
        return MaterialUse(
            ledger_id=existing["id"],
            material_id=material_id,
            request_id=request_id,
            quantity=quantity,
            balance_after=balance if balance is not None else 0,
            duplicate=True,
        )
