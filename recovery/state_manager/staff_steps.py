"""The staff operations on a request: open it, advance it (assigning is an admin recovery action:
``WorkflowRecoveryManager.apply(RecoveryAction.REASSIGN)``)."""

from __future__ import annotations

import asyncpg

from database import requests
from recovery import workflow_definitions as wf
from recovery.actors import Actor
from recovery.exceptions import (
    InputValidationError,
    InvalidTransitionError,
    PermissionDeniedError,
)
from recovery.state_manager.model import (
    MAX_DESCRIPTION_LENGTH,
    may_act,
)
from recovery.state_manager.shared_steps import SharedSteps
from recovery.transaction_context import TransactionContext


class StaffSteps(SharedSteps):
    """The staff operations on a request: open it, advance it."""

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
            PermissionDeniedError: ``actor`` is no user (the scheduler opens no request).
            InputValidationError: unknown workflow type or an empty/too long description
                (``MAX_DESCRIPTION_LENGTH`` characters; blanks and NUL do not count).
        """
        client_id = actor.user_id
        if client_id is None:
            raise PermissionDeniedError("create_request", actor.role)
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
                    client_id=client_id,
                    description=description,
                    address=address.strip(),
                    state=first.state,
                    role=first.role,
                )
                ctx.record("service_request", request["id"], after=requests.snapshot(request))
            await self._write_history(ctx, actor, None, request, kind="create")
            return request

        return await self.transactions.run(
            "create_request",
            body,
            actor=actor,
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
            "advance", body, actor=actor, parent=within, resume=self._resume_request
        )
