"""What the admin screens read: a request's detail, history and reassignment candidates."""

from __future__ import annotations

import logging

import asyncpg

from database import recovery_actions, recovery_log, requests, stuck, users
from database.pool import AnyConnection
from recovery.exceptions import (
    NotFoundError,
)
from recovery.workflows.detection import StuckDetection
from recovery.workflows.history import reset_target
from recovery.workflows.model import (
    RequestDetail,
    StuckRequest,
)

log = logging.getLogger(__name__)


class RecoveryReading(StuckDetection):
    """What the admin screens read: a request's detail, history and reassignment candidates."""

    async def get_detail(self, request_id: int, history_limit: int = 10) -> RequestDetail:
        """The request, its latest transitions and recovery actions, its assignee, whether
        it is stuck now and where a reset would take it.

        Raises:
            NotFoundError: no such request.
        """
        async with self.pool.acquire() as conn:
            request = await requests.get(conn, request_id)
            if request is None:
                raise NotFoundError("request", request_id)
            history = await requests.history(conn, request_id, history_limit)
            recovery = await recovery_log.recent(conn, limit=5, request_id=request_id)
            assignee = (
                await users.get(conn, request["assignee_id"]) if request["assignee_id"] else None
            )
            paths = await recovery_actions.state_paths(conn, [request_id])
            previous = reset_target(
                paths.get(request_id, []), request["current_state"], request["state_entered_at"]
            )
            stuck_now = (
                await self._stuck_item(conn, request) if request["status"] == "active" else None
            )
        return RequestDetail(
            request=request,
            history=list(history),
            recovery=list(recovery),
            assignee=assignee,
            stuck=stuck_now,
            previous_state=previous.state if previous else None,
        )

    async def _stuck_item(
        self, conn: AnyConnection, request: asyncpg.Record
    ) -> StuckRequest | None:
        """The request's stuck figures when it is stuck now (``database.stuck.one``)."""
        row = await stuck.one(conn, self.limits(), request["id"])
        return self._item(row) if row is not None else None

    async def get_request(self, request_id: int) -> asyncpg.Record:
        """The request row.

        Raises:
            NotFoundError: no such request.
        """
        request = await requests.get(self.pool, request_id)
        if request is None:
            raise NotFoundError("request", request_id)
        return request

    async def get_user(self, user_id: int) -> asyncpg.Record | None:
        """A user row, or None."""
        return await users.get(self.pool, user_id)

    async def recovery_history(
        self, *, request_id: int | None = None, limit: int = 10, offset: int = 0
    ) -> tuple[list[asyncpg.Record], int]:
        """A page of ``workflow_recovery_log`` (one request, or all), newest first, and the
        total number of rows."""
        rows = await recovery_log.recent(
            self.pool, limit=limit, offset=max(offset, 0), request_id=request_id
        )
        if rows:
            return list(rows), rows[0]["total"]
        return [], 0

    async def reassign_candidates(
        self, role: str, *, exclude_user_id: int | None = None, limit: int = 5, offset: int = 0
    ) -> tuple[list[asyncpg.Record], int]:
        """A page of active, reachable users of ``role`` (by name, with their number of
        active requests) and how many there are."""
        return await recovery_actions.candidates(
            self.pool, role, exclude_user_id=exclude_user_id, limit=limit, offset=max(offset, 0)
        )
