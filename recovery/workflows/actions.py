"""Applying recovery actions, one or a batch, each through ``TransactionalStateManager``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from database import compensation, recovery_log, requests
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
                before = requests.snapshot(current)
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
                after = requests.snapshot(updated)
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
                f"recovery.{action.value}", body, actor=admin, resume=resume
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
