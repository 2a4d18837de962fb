"""Taking materials from stock for a request (the ledger row and the guarded balance)."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg

from database import ledger, requests
from recovery import workflow_definitions as wf
from recovery.actors import Actor
from recovery.exceptions import (
    ConcurrentModificationError,
    InputValidationError,
    InsufficientStockError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from recovery.state_manager.model import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MaterialUse,
    may_act,
)
from recovery.state_manager.shared_steps import SharedSteps
from recovery.transaction_context import TransactionContext, recorded


class MaterialUses(SharedSteps):
    """Taking materials from stock for a request (the ledger row and the guarded balance)."""

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
        _check_use(quantity, idempotency_key)
        this_use = (idempotency_key, request_id, material_id, quantity)

        async def body(ctx: TransactionContext) -> MaterialUse:
            async with ctx.step("lock"):
                await _lock_for_use(ctx, actor, request_id, expected_version)
            async with ctx.step("ledger"):
                entry = await _insert_issue(
                    ctx, actor, request_id, material_id, quantity, idempotency_key
                )
                if entry is None:
                    return await self._existing_use(ctx.conn, *this_use)
            async with ctx.step("decrement"):
                balance_after = await _take_stock(ctx, material_id, quantity)
            return MaterialUse(
                ledger_id=entry["id"],
                material_id=material_id,
                request_id=request_id,
                quantity=quantity,
                balance_after=balance_after,
            )

        async def resume(steps: list[dict[str, Any]]) -> MaterialUse:
            return _resumed(await self._existing_use(self.pool, *this_use), steps)

        return await self.transactions.run(
            "use_materials", body, actor=actor, parent=within, resume=resume
        )


def _resumed(use: MaterialUse, steps: list[dict[str, Any]]) -> MaterialUse:
    """The result of a use whose attempt committed with its answer lost: ``use`` (the
    ledger row found by its key) as the committed attempt saw it, from its audit ``steps``."""
    taken = recorded(steps, "material")
    if taken is None:  # the committed attempt had found a duplicate itself
        return use
    return dataclasses.replace(use, balance_after=taken["after"]["balance"], duplicate=False)


def _check_use(quantity: int, idempotency_key: str) -> None:
    """The input of a material use, before any transaction.

    Raises:
        InputValidationError: quantity not a positive integer; an empty key or one longer
            than ``MAX_IDEMPOTENCY_KEY_LENGTH``.
    """
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise InputValidationError("quantity", "must be a positive integer")
    if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InputValidationError(
            "idempotency_key", f"empty or longer than {MAX_IDEMPOTENCY_KEY_LENGTH}"
        )


async def _lock_for_use(
    ctx: TransactionContext, actor: Actor, request_id: int, expected_version: int | None
) -> None:
    """Hold the request ``FOR SHARE`` and check, in this order, the permission, that it
    exists, its version (when given) and that materials may be used in its state.

    Raises:
        PermissionDeniedError, NotFoundError, ConcurrentModificationError,
        InvalidTransitionError: as ``MaterialUses.use_materials`` says.
    """
    current = await requests.lock_shared(ctx.conn, request_id)
    if not may_act(actor, current):
        raise PermissionDeniedError("use_materials", actor.role)
    if current is None:
        raise NotFoundError("request", request_id)
    if expected_version is not None and current["version"] != expected_version:
        raise ConcurrentModificationError("request", request_id, expected_version)
    if current["status"] != "active" or current["current_state"] not in (wf.MATERIAL_STATES):
        raise InvalidTransitionError(
            request_id, current["current_state"], "materials cannot be used now"
        )


async def _insert_issue(
    ctx: TransactionContext,
    actor: Actor,
    request_id: int,
    material_id: int,
    quantity: int,
    idempotency_key: str,
) -> asyncpg.Record | None:
    """Write the ``issue`` ledger row of the use (recorded in the audit); None when
    ``idempotency_key`` was used before (nothing written).

    Raises:
        NotFoundError: no such material (or no such user: the actor's row is gone).
    """
    try:
        entry = await ledger.insert_entry(
            ctx.conn,
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
    if entry is not None:
        ctx.record(
            "inventory_transaction",
            entry["id"],
            after={"material_id": material_id, "quantity": -quantity},
        )
    return entry


async def _take_stock(ctx: TransactionContext, material_id: int, quantity: int) -> int:
    """Decrement the balance by ``quantity`` with the guarded UPDATE (recorded in the
    audit); returns the balance after.

    Raises:
        InsufficientStockError: the balance is below ``quantity`` (nothing taken).
    """
    balance_after = await ledger.decrement_stock(ctx.conn, material_id, quantity)
    if balance_after is None:
        available = await ledger.balance(ctx.conn, material_id)
        raise InsufficientStockError(material_id, quantity, available)
    ctx.record(
        "material",
        material_id,
        before={"balance": balance_after + quantity},
        after={"balance": balance_after},
    )
    return balance_after
