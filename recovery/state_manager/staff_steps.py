"""The staff operations on a request: open it, advance it, assign it."""

from __future__ import annotations

import asyncpg

from database import requests, users
from recovery import workflow_definitions as wf
from recovery.actors import Actor
from recovery.exceptions import (
    InputValidationError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from recovery.state_manager.model import (
    ASSIGNER_ROLES,
    MAX_DESCRIPTION_LENGTH,
    may_act,
)
from recovery.state_manager.shared_steps import SharedSteps
from recovery.transaction_context import TransactionContext


class StaffSteps(SharedSteps):
    """The staff operations on a request: open it, advance it, assign it."""

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
            "assign", body, actor=actor, parent=within, resume=self._resume_request
        )
