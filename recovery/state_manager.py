"""``EnhancedStateManager``: the workflow operations, each one audited database transaction.

Operations: open a request (``create_request``), move it to the next step (``advance``),
assign it (``assign``), use materials for it (``use_materials``). Each runs through
``recovery.transactions.TransactionalStateManager``: one transaction that fully happens or
leaves nothing but its ``transaction_log`` row, retried as a whole on transient failures
(SQLSTATE 40001, 40P01, class 08, dropped connections) with exponential backoff and full
jitter. Refusals are the project's typed errors (``recovery.exceptions``).

State changes (create, advance, assign) lock the request (``FOR UPDATE``), check the version
the caller saw (optimistic locking on ``service_requests.version``), write
``workflow_transitions`` and enqueue their notifications into ``pending_notifications`` in
the same transaction (transactional outbox; idempotency keys from the transition id).

Permission comes before state: an actor who may not act on a request (``may_act``) gets one
``PermissionDeniedError`` whether the request exists or not, whatever its version and
status, so that a refusal tells nothing about a request the actor may not see. Only then
are the version and the status checked.

A material use does not change the request's state: it holds the request ``FOR SHARE`` (so
the state cannot move meanwhile, other uses are not blocked), decrements the balance with a
guarded UPDATE that can never go below zero, and writes an ``issue`` row to the ledger under
the caller's idempotency key, so a repeated use is counted once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from database import ledger, requests, transaction_log, users
from database.pool import AnyConnection
from recovery import workflow_definitions as wf
from recovery.exceptions import (
    ConcurrentModificationError,
    InputValidationError,
    InsufficientStockError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from recovery.transactions import (
    StepHook,
    TransactionalStateManager,
    TransactionContext,
    TransactionRetryPolicy,
    TransactionStats,
    recorded,
)
from recovery.workflow_events import notify_state_change

MAX_DESCRIPTION_LENGTH = 1000
MAX_IDEMPOTENCY_KEY_LENGTH = 200
# Roles that may assign a request besides the role owning its current state.
ASSIGNER_ROLES: frozenset[str] = frozenset({"manager", "junior_manager", "admin"})


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an operation: the user's id and role."""

    user_id: int
    role: str


def may_act(actor: Actor, request: asyncpg.Record | None) -> bool:
    """Whether ``actor`` may work on ``request`` (None: it does not exist): an admin on any
    request; staff on an active request of their role that is assigned to nobody or to
    them; nobody else (clients, other roles, a missing or finished request)."""
    if actor.role == "admin":
        return True
    return (
        request is not None
        and request["status"] == "active"
        and request["owner_role"] == actor.role
        and request["assignee_id"] in (None, actor.user_id)
    )


@dataclass(frozen=True, slots=True)
class MaterialUse:
    """The outcome of ``use_materials``.

    Attributes:
        ledger_id: the ``inventory_transactions`` row of this use.
        material_id, request_id: what was used, for which request.
        quantity: units taken from stock (> 0; the ledger row holds ``-quantity``).
        balance_after: the material's balance right after this use (for a duplicate: the
            balance now).
        duplicate: the idempotency key had been used already; nothing was taken again.
    """

    ledger_id: int
    material_id: int
    request_id: int
    quantity: int
    balance_after: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class StateManagerHealth:
    """Health figures of the state changes, read by the health monitor.

    Attributes:
        active_requests: requests with status ``active`` now.
        recent_commits: committed transactions in the window (all instances).
        recent_failures: transactions that rolled back or whose COMMIT outcome was unknown
            because of a transient or system error, in the window.
        recent_refusals: transactions rolled back by a business, data or inventory refusal
            (stale version, no permission, insufficient stock...), in the window.
        recent_retries: attempts rolled back and retried, in the window.
        window_s: the window, seconds.
        process: this process's counters since start.
    """

    active_requests: int
    recent_commits: int
    recent_failures: int
    recent_refusals: int
    recent_retries: int
    window_s: float
    process: TransactionStats


def _snapshot(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "state": row["current_state"],
        "role": row["owner_role"],
        "assignee_id": row["assignee_id"],
        "status": row["status"],
        "version": row["version"],
    }


class EnhancedStateManager:
    """Workflow operations on a pool; each method is one audited, retried transaction.

    Every operation takes ``within``: an open ``TransactionContext`` to run inside (as a
    savepoint, no retry of its own) instead of a transaction of its own.

    Args:
        pool: asyncpg pool.
        retry_policy: retry of transient failures (settings ``DB_RETRY_ATTEMPTS``,
            ``DB_RETRY_BASE_DELAY_S``, ``DB_RETRY_MAX_DELAY_S``).
        step_hook: see ``recovery.transactions.StepHook`` (tracing, fault injection).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retry_policy: TransactionRetryPolicy | None = None,
        step_hook: StepHook | None = None,
    ) -> None:
        self.pool = pool
        self.transactions = TransactionalStateManager(
            pool, retry_policy=retry_policy, step_hook=step_hook
        )

    # --- operations -----------------------------------------------------------------------

    async def create_request(
        self,
        actor: Actor,
        *,
        workflow_type: str,
        description: str,
        address: str = "",
        within: TransactionContext | None = None,
    ) -> asyncpg.Record:
        """Open a request in the first state of ``workflow_type``; returns the row.

        Raises:
            InputValidationError: unknown workflow type or an empty/too long description
                (``MAX_DESCRIPTION_LENGTH`` characters; blanks and NUL do not count).
        """
        if workflow_type not in wf.WORKFLOWS:
            raise InputValidationError("workflow_type", f"unknown workflow {workflow_type!r}")
        description = description.replace("\x00", "").strip()  # PostgreSQL text has no NUL
        if not description:
            raise InputValidationError("description", "empty")
        if len(description) > MAX_DESCRIPTION_LENGTH:
            raise InputValidationError("description", f"longer than {MAX_DESCRIPTION_LENGTH}")
        first = wf.first_step(workflow_type)

        async def body(ctx: TransactionContext) -> asyncpg.Record:
            async with ctx.step("insert_request"):
                request = await requests.insert(
                    ctx.conn,
                    workflow_type=workflow_type,
                    client_id=actor.user_id,
                    description=description,
                    address=address.strip(),
                    state=first.state,
                    role=first.role,
                )
                ctx.record("service_request", request["id"], after=_snapshot(request))
            await self._write_history(ctx, actor, None, request, kind="create")
            return request

        return await self.transactions.run(
            "create_request",
            body,
            actor_id=actor.user_id,
            parent=within,
            resume=self._resume_request,
        )

    async def advance(
        self,
        actor: Actor,
        request_id: int,
        expected_version: int,
        *,
        within: TransactionContext | None = None,
    ) -> asyncpg.Record:
        """Move the request to the next step of its workflow (a normal transition).

        Returns the updated request.

        Raises:
            PermissionDeniedError: the actor may not act on it (``may_act``), whether or
                not it exists, whatever its version and status.
            NotFoundError: no such request (admins only).
            ConcurrentModificationError: the version moved on since the caller read it.
            InvalidTransitionError: the request is not active or already terminal (admins).
        """

        async def body(ctx: TransactionContext) -> asyncpg.Record:
            async with ctx.step("lock"):
                current = await self._lock_for_change(
                    ctx,
                    request_id,
                    expected_version,
                    allowed=lambda row: may_act(actor, row),
                    role=actor.role,
                )
                step = wf.next_step(current["workflow_type"], current["current_state"])
                if step is None:
                    raise InvalidTransitionError(request_id, current["current_state"], "terminal")
            return await self._apply(
                ctx,
                actor,
                current,
                state=step.state,
                role=step.role,
                assignee_id=None,
                status="completed" if step.state == wf.TERMINAL_STATE else "active",
                kind="normal",
            )

        return await self.transactions.run(
            "advance", body, actor_id=actor.user_id, parent=within, resume=self._resume_request
        )

    async def assign(
        self,
        actor: Actor,
        request_id: int,
        expected_version: int,
        assignee_id: int,
        *,
        within: TransactionContext | None = None,
    ) -> asyncpg.Record:
        """Assign the request to ``assignee_id``, a user of the role owning its current state.

        Allowed to the owning role and to ``ASSIGNER_ROLES``. The state does not change; the
        history gets a row of kind ``assign`` and the assignee is notified.

        Raises:
            PermissionDeniedError: the actor may not assign this request: neither an
                assigner nor ``may_act`` (whether or not it exists, whatever its state).
            NotFoundError: no such request (assigners), or no such active user.
            ConcurrentModificationError: the version moved on since the caller read it.
            InvalidTransitionError: the request is not active, terminal, or already assigned
                to that user.
            InputValidationError: the assignee's role does not own the current state.
        """

        async def body(ctx: TransactionContext) -> asyncpg.Record:
            async with ctx.step("lock"):
                current = await self._lock_for_change(
                    ctx,
                    request_id,
                    expected_version,
                    allowed=lambda row: actor.role in ASSIGNER_ROLES or may_act(actor, row),
                    action="assign",
                    role=actor.role,
                )
                role = current["owner_role"]
                if role is None:
                    raise InvalidTransitionError(request_id, current["current_state"], "terminal")
                assignee = await users.get(ctx.conn, assignee_id)
                if assignee is None or not assignee["is_active"]:
                    raise NotFoundError("user", assignee_id)
                if assignee["role"] != role:
                    raise InputValidationError(
                        "assignee_id", f"role {assignee['role']} does not own this state"
                    )
                if current["assignee_id"] == assignee_id:
                    raise InvalidTransitionError(
                        request_id, current["current_state"], "already assigned to this user"
                    )
            return await self._apply(
                ctx,
                actor,
                current,
                state=current["current_state"],
                role=role,
                assignee_id=assignee_id,
                status=current["status"],
                kind="assign",
            )

        return await self.transactions.run(
            "assign", body, actor_id=actor.user_id, parent=within, resume=self._resume_request
        )

    async def use_materials(
        self,
        actor: Actor,
        request_id: int,
        material_id: int,
        quantity: int,
        *,
        idempotency_key: str,
        expected_version: int | None = None,
        within: TransactionContext | None = None,
    ) -> MaterialUse:
        """Take ``quantity`` units of a material from stock for a request.

        Allowed while the request is active in one of ``MATERIAL_STATES``, to the role owning
        the state (or an admin). ``idempotency_key`` names this use (e.g. built from the
        Telegram update): a repeated call with the same key returns the first use with
        ``duplicate=True`` and takes nothing again. ``expected_version``, when given, must
        still be the request's version (the request's version itself does not change).

        Raises:
            InputValidationError: quantity not a positive integer, an empty or too long key,
                or a key already used for a different use.
            PermissionDeniedError: the actor may not act on the request (``may_act``),
                whether or not it exists, whatever its version and status.
            NotFoundError: no such request (admins only) or material.
            ConcurrentModificationError: ``expected_version`` is stale.
            InvalidTransitionError: the request is not active or not in a material state.
            InsufficientStockError: the balance is below ``quantity`` (nothing is taken).
        """
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise InputValidationError("quantity", "must be a positive integer")
        if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise InputValidationError(
                "idempotency_key", f"empty or longer than {MAX_IDEMPOTENCY_KEY_LENGTH}"
            )

        async def body(ctx: TransactionContext) -> MaterialUse:
            conn = ctx.conn
            async with ctx.step("lock"):
                current = await requests.lock_shared(conn, request_id)
                if not may_act(actor, current):
                    raise PermissionDeniedError("use_materials", actor.role)
                if current is None:
                    raise NotFoundError("request", request_id)
                if expected_version is not None and current["version"] != expected_version:
                    raise ConcurrentModificationError("request", request_id, expected_version)
                if current["status"] != "active" or current["current_state"] not in (
                    wf.MATERIAL_STATES
                ):
                    raise InvalidTransitionError(
                        request_id, current["current_state"], "materials cannot be used now"
                    )
            async with ctx.step("ledger"):
                try:
                    entry = await ledger.insert_entry(
                        conn,
                        material_id=material_id,
                        kind="issue",
                        quantity=-quantity,
                        idempotency_key=idempotency_key,
                        request_id=request_id,
                        actor_id=actor.user_id,
                    )
                except asyncpg.ForeignKeyViolationError as exc:
                    if "material" in (exc.constraint_name or ""):
                        raise NotFoundError("material", material_id) from exc
                    raise NotFoundError("user", actor.user_id) from exc
                if entry is None:
                    return await self._existing_use(
                        conn, idempotency_key, request_id, material_id, quantity
                    )
                ctx.record(
                    "inventory_transaction",
                    entry["id"],
                    after={"material_id": material_id, "quantity": -quantity},
                )
            async with ctx.step("decrement"):
                balance_after = await ledger.decrement_stock(conn, material_id, quantity)
                if balance_after is None:
                    available = await ledger.balance(conn, material_id)
                    raise InsufficientStockError(material_id, quantity, available)
                ctx.record(
                    "material",
                    material_id,
                    before={"balance": balance_after + quantity},
                    after={"balance": balance_after},
                )
            return MaterialUse(
                ledger_id=entry["id"],
                material_id=material_id,
                request_id=request_id,
                quantity=quantity,
                balance_after=balance_after,
            )

        async def resume(steps: list[dict[str, Any]]) -> MaterialUse:
            use = await self._existing_use(
                self.pool, idempotency_key, request_id, material_id, quantity
            )
            taken = recorded(steps, "material")
            if taken is None:  # the committed attempt had found a duplicate itself
                return use
            return dataclasses.replace(
                use, balance_after=taken["after"]["balance"], duplicate=False
            )

        return await self.transactions.run(
            "use_materials", body, actor_id=actor.user_id, parent=within, resume=resume
        )

    # --- queries --------------------------------------------------------------------------

    async def list_for_client(self, client_id: int, limit: int = 20) -> list[asyncpg.Record]:
        """The client's latest requests, newest first."""
        return await requests.list_for_client(self.pool, client_id, limit=limit)

    async def list_for_role(
        self, role: str, limit: int = 20, *, user_id: int | None = None
    ) -> list[asyncpg.Record]:
        """Active requests owned by ``role``, oldest first; with ``user_id``, only those the
        user may act on (assigned to nobody or to them)."""
        return await requests.list_for_role(self.pool, role, limit=limit, assignee_id=user_id)

    async def list_materials(
        self, *, limit: int = 8, offset: int = 0
    ) -> tuple[list[asyncpg.Record], int]:
        """A page of materials with their balance (by name) and the number of materials."""
        return await ledger.list_materials(self.pool, limit=limit, offset=offset)

    async def get_material(self, material_id: int) -> asyncpg.Record | None:
        """One material with its balance, or None."""
        return await ledger.get_material(self.pool, material_id)

    async def health_figures(self, window_s: float = 3600.0) -> StateManagerHealth:
        """Active requests now and the transactions of the last ``window_s`` seconds
        (from ``transaction_log``, all instances), plus this process's counters."""
        active = await requests.count_active(self.pool)
        counts = await transaction_log.counts_since(self.pool, window_s)
        failures = refusals = retries = commits = 0
        for (status, category), n in counts.items():
            if status == "committed":
                commits += n
            elif status == "retried":
                retries += n
            elif status in ("rolled_back", "failed"):
                if category in ("transient", "system") or status == "failed":
                    failures += n
                else:
                    refusals += n
        return StateManagerHealth(
            active_requests=active,
            recent_commits=commits,
            recent_failures=failures,
            recent_refusals=refusals,
            recent_retries=retries,
            window_s=window_s,
            process=dataclasses.replace(self.transactions.stats),
        )

    # --- steps shared by the operations ---------------------------------------------------

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
                before=_snapshot(current),
                after=_snapshot(updated),
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
