"""The ``ErrorHandler``: every error recorded through the error pipeline, grouped by
fingerprint, escalated by its category's strategy.

Public names of the design: ``ErrorCategory``, ``ErrorSeverity``, ``ErrorRecord``,
``ErrorHandler`` and ``classify`` (defined in ``recovery.classification``, re-exported here).
What one error is (fingerprint, location, masked record, group) is ``recovery.error_model``;
how occurrences are coalesced, written in batches and held while PostgreSQL is away is
``recovery.error_pipeline``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg

from database import error_records, outbox, users
from database.pool import AnyConnection
from recovery.actors import Actor
from recovery.alerts import AdminAlerts, AlertKind
from recovery.classification import (
    Classification,
    ErrorCategory,
    ErrorSeverity,
    RetryStrategy,
    classify,
)
from recovery.error_model import (
    ErrorGroup,
    ErrorRecord,
    FailedSend,
    code_location,
    fingerprint,
    format_stack,
    group_reference,
    normalize_message,
    safe_str,
)
from recovery.error_pipeline import ErrorPipeline
from recovery.masking import mask_sensitive

__all__ = [
    "RESEND_TEMPLATE",
    "Classification",
    "ErrorCategory",
    "ErrorGroup",
    "ErrorHandler",
    "ErrorPipeline",
    "ErrorRecord",
    "ErrorSeverity",
    "FailedSend",
    "RetryStrategy",
    "classify",
    "code_location",
    "fingerprint",
    "format_stack",
    "group_reference",
    "normalize_message",
    "safe_str",
]

log = logging.getLogger(__name__)

RESEND_TEMPLATE = "telegram.resend"
"""Outbox template of a failed Telegram send queued for retry (its text, as it was)."""


_RESENDABLE = (RetryStrategy.BACKOFF, RetryStrategy.WAIT, RetryStrategy.IMMEDIATE)

Steps = list[tuple[str, Callable[[AnyConnection], Awaitable[bool]]]]
"""A record's strategy steps: (action name, step run in a savepoint; True when it acted)."""

MAX_HELD_ESCALATIONS = 1_000
"""Strategy steps held while the database is away (one per group and failed send's chat);
beyond this the oldest is dropped, with a log line (the occurrences themselves are bounded
by the pipeline's spool)."""


class ErrorHandler:
    """Records errors grouped by fingerprint and applies the category's strategy.

    Every occurrence goes through the error pipeline (``recovery.error_pipeline``): counted
    in memory at once, written with the other occurrences of its window in one statement,
    held (bounded) while PostgreSQL is unreachable. The reference the user is shown is known
    before the write and resolves in ``lookup`` afterwards.

    Errors with a strategy step write their group at once (``ErrorPipeline.flush``), then,
    in one transaction, each step in a savepoint so that a failing step never loses the
    others:

    - critical errors: an alert to every admin through the notification outbox
      (``admin.error_alert``), at most once per group per ``alert_window_s`` seconds (and at
      once when a resolved group regresses);
    - notification errors that say the recipient is gone (403, chat not found): the user is
      marked unreachable (``users.blocked_bot_at``), so the outbox stops sending to them;
    - transient Telegram errors on a send the caller describes with ``FailedSend`` (5xx,
      network, 429, a migrated group): the message is queued in the outbox, which retries it
      with backoff (or after ``retry_after``) instead of losing it.

    While the database is unreachable (the pipeline's last write failed) the steps are not
    tried: the occurrence is held (``actions == ["spooled"]``) and so are its steps, at most
    ``MAX_HELD_ESCALATIONS`` (one per group and failed send's chat): ``flush`` runs them once
    the held occurrences are written, so a critical error of an outage still alerts the
    admins afterwards and a failed send is still queued.

    Args:
        pool: asyncpg pool.
        admin_ids: Telegram ids from ``ADMIN_IDS`` (admin-role users are added from the DB).
        alert_window_s: minimum seconds between two alerts of the same group
            (``ERROR_ALERT_WINDOW_S``, default one hour).
        extra_secrets: literal secrets (the bot token) masked wherever they appear.
        store_timeout_s: seconds to wait for a pooled connection before giving up on a
            write (the pool may be what failed).
        alerts: the admin alert path (``recovery.alerts``; default: one on ``pool`` for
            ``admin_ids`` with its default policy); critical-error alerts go through it
            (rate limit, digest, per-admin mutes) after this class's own
            once-per-group-per-window claim.
        pipeline: the error pipeline (default: one on ``pool`` with its defaults); its flush
            task is started by ``start`` and stopped by ``stop``.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        admin_ids: Sequence[int] = (),
        alert_window_s: float = 3600.0,
        extra_secrets: Sequence[str] = (),
        store_timeout_s: float = 5.0,
        alerts: AdminAlerts | None = None,
        pipeline: ErrorPipeline | None = None,
    ) -> None:
        self.pool = pool
        self.admin_ids = tuple(admin_ids)
        self.alert_window_s = alert_window_s
        self.extra_secrets = tuple(s for s in extra_secrets if s)
        self.store_timeout_s = store_timeout_s
        self.alerts = alerts or AdminAlerts(pool, admin_ids=self.admin_ids)
        self.pipeline = pipeline or ErrorPipeline(
            pool, store_timeout_s=store_timeout_s, extra_secrets=self.extra_secrets
        )
        self._held: dict[tuple[str, int | None], tuple[ErrorRecord, Steps]] = {}

    # --- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the pipeline's flush task (needs a running event loop)."""
        self.pipeline.start()

    async def run(self) -> None:
        """The pipeline's flush loop in the caller's task (a supervised task), until
        ``stop``."""
        await self.pipeline.run()

    async def flush(self) -> bool:
        """Write every held occurrence now, then run the steps held with them (admin
        alerts, resends); True when nothing is left (see ``ErrorPipeline.flush``)."""
        if not await self.pipeline.flush():
            return False
        held, self._held = self._held, {}
        for record, steps in held.values():
            try:
                await self._escalate(record, steps)
            except Exception as exc:  # the occurrence itself is written
                log.error("error %s: held steps failed: %s", record.reference, type(exc).__name__)
        return not self._held

    def _hold(self, record: ErrorRecord, steps: Steps, failed_send: FailedSend | None) -> None:
        key = (record.fingerprint, failed_send.chat_id if failed_send is not None else None)
        if key not in self._held and len(self._held) >= MAX_HELD_ESCALATIONS:
            dropped = self._held.pop(next(iter(self._held)))[0]
            log.warning("error %s: held steps dropped (limit reached)", dropped.reference)
        self._held.setdefault(key, (record, steps))

    async def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the flush task and write what is held within ``timeout_s`` seconds."""
        return await self.pipeline.stop(timeout_s)

    # --- recording ------------------------------------------------------------------------
    async def handle(
        self,
        exc: BaseException,
        *,
        context: Mapping[str, Any] | None = None,
        failed_send: FailedSend | None = None,
    ) -> ErrorRecord:
        """Classify, mask (once per group), count and escalate ``exc``; returns the record.

        Args:
            exc: the exception, with its traceback.
            context: what was going on (update id, handler...); strings are masked.
            failed_send: the Telegram message whose sending raised ``exc``, if any.

        The record's ``reference`` is always set: the group's reference, which resolves in
        ``lookup`` once the pipeline has written it (at most ``ERROR_FLUSH_WINDOW_S`` later,
        or when the database is back). Never raises.
        """
        record = self.pipeline.record(exc, context)
        verdict = record.classification
        assert verdict is not None
        steps = self._steps(verdict, record, failed_send)
        record.actions = ["recorded"] + (["ignored"] if verdict.ignore else [])
        if self.pipeline.unreachable_since is not None:
            record.actions = ["spooled"]
            if steps:
                self._hold(record, steps, failed_send)
        elif steps:
            try:
                if not await self._escalate(record, steps):
                    self._hold(record, steps, failed_send)
            except Exception as step_exc:  # the occurrence itself is held by the pipeline
                log.error(
                    "error %s: strategy steps failed: %s: %s",
                    record.reference,
                    type(step_exc).__name__,
                    mask_sensitive(str(step_exc), extra_secrets=self.extra_secrets),
                )
                record.actions.extend(f"{action.split('_')[0]}_failed" for action, _ in steps)
        self._log(exc, record)
        return record

    def _steps(
        self, verdict: Classification, record: ErrorRecord, failed_send: FailedSend | None
    ) -> Steps:
        steps: Steps = []
        if verdict.alert_admins:
            steps.append(("alerted", lambda conn: self._alert_admins(conn, record)))
        if failed_send is not None and verdict.mark_user_blocked:
            steps.append(("marked_unreachable", lambda conn: self._mark(conn, failed_send)))
        elif failed_send is not None and verdict.retryable and verdict.strategy in _RESENDABLE:
            steps.append(
                ("queued_resend", lambda conn: self._queue_resend(conn, verdict, failed_send))
            )
        return steps

    async def _escalate(self, record: ErrorRecord, steps: Steps) -> bool:
        """Write the group now (the alert names its row), then run the steps in one
        transaction, each in its own savepoint; False when the group could not be written
        (the steps were not run)."""
        if not await self.pipeline.flush():
            record.actions = ["spooled"]
            return False
        known = self.pipeline.group(record.fingerprint)
        if known is not None and known.id is not None:
            record.record_id, record.reference = known.id, known.reference
            record.occurrence_count, record.status = known.occurrence_count, known.status
        async with (
            self.pool.acquire(timeout=self.store_timeout_s) as conn,
            conn.transaction(),
        ):
            for action, step in steps:
                done = await self._run_step(conn, action, step, record.reference or "")
                if done is None:
                    record.actions.append(f"{action.split('_')[0]}_failed")
                elif done:
                    record.actions.append(action)
        return True

    async def _run_step(
        self,
        conn: AnyConnection,
        action: str,
        step: Callable[[AnyConnection], Awaitable[bool]],
        reference: str,
    ) -> bool | None:
        """Run one strategy step in a savepoint; None (and a log line) when it failed."""
        try:
            async with conn.transaction():
                return await step(conn)
        except asyncpg.PostgresError as step_exc:
            log.error(
                "error %s: %s failed: %s: %s",
                reference,
                action,
                type(step_exc).__name__,
                mask_sensitive(str(step_exc), extra_secrets=self.extra_secrets),
            )
            return None

    async def _mark(self, conn: AnyConnection, failed: FailedSend) -> bool:
        await users.mark_unreachable(conn, failed.chat_id)
        return True

    async def _alert_admins(self, conn: AnyConnection, record: ErrorRecord) -> bool:
        if record.record_id is None:
            return False
        claimed_at = await error_records.claim_alert(conn, record.record_id, self.alert_window_s)
        if claimed_at is None:
            return False
        # the group's count when the claim was won: the claim is once per window
        occurrence = record.occurrence_count
        params = {
            "reference": record.reference,
            "category": record.category.value,
            "severity": record.severity.value,
            "error_type": record.error_type.rsplit(".", 1)[-1],
            "message": record.message[:300],
            "count": record.occurrence_count,
        }
        # the admin alert path: rate limit, digest, mutes
        await self.alerts.raise_alert(
            AlertKind.ERROR,
            f"error-alert:{record.record_id}:{occurrence}",
            "admin.error_alert",
            params,
            summary=record.reference or "",
            conn=conn,
        )
        return True

    async def _queue_resend(
        self, conn: AnyConnection, verdict: Classification, failed: FailedSend
    ) -> bool:
        if not failed.text or not failed.idempotency_key:
            return False
        chat_id = failed.chat_id
        if verdict.strategy is RetryStrategy.IMMEDIATE and verdict.migrate_to_chat_id:
            chat_id = verdict.migrate_to_chat_id
        await outbox.enqueue(
            conn,
            idempotency_key=failed.idempotency_key,
            chat_id=chat_id,
            recipient_id=failed.recipient_id,
            template_key=RESEND_TEMPLATE,
            params={"text": failed.text},
        )
        return True

    def _log(self, exc: BaseException, record: ErrorRecord) -> None:
        verdict = record.classification
        if verdict is not None and verdict.ignore:
            level = logging.DEBUG
        else:
            level = {
                ErrorSeverity.LOW: logging.INFO,
                ErrorSeverity.MEDIUM: logging.WARNING,
                ErrorSeverity.HIGH: logging.ERROR,
                ErrorSeverity.CRITICAL: logging.ERROR,
            }[record.severity]
        if not log.isEnabledFor(level):
            return
        # the traceback once per group sample (a storm logs its lines, not its traces)
        known = self.pipeline.group(record.fingerprint)
        sampled = known is not None and known.sample is record
        with_trace = sampled and record.category is ErrorCategory.SYSTEM and level >= logging.ERROR
        log.log(
            level,
            "error %s %s/%s %s at %s (x%d, %s): %s",
            record.reference or "(not recorded)",
            record.category.value,
            record.severity.value,
            record.error_type.rsplit(".", 1)[-1],
            record.location,
            record.occurrence_count,
            ",".join(record.actions) or "-",
            record.message[:300],
            exc_info=exc if with_trace else None,
        )

    # --- admin operations (the error statistics screen) -----------------------------------
    async def resolve_group(self, reference: str, *, resolved_by: Actor) -> ErrorGroup | None:
        """Mark a group resolved (``resolved_by``: the admin resolving it; the group stores
        its ``user_id``). Returns the group, or None when there is no such reference.
        Resolving a resolved group changes nothing and returns it as it is.

        When the error happens again the group becomes ``regressed`` and counts on; a
        critical one alerts the admins at once.
        """
        row = await error_records.resolve(self.pool, reference, resolved_by.user_id)
        if row is None:
            row = await error_records.get_by_reference(self.pool, reference)
        return ErrorGroup.from_row(row) if row is not None else None
