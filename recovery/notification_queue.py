"""What the admin menu reads and does with the outbox: counts, the failing list, a
notification's detail, retry now, discard, and the retention cleanup."""

from __future__ import annotations

import logging

import asyncpg

from database import notification_admin as sql
from database import notifications
from recovery.actors import Actor
from recovery.notification_model import FailingNotification, RequestMoved

log = logging.getLogger(__name__)


def _id(actor: Actor | None) -> int | None:
    """The admin's ``users.id`` as the log names it (None: no admin named)."""
    return actor.user_id if actor is not None else None


class NotificationQueueAdmin:
    """The admin operations of ``NotificationRetryManager`` (its ``pool`` is theirs)."""

    pool: asyncpg.Pool

    async def status_counts(self) -> dict[str, int]:
        """Notifications by status (only statuses that have rows)."""
        return await sql.status_counts(self.pool)

    async def queue_depth(self) -> int:
        """Entries waiting in the retry queue (its bound is ``queue_max_size``)."""
        return await notifications.queue_depth(self.pool)

    async def list_failing(
        self,
        *,
        statuses: tuple[str, ...] = ("dead", "retrying"),
        limit: int = 10,
        offset: int = 0,
    ) -> tuple[list[FailingNotification], int]:
        """One page of dead and failing notifications (newest change first) with their last
        error, and the total count."""
        rows, total = await sql.list_by_status(self.pool, statuses, limit=limit, offset=offset)
        items = [
            FailingNotification(
                id=r["id"],
                chat_id=r["chat_id"],
                recipient_id=r["recipient_id"],
                template_key=r["template_key"],
                status=r["status"],
                attempts=r["attempts"],
                last_error=r["last_error"],
                dead_reason=r["dead_reason"],
                next_attempt_at=r["next_attempt_at"],
                updated_at=r["updated_at"],
                request_id=r["request_id"],
            )
            for r in rows
        ]
        return items, total

    async def get(self, notification_id: int) -> asyncpg.Record | None:
        """One outbox row (its ``last_error`` is masked), or None: the admin detail screen."""
        return await sql.get(self.pool, notification_id)

    async def request_moved(self, notification_id: int) -> RequestMoved | None:
        """What changed since a notification about a request's state was written: None
        when it names no request state or the request is still in that state."""
        row = await sql.with_request(self.pool, notification_id)
        if row is None or row["said_state"] == row["request_state"]:
            return None
        return RequestMoved(
            request_id=row["request_id"],
            said_state=row["said_state"],
            state=row["request_state"],
            status=row["request_status"],
        )

    async def moved_count(self, statuses: tuple[str, ...] = ("dead", "retrying")) -> int:
        """How many notifications in ``statuses`` name a state their request has left."""
        return await sql.moved_count(self.pool, statuses)

    async def retry_now(self, notification_id: int, *, actor: Actor | None = None) -> bool:
        """Make one dead, skipped or retrying notification due now (a dead letter gets a
        fresh attempt budget); False when it is in none of those states. ``actor``: the admin
        asking, named in the log by ``users.id``."""
        done = await sql.retry_now(self.pool, [notification_id]) == 1
        log.info("admin %s: retry notification %s now: %s", _id(actor), notification_id, done)
        return done

    async def retry_all_now(
        self, *, statuses: tuple[str, ...] = ("dead", "retrying"), actor: Actor | None = None
    ) -> int:
        """Make every notification in ``statuses`` due now; returns how many."""
        count = await sql.retry_now(self.pool, None, statuses)
        log.info("admin %s: retry %s notification(s) now (%s)", _id(actor), count, statuses)
        return count

    async def discard(self, notification_id: int, *, actor: Actor | None = None) -> bool:
        """Give up on one notification not being sent right now; False when it cannot be."""
        done = await sql.discard(self.pool, notification_id)
        log.info("admin %s: discard notification %s: %s", _id(actor), notification_id, done)
        return done

    async def cleanup(self, retention_days: int) -> int:
        """Delete sent, discarded and skipped notifications older than ``retention_days``
        days; returns how many."""
        return await sql.cleanup_old(self.pool, retention_days)
