"""What happens to a sent notification: the outcomes of ``NotificationRetryManager``
(``recovery.notifications``), which supplies the attributes declared here.

Outcomes, by ``classify`` of the send's exception:

- success: 'sent' with Telegram's message id;
- 429 (``RetryStrategy.WAIT``): due again in exactly ``retry_after`` seconds, no attempt
  spent; every send of this process and every instance's claims pause that long;
- 5xx, network errors, timeouts (transient): a ``notification_retry_queue`` entry, due after
  exponential backoff with full jitter; after ``max_attempts`` attempts the row is dead;
- 403 blocked / deactivated, 400 chat not found (``permanent``): 'skipped', the user marked
  unreachable so that later rows to them are skipped until they write to the bot again;
- ``TelegramMigrateToChat``: the stored chat id follows the supergroup, sent again at once;
- anything else: recorded through ``ErrorHandler``, then retried like a transient error.

The retry queue is bounded: a row that would enter a full queue is dead-lettered ("queue
full") and the admins are alerted once per episode.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable
from typing import Any, Protocol

import asyncpg

from database import notifications as sql
from database import users
from database.pool import AnyConnection
from recovery.alerts import AdminAlerts, AlertKind
from recovery.classification import Classification, ErrorCategory, RetryStrategy
from recovery.masking import mask_sensitive
from recovery.notification_model import DrainResult
from recovery.rate_limit import RateLimiter
from recovery.retry import RetryPolicy

log = logging.getLogger("recovery.notifications")

QUEUE_FULL_TEMPLATE = "admin.retry_queue_full"
QUEUE_FULL_REASON = "queue full"
MAX_ATTEMPTS_REASON = "max attempts"
TELEGRAM_UNREACHABLE_REASON = "max attempts: telegram unreachable"
"""Dead of its attempt budget while its last failure said Telegram did not answer (5xx,
network, timeout): put back when Telegram answers again (``recovery.outages``), also by a
process started after the outage."""
_UNREACHABLE_VERDICTS = frozenset({"telegram_server_error", "telegram_network_error", "timeout"})


class ClaimLostError(Exception):
    """The row's lease was taken over by another sender; nothing may be written for it."""


class ErrorRecorder(Protocol):
    """What the manager needs of ``recovery.errors.ErrorHandler``."""

    async def handle(self, exc: BaseException, *, context: dict[str, Any] | None = None) -> Any:
        """Record ``exc``; never raises."""
        ...


class NotificationOutcomes:
    """The failure outcomes of a send (see the module docstring)."""

    pool: asyncpg.Pool
    policy: RetryPolicy
    rate_limiter: RateLimiter
    error_handler: ErrorRecorder | None
    queue_max_size: int
    alerts: AdminAlerts
    instance_id: str
    rng: random.Random | None

    async def _failed(
        self,
        row: asyncpg.Record,
        claim_id: str,
        exc: BaseException,
        verdict: Classification,
        result: DrainResult,
    ) -> None:
        row_id = row["id"]
        error = mask_sensitive(f"{type(exc).__name__}: {exc}")[:500]
        if verdict.strategy is RetryStrategy.WAIT and verdict.retry_after is not None:
            # Telegram asks every send of this bot to wait: this process, then every instance
            self.rate_limiter.pause(verdict.retry_after)
            await sql.pause(self.pool, verdict.retry_after)
            await self._expect(
                sql.release(self.pool, row_id, claim_id, delay_s=verdict.retry_after, error=error)
            )
            result.rate_limited += 1
            return
        if verdict.permanent:
            if verdict.mark_user_blocked:
                await users.mark_unreachable(self.pool, row["chat_id"])
            await self._expect(
                sql.mark_final(
                    self.pool,
                    row_id,
                    claim_id,
                    status="skipped",
                    error=error,
                    reason=verdict.reason,
                )
            )
            result.skipped += 1
            return
        if not (verdict.retryable and verdict.category is ErrorCategory.TRANSIENT):
            await self._record(exc, {"notification_id": row_id, "template": row["template_key"]})
        await self._schedule_retry(row, claim_id, error, verdict, result)

    async def _schedule_retry(
        self,
        row: asyncpg.Record,
        claim_id: str,
        error: str,
        verdict: Classification,
        result: DrainResult,
    ) -> None:
        row_id = row["id"]
        if row["attempts"] + 1 >= self.policy.max_attempts:
            await self._expect(
                sql.mark_final(
                    self.pool,
                    row_id,
                    claim_id,
                    status="dead",
                    error=error,
                    reason=TELEGRAM_UNREACHABLE_REASON
                    if verdict.reason in _UNREACHABLE_VERDICTS
                    else MAX_ATTEMPTS_REASON,
                )
            )
            result.dead += 1
            return
        delay = self.policy.delay_s(row["attempts"], self.rng)
        code = int(verdict.code) if verdict.code and verdict.code.isdigit() else None
        async with self.pool.acquire() as conn, conn.transaction():
            await sql.lock_retry_queue(conn)
            in_queue = await sql.close_waiting_entry(conn, row_id)
            if not in_queue:
                depth = await sql.queue_depth(conn)
                if depth >= self.queue_max_size:
                    await self._expect(
                        sql.mark_final(
                            conn,
                            row_id,
                            claim_id,
                            status="dead",
                            error=error,
                            reason=QUEUE_FULL_REASON,
                        )
                    )
                    since = await sql.start_queue_full(conn)
                    if since is not None:
                        await self._alert_queue_full(conn, since, depth)
                    result.dead += 1
                    return
            scheduled = await sql.mark_retrying(
                conn,
                row_id,
                claim_id,
                delay_s=delay,
                error=error,
                error_category=verdict.category.value,
                error_code=code,
            )
            if scheduled is None:
                raise ClaimLostError(row_id)  # rolls the entry's closing back
        result.retried += 1

    async def _alert_queue_full(self, conn: AnyConnection, since: Any, depth: int) -> None:
        """Enqueue the queue-full alert for every admin, once per episode (the idempotency
        key names the episode by its start)."""
        key = f"retry-queue-full:{since.timestamp():.6f}"
        params = {"size": depth, "limit": self.queue_max_size}
        # the admin alert path: rate limit, digest, mutes
        alert = await self.alerts.raise_alert(
            AlertKind.SYSTEM, key, QUEUE_FULL_TEMPLATE, params, summary="retry queue full",
            conn=conn,
        )  # fmt: skip
        count = alert.recipients
        log.warning("notification retry queue full (%s); %s admin alert(s) enqueued", depth, count)

    @staticmethod
    async def _expect(outcome: Awaitable[bool]) -> None:
        if not await outcome:
            raise ClaimLostError()

    async def _record(self, exc: BaseException, context: dict[str, Any]) -> None:
        if self.error_handler is None:
            log.error(
                "notification error %s: %s (%s)",
                type(exc).__name__,
                mask_sensitive(str(exc))[:300],
                context,
            )
            return
        await self.error_handler.handle(exc, context=context)

    async def end_queue_full_episode(self) -> bool:
        """End the queue-full episode once the queue has drained to 90% of its bound (at least
        one below it), so that the next crossing alerts again; True when it ended."""
        low_water = self.queue_max_size - max(1, self.queue_max_size // 10)
        return await sql.end_queue_full(self.pool, low_water)
