"""``NotificationRetryManager``: delivers the transactional outbox (``pending_notifications``).

Delivery is at least once (docs/notifications.md): rows are claimed in batches with a lease
(``FOR UPDATE SKIP LOCKED``), sent, then marked sent in groups (one statement for the marks
of every send in flight, ``SentMarker``); a sender that dies between a send and its mark
leaves a row that another sender claims again once the lease has expired, and that row is
delivered twice. Two live senders never hold the same row, and a mark applies only while
its claim holds, so no row is marked sent twice.

The outcome of each send, success or failure, is ``recovery.notification_outcomes``.

The core does not import aiogram: the bot supplies a ``Sender`` and a ``Renderer``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Sequence

import asyncpg

from database import notifications as sql
from recovery.alerts import MUTE_PARAM, AdminAlerts
from recovery.classification import classify
from recovery.notification_batching import MarkHeldError, SentMarker
from recovery.notification_model import (
    DrainResult,
    FailingNotification,
    Renderer,
    RequestMoved,
    Sender,
)
from recovery.notification_outcomes import (
    MAX_ATTEMPTS_REASON,
    QUEUE_FULL_REASON,
    QUEUE_FULL_TEMPLATE,
    ClaimLostError,
    ErrorRecorder,
    NotificationOutcomes,
)
from recovery.notification_queue import NotificationQueueAdmin
from recovery.outbox_listener import ListenState, OutboxListener, wait_any
from recovery.rate_limit import RateLimiter, TelegramRateLimiter
from recovery.retry import RetryPolicy

log = logging.getLogger(__name__)

Clock = Callable[[], float]

_UNBOUNDED = 2**62  # batches of one run-loop turn: until a short batch or the stop
UNREACHABLE_REASON = "recipient unreachable"


def default_instance_id() -> str:
    """``host:pid``: who holds a lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


class NotificationRetryManager(NotificationOutcomes, NotificationQueueAdmin):
    """Claims due outbox rows, renders them in the recipient's language and sends them.

    Args:
        pool: asyncpg pool.
        sender: delivers one message (the bot supplies one built on aiogram).
        renderer: renders a template key with its parameters in a locale.
        policy: retry policy (attempts, backoff).
        rate_limiter: Telegram's limits (this process's, or every instance's in Redis);
            default: the published limits, in this process.
        error_handler: records unexpected errors (``ErrorHandler``); None: log only.
        lease_s: seconds a claim is held before another sender may take the row.
        batch_size: rows claimed at once.
        concurrency: rows of a batch in flight at once (each waits on its own chat's limits).
        send_timeout_s: seconds one send may take (a timeout is a transient failure).
        max_hold_s: longest a claimed row waits for a rate limit before it is put back, due
            when the limit allows (default: a quarter of the lease, at most 5 s).
        queue_max_size: bound of the retry queue (waiting entries).
        admin_ids: Telegram ids from ``ADMIN_IDS`` for the queue-full alert.
        alerts: the admin alert path the queue-full alert goes through (default: one on
            ``pool`` for ``admin_ids`` with its default policy).
        instance_id: this process's name in ``claimed_by``.
        default_locale: language for recipients without a stored one.
        poll_interval_s: ``run``'s fallback poll when no NOTIFY arrives.
        mark_delay_s: longest a delivered row waits for its 'sent' mark (group commit; at
            most half of what the lease leaves after a send).
        clock: monotonic seconds, for the hold deadline (tests inject one).
        rng: random source of the jitter (tests seed one).

    Raises:
        ValueError: a size or duration is not positive, or the send timeout does not fit
            in the lease.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        sender: Sender,
        renderer: Renderer,
        policy: RetryPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        error_handler: ErrorRecorder | None = None,
        lease_s: float = 60.0,
        batch_size: int = 50,
        concurrency: int = 8,
        send_timeout_s: float = 15.0,
        max_hold_s: float | None = None,
        queue_max_size: int = 10_000,
        admin_ids: Sequence[int] = (),
        alerts: AdminAlerts | None = None,
        instance_id: str | None = None,
        default_locale: str = "en",
        poll_interval_s: float = 2.0,
        mark_delay_s: float = 0.2,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if lease_s <= 0 or batch_size < 1 or concurrency < 1 or queue_max_size < 1:
            raise ValueError("lease, batch size, concurrency and queue size must be positive")
        if not 0 < send_timeout_s < lease_s:
            raise ValueError("send_timeout_s must be positive and below lease_s")
        self.pool = pool
        self.sender = sender
        self.renderer = renderer
        self.policy = policy or RetryPolicy()
        self.rate_limiter: RateLimiter = rate_limiter or TelegramRateLimiter()
        self.error_handler = error_handler
        self.lease_s = lease_s
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.send_timeout_s = send_timeout_s
        self.max_hold_s = min(5.0, lease_s / 4) if max_hold_s is None else max_hold_s
        self.queue_max_size = queue_max_size
        self.admin_ids = tuple(admin_ids)
        self.alerts = alerts or AdminAlerts(pool, admin_ids=self.admin_ids)
        self.instance_id = instance_id or default_instance_id()
        self.default_locale = default_locale
        self.poll_interval_s = poll_interval_s
        self.relisten_s = min(1.0, poll_interval_s)
        self._wake: asyncio.Event | None = None
        self.clock = clock
        self.rng = rng
        self._claims = itertools.count(1)
        # a mark waits at most half of what the lease leaves after a send
        mark_delay_s = max(0.0, min(mark_delay_s, (lease_s - send_timeout_s) / 2))
        self._marker = SentMarker(pool, max_rows=batch_size, max_delay_s=mark_delay_s)

    # ------------------------------------------------------------------ delivery
    async def drain_once(self) -> DrainResult:
        """Claim one batch of due rows and deliver them; returns the counts.

        Rows are delivered concurrently (``concurrency`` at once). An error while recording
        one row's outcome is recorded and leaves that row leased (it comes back after the
        lease); it does not stop the others.
        """
        result = DrainResult()
        await self._stream(result, max_batches=1)
        return result

    async def drain(self, max_batches: int = 20) -> DrainResult:
        """Drain up to ``max_batches`` batches (stops after the first short batch), then end a
        queue-full episode if the queue has drained; the scheduler job's work."""
        result = DrainResult()
        await self._stream(result, max_batches=max_batches)
        await self.end_queue_full_episode()
        return result

    async def _stream(
        self, result: DrainResult, *, max_batches: int, stop: asyncio.Event | None = None
    ) -> None:
        """Claim and deliver batch after batch, up to ``max_batches``, until a batch comes
        back short or ``stop`` is set; nothing while 'sent' marks are held (``SentMarker``).
        The next batch is claimed as soon as every row of the current one has started (at
        most ``concurrency`` rows in flight), so sends flow on across batches. Every batch in
        hand is finished before it returns; if it is cancelled, so are the sends."""
        slots = asyncio.Semaphore(self.concurrency)
        batches: list[asyncio.Task[None]] = []
        if not await self._marker.write_held():  # claim nothing before: no row sent twice
            return
        try:
            for _ in range(max_batches):
                if stop is not None and stop.is_set():
                    break
                claim_id = f"{self.instance_id}#{next(self._claims)}"
                rows = await sql.claim(self.pool, claim_id, self.batch_size, self.lease_s)
                result.claimed += len(rows)
                if not rows:
                    break
                self._marker.expect(len(rows))
                # the lease runs on the database clock; the hold deadline keeps a margin of
                # one send timeout on this process's clock
                deadline = self.clock() + self.lease_s - self.send_timeout_s
                all_started = asyncio.Event()
                batch = asyncio.create_task(
                    self._deliver_batch(rows, claim_id, deadline, slots, all_started, result)
                )
                batches = [b for b in batches if not b.done()] + [batch]
                if len(rows) < self.batch_size:
                    break
                started = asyncio.ensure_future(all_started.wait())
                try:
                    await asyncio.wait({started, batch}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    started.cancel()
        except asyncio.CancelledError:
            for batch in batches:
                batch.cancel()
            raise
        finally:
            try:
                if batches:
                    await asyncio.gather(*batches, return_exceptions=True)
            finally:
                # the marks of rows already sent go out even when the drain is cut short
                await asyncio.shield(self._marker.flush())

    async def _deliver_batch(
        self,
        rows: list[asyncpg.Record],
        claim_id: str,
        deadline: float,
        slots: asyncio.Semaphore,
        all_started: asyncio.Event,
        result: DrainResult,
    ) -> None:
        last = len(rows) - 1

        async def deliver(index: int, row: asyncpg.Record) -> None:
            mark: asyncio.Future[bool] | None = None
            try:
                async with slots:  # FIFO: when the last row gets a slot, every row has one
                    if index == last:
                        all_started.set()
                    try:
                        mark = await self._deliver(row, claim_id, deadline, result)
                    except ClaimLostError:
                        log.warning("notification %s: lease lost before its outcome", row["id"])
                    except Exception as exc:
                        result.failed += 1
                        await self._record(exc, {"notification_id": row["id"], "stage": "outcome"})
            finally:
                self._marker.settle()
            if mark is None:
                return
            # the slot is free again while the mark waits for its group
            try:
                if await mark:
                    result.sent += 1
                else:
                    log.warning("notification %s: lease lost before its outcome", row["id"])
            except MarkHeldError:  # delivered; its mark is written when the database answers
                result.sent += 1
            except Exception as exc:  # the row stays claimed and is sent again after its lease
                result.failed += 1
                await self._record(exc, {"notification_id": row["id"], "stage": "mark sent"})

        await asyncio.gather(*(deliver(index, row) for index, row in enumerate(rows)))

    async def _deliver(
        self, row: asyncpg.Record, claim_id: str, deadline: float, result: DrainResult
    ) -> asyncio.Future[bool] | None:
        """Send one row and record any outcome but success; a delivered row's 'sent' mark
        is returned pending (``SentMarker``)."""
        row_id = row["id"]
        if row["recipient_blocked"]:
            await sql.mark_final(
                self.pool,
                row_id,
                claim_id,
                status="skipped",
                error=None,
                reason=UNREACHABLE_REASON,
                spend_attempt=False,
            )
            result.skipped += 1
            return None
        locale = row["recipient_language"] or self.default_locale
        params = row["params"] or {}
        try:
            text = self.renderer(row["template_key"], dict(params), locale)
        except Exception as exc:
            await self._failed(row, claim_id, exc, classify(exc), result)
            return None
        if self._marker.unreachable:  # stays claimed, sent after its lease: never twice
            result.failed += 1
            return None
        chat_id = row["chat_id"]
        migrated = False
        while True:
            max_wait = min(self.max_hold_s, deadline - self.clock())
            if not await self.rate_limiter.acquire(chat_id, max_wait=max_wait):
                delay = max(self.rate_limiter.wait_time(chat_id), 0.001)
                await self._expect(sql.release(self.pool, row_id, claim_id, delay_s=delay))
                result.deferred += 1
                return None
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    if params.get(MUTE_PARAM):  # mute buttons, made by the Telegram layer
                        message_id = await self.sender(
                            chat_id, text, mute=params[MUTE_PARAM], locale=locale
                        )
                    else:
                        message_id = await self.sender(chat_id, text)
            except Exception as exc:
                verdict = classify(exc)
                if verdict.migrate_to_chat_id is not None and not migrated:
                    await sql.migrate_chat(self.pool, chat_id, verdict.migrate_to_chat_id)
                    log.info("notification %s: chat migrated to a supergroup", row_id)
                    chat_id, migrated = verdict.migrate_to_chat_id, True
                    result.migrated += 1
                    continue
                await self._failed(row, claim_id, exc, verdict, result)
                return None
            return self._marker.add(row_id, claim_id, message_id)

    async def release_claims(self) -> int:
        """Give back every row this instance holds (a graceful stop, after its sends have
        stopped; held 'sent' marks are written first); returns how many. A crashed
        instance's rows come back after their lease."""
        if not await self._marker.write_held():  # released, they would go out again
            log.warning("%d sent mark(s) unwritten: claims kept", self._marker.held)
            return 0
        return await sql.release_instance(self.pool, f"{self.instance_id}#")

    # ------------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event) -> None:
        """Send notifications until ``stop`` is set: whenever PostgreSQL notifies a commit of
        new rows (LISTEN ``pending_notifications``), when ``wake`` is called and at least
        every ``poll_interval_s`` seconds, batches are claimed and delivered until one comes
        back short.

        While the database is unreachable it tries to LISTEN again every
        ``relisten_s`` seconds and drains at once when that succeeds, so prompt delivery
        resumes within about ``relisten_s`` of the database's return. The batches in hand
        finish before it returns (no row stays claimed). Errors of a drain are recorded and
        the loop goes on, waiting longer after repeated failures (up to 60 s); an exception
        outside that (a bug) propagates to the supervisor, which restarts the loop.
        """
        wake = self._wake = asyncio.Event()
        listener = OutboxListener(self.pool, sql.CHANNEL, wake.set)
        failures = 0
        try:
            while not stop.is_set():
                wake.clear()
                state = await listener.ensure()
                if state is ListenState.UNREACHABLE:
                    await wait_any(stop, wake, wait_s=self.relisten_s)
                    continue
                try:
                    await self._stream(DrainResult(), max_batches=_UNBOUNDED, stop=stop)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    await self._record(exc, {"loop": "notifications"})
                timeout = min(self.poll_interval_s * 2 ** min(failures, 6), 60.0)
                if state is not ListenState.LISTENING:
                    timeout = min(timeout, self.relisten_s)
                await wait_any(stop, wake, wait_s=timeout)
        finally:
            self._wake = None
            await listener.close()

    def wake(self) -> None:
        """Make ``run`` drain now (the database or Telegram is back); no-op when not running."""
        if self._wake is not None:
            self._wake.set()


__all__ = [
    "MAX_ATTEMPTS_REASON",
    "QUEUE_FULL_REASON",
    "QUEUE_FULL_TEMPLATE",
    "UNREACHABLE_REASON",
    "DrainResult",
    "ErrorRecorder",
    "FailingNotification",
    "NotificationRetryManager",
    "Renderer",
    "RequestMoved",
    "RetryPolicy",
    "Sender",
    "default_instance_id",
]
