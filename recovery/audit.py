"""``AdminAuditLog``: every admin action taken from the dashboard, with who, what, on what,
before and after, in ``admin_audit_log``. Workflow recovery actions keep their own
``workflow_recovery_log``; ``history`` shows both, newest first.

The trail says what happened: an action that was refused (a typed refusal raised, or a
result that means "nothing was done", such as retrying a notification that was sent
meanwhile) is recorded with ``success = false`` and its reason as ``<code>: <detail>``
(``stale``, ``not_found``, ``not_retryable``...), never as a success."""

from __future__ import annotations

import datetime as dt
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from database import admin_audit
from database.pool import AnyConnection
from recovery.actors import Actor
from recovery.exceptions import DomainError
from recovery.masking import mask_sensitive
from recovery.workflows import refusal_code

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One admin action: ``source`` is 'workflow' or 'dashboard'."""

    source: str
    created_at: dt.datetime
    admin_name: str | None
    admin_telegram_id: int | None
    action: str
    target_type: str | None
    target_id: str | None
    success: bool
    reason: str | None
    error: str | None = None
    """Why it was refused or failed: ``<code>: <detail>`` (None for a success)."""
    change: tuple[str, str] | None = None
    """The request's workflow state before and after, when the action changed it."""
    batch: bool = False
    """Whether the action was one request of a batch."""


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of history and the number of entries in all."""

    items: list[HistoryEntry]
    total: int


class AdminAuditLog:
    """Writes and reads the admin audit trail.

    Args:
        pool: asyncpg pool.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(
        self,
        admin: Actor,
        action: str,
        *,
        target_type: str | None = None,
        target_id: object = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        reason: str | None = None,
        success: bool = True,
        error: str | None = None,
        conn: AnyConnection | None = None,
    ) -> int:
        """Append one audit entry (the reason and error are masked); returns its id.

        ``action`` is a dotted name such as ``error.resolve`` or ``alert.mute``.
        """
        return await admin_audit.insert(
            conn or self.pool,
            admin_id=admin.user_id,
            admin_telegram_id=admin.telegram_id,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            before=before,
            after=after,
            reason=mask_sensitive(reason) if reason else None,
            success=success,
            error_message=mask_sensitive(error)[:500] if error else None,
        )

    async def audited(
        self,
        admin: Actor,
        action: str,
        operation: Callable[[], Awaitable[T]],
        *,
        target_type: str | None = None,
        target_id: object = None,
        before: dict[str, Any] | None = None,
        after: Callable[[T], dict[str, Any] | None] | None = None,
        reason: str | None = None,
        refused: Callable[[T], str | Awaitable[str | None] | None] | None = None,
    ) -> T:
        """Run ``operation`` and audit it.

        - A ``DomainError`` (refused: not found, stale, invalid) is recorded with
          ``success = false`` and ``<refusal code>: <type>: <error>``, then re-raised.
        - Otherwise ``refused(result)`` (sync or async) may name a refusal the result
          stands for (``"not_retryable: sent"``): recorded with ``success = false``, that
          error and ``after(result)``; the result is returned.
        - Otherwise a success with ``after(result)``.

        Other exceptions propagate unaudited to the error handler.
        """
        try:
            result = await operation()
        except DomainError as exc:
            await self.record(
                admin,
                action,
                target_type=target_type,
                target_id=target_id,
                before=before,
                reason=reason,
                success=False,
                error=f"{refusal_code(exc)}: {type(exc).__name__}: {exc}",
            )
            raise
        refusal = refused(result) if refused is not None else None
        if inspect.isawaitable(refusal):
            refusal = await refusal
        await self.record(
            admin,
            action,
            target_type=target_type,
            target_id=target_id,
            before=before,
            after=after(result) if after is not None else None,
            reason=reason,
            success=refusal is None,
            error=refusal,
        )
        return result

    async def history(self, *, limit: int = 10, offset: int = 0) -> HistoryPage:
        """A page of admin actions (dashboard and workflow recovery), newest first."""
        rows = await admin_audit.history(self.pool, limit, offset)
        total = await admin_audit.history_count(self.pool)
        return HistoryPage(
            [
                HistoryEntry(
                    source=row["source"],
                    created_at=row["created_at"],
                    admin_name=row["admin_name"],
                    admin_telegram_id=row["admin_telegram_id"],
                    action=row["action"],
                    target_type=row["target_type"],
                    target_id=row["target_id"],
                    success=row["success"],
                    reason=row["reason"],
                    error=row["error_message"],
                )
                for row in rows
            ],
            total,
        )
