"""Applying recovery actions, one or a batch, each through ``TransactionalStateManager``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from database import compensation, recovery_log, requests
from database.compensation import Reversal
from database.pool import AnyConnection
from recovery.actors import Actor
from recovery.exceptions import (
    ConcurrentModificationError,
    DomainError,
    NotFoundError,
)
from recovery.transaction_context import TransactionContext, recorded
from recovery.workflow_events import notify_state_change
from recovery.workflows.codes import failure_code, failure_text, refusal_code
from recovery.workflows.model import (
    BatchResult,
    Outcome,
    Plan,
    PreviewOutdatedError,
    RecoveryAction,
)
from recovery.workflows.planning import RecoveryPlanning
from recovery.workflows.refusal_log import RefusalLog

log = logging.getLogger(__name__)


class RecoveryActions(RecoveryPlanning, RefusalLog):
    """Applying recovery actions, one or a batch, each through ``TransactionalStateManager``."""

    async def apply(
        self,
        action: RecoveryAction,
        request_id: int,
        *,
        expected_version: int,
        admin: Actor,
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
        asked = _Asked(action, request_id, expected_version, admin, reason, assignee_id, batch_id)
        seen = _Attempts()

        async def body(ctx: TransactionContext) -> Outcome:
            async with ctx.step("lock"):
                current = await requests.lock(ctx.conn, request_id)
                if current is None:
                    raise NotFoundError("request", request_id)
                seen.before = requests.snapshot(current)
                plan = await self._checked_plan(ctx.conn, current, asked, expected_fingerprint)
            outcome = await _carry_out(ctx, asked, current, plan, seen.before)
            seen.built[outcome.log_id] = outcome
            return outcome

        async def resume(steps: list[dict[str, Any]]) -> Outcome:
            return seen.committed(steps, asked)

        try:
            return await self.transactions.run(
                f"recovery.{action.value}", body, actor=admin, resume=resume
            )
        except Exception as exc:
            await self._log_failure(asked, seen.before, exc)
            raise

    async def _checked_plan(
        self,
        conn: AnyConnection,
        current: asyncpg.Record,
        asked: _Asked,
        expected_fingerprint: int | None,
    ) -> Plan:
        """The plan of ``asked`` on the locked request ``current``, after checking that it
        is at the version the admin saw and (given ``expected_fingerprint``) that a reset
        gives back what the preview showed.

        Raises:
            ConcurrentModificationError: the version moved on.
            PreviewOutdatedError: the returns changed since the preview.
            And the refusals of ``_plan``.
        """
        if current["version"] != asked.expected_version:
            raise ConcurrentModificationError("request", asked.request_id, asked.expected_version)
        plan = await self._plan(conn, current, asked.action, asked.assignee_id)
        if expected_fingerprint is not None and plan.fingerprint != expected_fingerprint:
            raise PreviewOutdatedError("request", asked.request_id, asked.expected_version)
        return plan

    async def _log_failure(
        self, asked: _Asked, before: dict[str, Any] | None, exc: Exception
    ) -> None:
        """The ``success = false`` row of ``asked``: a refusal (``DomainError``) as
        ``<refusal code>: <error>``, naming the request once it was found (``before``); any
        other failure as its ``failure_text``, naming the request."""
        if isinstance(exc, DomainError):
            error, known = f"{refusal_code(exc)}: {exc}", before is not None
        else:
            error, known = failure_text(exc), True
        await self._log_outcome(
            asked.request_id if known else None,
            asked.action,
            asked.admin,
            asked.reason,
            before,
            error,
            asked.batch_id,
        )

    async def apply_batch(
        self,
        action: RecoveryAction,
        targets: Sequence[tuple[int, int]],
        *,
        admin: Actor,
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


@dataclass(frozen=True, slots=True)
class _Asked:
    """One recovery action as the admin asked for it (the arguments of ``apply``)."""

    action: RecoveryAction
    request_id: int
    expected_version: int
    admin: Actor
    reason: str | None
    assignee_id: int | None
    batch_id: uuid.UUID | None


@dataclass(slots=True)
class _Attempts:
    """What the attempts of one ``apply`` saw.

    Attributes:
        before: the request as the last attempt locked it (None until one found it).
        built: the outcome each attempt built, by its ``workflow_recovery_log`` id: an
            attempt whose COMMIT answer was lost and that is found committed answers with
            its own outcome.
    """

    before: dict[str, Any] | None = None
    built: dict[int, Outcome] = field(default_factory=dict)

    def committed(self, steps: list[dict[str, Any]], asked: _Asked) -> Outcome:
        """The outcome of the attempt that committed with these audit ``steps``."""
        entry = recorded(steps, "workflow_recovery_log")
        if entry is None or entry["id"] not in self.built:  # pragma: no cover - a bug
            action, request_id = asked.action.value, asked.request_id
            raise RuntimeError(f"no outcome of the committed {action} {request_id}")
        return self.built[entry["id"]]


async def _carry_out(
    ctx: TransactionContext,
    asked: _Asked,
    current: asyncpg.Record,
    plan: Plan,
    before: dict[str, Any],
) -> Outcome:
    """The steps after the lock, in ``ctx``: the new state, its history row, the materials
    given back, the ``workflow_recovery_log`` row and the notifications."""
    async with ctx.step("apply_state"):
        updated = await requests.apply_state(
            ctx.conn,
            request_id=asked.request_id,
            expected_version=asked.expected_version,
            state=plan.to_state,
            role=plan.to_role,
            assignee_id=plan.to_assignee_id,
            status=plan.to_status,
        )
        if updated is None:  # cannot happen under the row lock; kept as a guard
            raise ConcurrentModificationError("request", asked.request_id, asked.expected_version)
        after = requests.snapshot(updated)
        ctx.record("service_request", asked.request_id, before=before, after=after)
    async with ctx.step("history"):
        transition = await _write_transition(ctx, asked, current, plan)
    async with ctx.step("compensation"):
        reversals, returned = await _give_back(ctx, asked, current, plan)
    if returned:
        after["returned"] = returned
    async with ctx.step("recovery_log"):
        log_id = await recovery_log.insert(
            ctx.conn,
            request_id=asked.request_id,
            action=asked.action.value,
            admin_id=asked.admin.user_id,
            admin_telegram_id=asked.admin.telegram_id,
            reason=asked.reason,
            before=before,
            after=after,
            success=True,
            batch_id=asked.batch_id,
        )
        ctx.record("workflow_recovery_log", log_id, after={"success": True})
    async with ctx.step("outbox"):
        kind = asked.action.transition_kind
        await notify_state_change(ctx.conn, updated, transition_id=transition["id"], kind=kind)
    return Outcome(updated, plan, tuple(reversals), log_id)


async def _write_transition(
    ctx: TransactionContext, asked: _Asked, current: asyncpg.Record, plan: Plan
) -> asyncpg.Record:
    """The ``workflow_transitions`` row of the action (recorded in the audit)."""
    kind = asked.action.transition_kind
    transition = await requests.insert_transition(
        ctx.conn,
        request_id=asked.request_id,
        from_state=current["current_state"],
        to_state=plan.to_state,
        from_role=current["owner_role"],
        to_role=plan.to_role,
        from_assignee_id=current["assignee_id"],
        to_assignee_id=plan.to_assignee_id,
        actor_id=asked.admin.user_id,
        kind=kind,
        reason=asked.reason,
    )
    ctx.record("workflow_transition", transition["id"], after={"kind": kind})
    return transition


async def _give_back(
    ctx: TransactionContext, asked: _Asked, current: asyncpg.Record, plan: Plan
) -> tuple[list[Reversal], list[dict[str, Any]]]:
    """Reverse the issues ``plan.returns`` names (a reset; nothing otherwise); returns the
    reversals and, for the audit and the log, one ``{ledger_id, issue_id, material_id,
    quantity}`` per reversal (each recorded in the audit)."""
    reversals = await compensation.reverse(
        ctx.conn,
        list(plan.returns),
        actor_id=asked.admin.user_id,
        note=f"reset of request {asked.request_id} from {current['current_state']}",
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
    return reversals, returned
