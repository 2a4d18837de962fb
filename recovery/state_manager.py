"""``EnhancedStateManager``: the workflow operations, each one database transaction.

Every operation locks the request, checks the version the caller saw (optimistic locking on
``service_requests.version``), writes ``workflow_transitions`` and enqueues its notifications
into ``pending_notifications`` in the same transaction (transactional outbox).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from database import ledger, requests
from recovery import workflow_definitions as wf
from recovery.exceptions import (
    ConcurrentModificationError,
    InputValidationError,
    InsufficientStockError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from recovery.workflow_events import notify_state_change

MAX_DESCRIPTION_LENGTH = 1000
MAX_IDEMPOTENCY_KEY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an operation: the user's id and role."""

    user_id: int
    role: str


@dataclass(frozen=True, slots=True)
class MaterialUse:
    """The outcome of ``use_materials``: the ledger row, the units taken (> 0), the balance
    right after, and whether the idempotency key had been used already (nothing taken)."""

    ledger_id: int
    material_id: int
    request_id: int
    quantity: int
    balance_after: int
    duplicate: bool = False


class EnhancedStateManager:
    """Workflow operations on a pool; each method is one transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_request(
        self, actor: Actor, *, workflow_type: str, description: str, address: str = ""
    ) -> asyncpg.Record:
        """Open a request in the first state of ``workflow_type``; returns the row.

        Raises:
            InputValidationError: unknown workflow type or an empty/too long description.
        """
        if workflow_type not in wf.WORKFLOWS:
            raise InputValidationError("workflow_type", f"unknown workflow {workflow_type!r}")
        description = description.strip()
        if not description:
            raise InputValidationError("description", "empty")
        if len(description) > MAX_DESCRIPTION_LENGTH:
            raise InputValidationError("description", f"longer than {MAX_DESCRIPTION_LENGTH}")
        first = wf.first_step(workflow_type)
        async with self.pool.acquire() as conn, conn.transaction():
            request = await requests.insert(
                conn,
                workflow_type=workflow_type,
                client_id=actor.user_id,
                description=description,
                address=address.strip(),
                state=first.state,
                role=first.role,
            )
            transition = await requests.insert_transition(
                conn,
                request_id=request["id"],
                from_state=None,
                to_state=first.state,
                from_role=None,
                to_role=first.role,
                from_assignee_id=None,
                to_assignee_id=None,
                actor_id=actor.user_id,
                kind="create",
            )
            await notify_state_change(conn, request, transition_id=transition["id"], kind="create")
            return request

    async def advance(self, actor: Actor, request_id: int, expected_version: int) -> asyncpg.Record:
        """Move the request to the next step of its workflow (a normal transition).

        Raises:
            NotFoundError: no such request.
            PermissionDeniedError: the actor's role does not own the current state.
            ConcurrentModificationError: the version moved on since the caller read it.
            InvalidTransitionError: the request is not active or already terminal.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            current = await requests.lock(conn, request_id)
            if current is None:
                raise NotFoundError("request", request_id)
            if current["owner_role"] != actor.role and actor.role != "admin":
                raise PermissionDeniedError("advance", actor.role)
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
            if updated is None:
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
                actor_id=actor.user_id,
                kind="normal",
            )
            await notify_state_change(conn, updated, transition_id=transition["id"], kind="normal")
            return updated

    async def list_for_client(self, client_id: int, limit: int = 20) -> list[asyncpg.Record]:
        """The client's latest requests, newest first."""
        return await requests.list_for_client(self.pool, client_id, limit=limit)

    async def list_for_role(self, role: str, limit: int = 20) -> list[asyncpg.Record]:
        """Active requests owned by ``role``, oldest first."""
        return await requests.list_for_role(self.pool, role, limit=limit)

    async def use_materials(
        self,
        actor: Actor,
        request_id: int,
        material_id: int,
        quantity: int,
        *,
        idempotency_key: str,
        expected_version: int | None = None,
    ) -> MaterialUse:
        """Take ``quantity`` units of a material from stock for a request, in one
        transaction: an ``issue`` row in the ledger under ``idempotency_key`` (a repeated
        call takes nothing again) and a guarded decrement that never goes below zero.

        Allowed while the request is active in one of ``MATERIAL_STATES``, to the role
        owning its state (or an admin).

        Raises:
            InputValidationError: quantity not a positive integer, or a bad key.
            NotFoundError: no such request or material.
            PermissionDeniedError: the actor's role does not own the current state.
            ConcurrentModificationError: ``expected_version`` is stale.
            InvalidTransitionError: the request is not active or not in a material state.
            InsufficientStockError: the balance is below ``quantity`` (nothing is taken).
        """
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise InputValidationError("quantity", "must be a positive integer")
        if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise InputValidationError("idempotency_key", "empty or too long")
        async with self.pool.acquire() as conn, conn.transaction():
            current = await requests.lock(conn, request_id)
            if current is None:
                raise NotFoundError("request", request_id)
            if current["owner_role"] != actor.role and actor.role != "admin":
                raise PermissionDeniedError("use_materials", actor.role)
            if expected_version is not None and current["version"] != expected_version:
                raise ConcurrentModificationError("request", request_id, expected_version)
            if current["status"] != "active" or current["current_state"] not in wf.MATERIAL_STATES:
                raise InvalidTransitionError(
                    request_id, current["current_state"], "materials cannot be used now"
                )
            if await ledger.balance(conn, material_id) is None:
                raise NotFoundError("material", material_id)
            entry = await ledger.insert_entry(
                conn,
                material_id=material_id,
                kind="issue",
                quantity=-quantity,
                idempotency_key=idempotency_key,
                request_id=request_id,
                actor_id=actor.user_id,
            )
            if entry is None:
                first = await ledger.get_by_key(conn, idempotency_key)
                assert first is not None
                return MaterialUse(
                    ledger_id=first["id"],
                    material_id=material_id,
                    request_id=request_id,
                    quantity=-first["quantity"],
                    balance_after=await ledger.balance(conn, material_id) or 0,
                    duplicate=True,
                )
            balance_after = await ledger.decrement_stock(conn, material_id, quantity)
            if balance_after is None:
                available = await ledger.balance(conn, material_id)
                raise InsufficientStockError(material_id, quantity, available)
            return MaterialUse(
                ledger_id=entry["id"],
                material_id=material_id,
                request_id=request_id,
                quantity=quantity,
                balance_after=balance_after,
            )
