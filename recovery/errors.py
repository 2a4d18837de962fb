"""Error records and the ``ErrorHandler`` that groups, stores and escalates them.

Public names of the design: ``ErrorCategory``, ``ErrorSeverity``, ``ErrorRecord``,
``ErrorHandler`` and ``classify`` (defined in ``recovery.classification``, re-exported here).

Grouping works as in error trackers (Sentry's issues): every occurrence gets a fingerprint
from the error type, the code location (the innermost frame of the project's own code, by
module and function, without the line number so that an unrelated edit does not split a
group) and the message normalized (quoted values, UUIDs, hex ids and numbers replaced by
placeholders). All occurrences with one fingerprint are one ``error_records`` row whose
``occurrence_count`` and ``last_seen_at`` grow; its short reference (``E-7K3M9Q``) is what a
user quotes and an admin looks up.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from database import error_records, outbox, users
from database.error_records import GroupCount
from database.pool import AnyConnection
from recovery.alerts import AdminAlerts, AlertKind
from recovery.classification import (
    Classification,
    ErrorCategory,
    ErrorSeverity,
    RetryStrategy,
    classify,
)
from recovery.masking import mask_sensitive, mask_value

__all__ = [
    "RESEND_TEMPLATE",
    "Classification",
    "ErrorCategory",
    "ErrorGroup",
    "ErrorHandler",
    "ErrorRecord",
    "ErrorSeverity",
    "FailedSend",
    "GroupCount",
    "RetryStrategy",
    "classify",
    "code_location",
    "fingerprint",
    "normalize_message",
]

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESEND_TEMPLATE = "telegram.resend"
"""Outbox template of a failed Telegram send queued for retry (its text, as it was)."""

IN_APP_EXCLUDE: tuple[str, ...] = (".venv/", "tests/fakes/")
"""Paths under the project root that are not the project's own code for grouping: the
virtualenv and the test doubles of Telegram (they stand in for library code)."""

DAY_S = 24 * 3600.0
WEEK_S = 7 * DAY_S

_REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud safely
_REFERENCE_ATTEMPTS = 5
REFERENCE_CONSTRAINT = "error_records_reference_key"  # UNIQUE (reference), PostgreSQL's name
_QUOTED = re.compile(r"(\"[^\"]*\"|'[^']*'|«[^»]*»)")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I)
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")
_RESENDABLE = (RetryStrategy.BACKOFF, RetryStrategy.WAIT, RetryStrategy.IMMEDIATE)


def normalize_message(message: str) -> str:
    """The message with quoted values, UUIDs, hex ids and numbers replaced by placeholders,
    so that the same error about different ids groups together. At most 500 characters.

    >>> normalize_message('request 17 in state "new": version 3 != 4')
    'request <n> in state <str>: version <n> != <n>'
    """
    text = _QUOTED.sub("<str>", message)
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("<hex>", text)
    text = _NUMBER.sub("<n>", text)
    return " ".join(text.split())[:500]


def _in_app(filename: str) -> bool:
    """True for a file of the project's own code (not a library, not a test double of an
    external service), as error trackers' "in app" frames."""
    if not filename.startswith(str(PROJECT_ROOT)) or "site-packages" in filename:
        return False
    relative = filename[len(str(PROJECT_ROOT)) :].lstrip("/")
    return not relative.startswith(IN_APP_EXCLUDE)


def _frames(exc: BaseException) -> traceback.StackSummary:
    return (
        traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else traceback.StackSummary()
    )


def _own_frame(frames: Sequence[traceback.FrameSummary]) -> traceback.FrameSummary | None:
    """The innermost frame in the project's own code (else the innermost one)."""
    own = [f for f in frames if _in_app(f.filename)]
    chosen = own or frames
    return chosen[-1] if chosen else None


def _module_path(filename: str) -> str:
    if filename.startswith(str(PROJECT_ROOT) + "/"):
        return filename[len(str(PROJECT_ROOT)) + 1 :]
    return Path(filename).name


def _location(frame: traceback.FrameSummary | None, *, with_line: bool) -> str:
    if frame is None:
        return "unknown"
    where = f"{_module_path(frame.filename)}:{frame.name}"
    return f"{where}:{frame.lineno}" if with_line else where


def code_location(exc: BaseException, *, with_line: bool = True) -> str:
    """``path/module.py:function:line`` of the innermost frame of the project's own code
    (the innermost frame when none is ours; ``unknown`` without a traceback).

    ``with_line=False`` gives ``path/module.py:function``, the part used for grouping.
    """
    return _location(_own_frame(_frames(exc)), with_line=with_line)


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or the type's name when that is empty or raises."""
    try:
        return str(exc) or type(exc).__name__
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


def format_stack(exc: BaseException, frames: traceback.StackSummary | None = None) -> str:
    """The exception's traceback as text, chained causes first, like the interpreter prints
    it but without the column carets (Python 3.11 parses every source line to draw them, an
    order of magnitude slower; the line numbers say the same)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        cause = current.__cause__
        current = (
            cause if cause is not None or current.__suppress_context__ else current.__context__
        )
    parts: list[str] = []
    for index, item in enumerate(reversed(chain)):
        if index:
            follows = chain[len(chain) - index]
            parts.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
                if follows.__cause__ is item
                else "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
        stack = frames if item is exc and frames is not None else _frames(item)
        if stack:
            parts.append("Traceback (most recent call last):\n")
        for frame in stack:
            parts.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n')
            if frame.line:
                parts.append(f"    {frame.line.strip()}\n")
        kind = type(item)
        parts.append(f"{kind.__module__}.{kind.__qualname__}: {safe_str(item)}\n")
    return "".join(parts)


def fingerprint(error_type: str, location: str, message: str) -> str:
    """SHA-256 (hex, first 32 characters) of type, location and normalized message: the
    group key."""
    raw = f"{error_type}|{location}|{normalize_message(message)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def new_reference() -> str:
    """A short error reference a user can quote, e.g. ``E-7K3M9Q`` (32**6, about 1e9
    values; a collision with an existing group is retried with a fresh one)."""
    return "E-" + "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(6))


@dataclass(frozen=True, slots=True)
class FailedSend:
    """A Telegram message the bot failed to send, as the caller saw it (no aiogram types).

    Attributes:
        chat_id: the chat the message was for (a user's Telegram id in a private chat).
        text: the message as plain text when it can be sent again as it was (no markup,
            no keyboard); None when it cannot.
        recipient_id: the recipient's ``users.id``, when known.
        idempotency_key: names this send (e.g. ``resend:<update id>``) so that the same
            failure recorded twice queues one retry.
    """

    chat_id: int
    text: str | None = None
    recipient_id: int | None = None
    idempotency_key: str | None = None


@dataclass(slots=True)
class ErrorRecord:
    """One occurrence of an error, masked and ready to store.

    ``reference`` is the group's reference once stored (the same for every occurrence of a
    group; None when recording failed); ``occurrence_count`` is the group's count after this
    occurrence; ``actions`` says what the handler did (``recorded``, ``ignored``,
    ``alerted``, ``marked_unreachable``, ``queued_resend``; ``alerted_failed``,
    ``marked_failed``, ``queued_failed`` when that step hit a database error and was rolled
    back to its savepoint, the record itself kept).
    """

    error_type: str
    message: str
    category: ErrorCategory
    severity: ErrorSeverity
    location: str
    fingerprint: str
    stack_trace: str
    context: dict[str, Any] = field(default_factory=dict)
    classification: Classification | None = None
    reference: str | None = None
    record_id: int | None = None
    occurrence_count: int = 0
    status: str | None = None
    actions: list[str] = field(default_factory=list)

    @property
    def alerted(self) -> bool:
        """True when this occurrence sent an admin alert."""
        return "alerted" in self.actions

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        context: Mapping[str, Any] | None = None,
        classification: Classification | None = None,
        extra_secrets: Sequence[str] = (),
    ) -> ErrorRecord:
        """Build a masked record of ``exc``: message, stack trace and every string in
        ``context`` pass through ``mask_sensitive``; the classification's reason, code and
        strategy are added to the context."""
        verdict = classification or classify(exc)
        secrets_ = tuple(s for s in extra_secrets if s)
        error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
        message = mask_sensitive(safe_str(exc), extra_secrets=secrets_)
        frames = _frames(exc)
        frame = _own_frame(frames)
        stack = format_stack(exc, frames)
        masked_context = mask_value(dict(context or {}), extra_secrets=secrets_)
        masked_context.update(
            reason=verdict.reason,
            code=verdict.code,
            strategy=verdict.strategy.value,
            retryable=verdict.retryable,
        )
        if verdict.retry_after is not None:
            masked_context["retry_after_s"] = verdict.retry_after
        group_location = _location(frame, with_line=False)
        return cls(
            error_type=error_type,
            message=message[:2000],
            category=verdict.category,
            severity=verdict.severity,
            location=_location(frame, with_line=True),
            fingerprint=fingerprint(error_type, group_location, message),
            stack_trace=mask_sensitive(stack[-20_000:], extra_secrets=secrets_),
            context=masked_context,
            classification=verdict,
        )


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """One ``error_records`` row: an error group as the admin screens show it.

    Times are timezone-aware (UTC).
    """

    id: int
    reference: str
    fingerprint: str
    category: ErrorCategory
    severity: ErrorSeverity
    error_type: str
    message: str
    location: str | None
    stack_trace: str | None
    context: dict[str, Any]
    occurrence_count: int
    first_seen_at: datetime
    last_seen_at: datetime
    status: str
    resolved_at: datetime | None
    resolved_by: int | None
    last_alerted_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ErrorGroup:
        """Build from an ``error_records`` row."""
        return cls(
            id=row["id"],
            reference=row["reference"],
            fingerprint=row["fingerprint"],
            category=ErrorCategory(row["category"]),
            severity=ErrorSeverity(row["severity"]),
            error_type=row["error_type"],
            message=row["message"],
            location=row["location"],
            stack_trace=row["stack_trace"],
            context=row["context"] or {},
            occurrence_count=row["occurrence_count"],
            first_seen_at=row["first_seen_at"],
            last_seen_at=row["last_seen_at"],
            status=row["status"],
            resolved_at=row["resolved_at"],
            resolved_by=row["resolved_by"],
            last_alerted_at=row["last_alerted_at"],
        )


class ErrorHandler:
    """Records errors grouped by fingerprint and applies the category's strategy.

    For every error, in one database transaction:

    - one ``error_records`` upsert (a storm becomes one row whose ``occurrence_count``
      grows);
    - critical errors: an alert to every admin through the notification outbox
      (``admin.error_alert``), at most once per group per ``alert_window_s`` seconds (and at
      once when a resolved group regresses);
    - notification errors that say the recipient is gone (403, chat not found): the user is
      marked unreachable (``users.blocked_bot_at``), so the outbox stops sending to them;
    - transient Telegram errors on a send the caller describes with ``FailedSend`` (5xx,
      network, 429, a migrated group): the message is queued in the outbox, which retries it
      with backoff (or after ``retry_after``) instead of losing it.

    An error with nothing but the record to write is one statement committed
    asynchronously (no wait for the WAL flush: a storm is not slowed down by the disk; a
    server crash may lose the last moments of error records). One with a strategy step is
    one ordinary transaction, each step in a savepoint so that a failing step never loses
    the record.

    Transient database errors are retried where they happen, by the transaction runner
    (``classify(exc).strategy is RetryStrategy.TRANSACTION``); data and business errors are
    only recorded (the caller answers the user).

    Args:
        pool: asyncpg pool.
        admin_ids: Telegram ids from ``ADMIN_IDS`` (admin-role users are added from the DB).
        alert_window_s: minimum seconds between two alerts of the same group
            (``ERROR_ALERT_WINDOW_S``, default one hour).
        extra_secrets: literal secrets (the bot token) masked wherever they appear.
        store_timeout_s: seconds to wait for a pooled connection before giving up on
            recording (the pool may be what failed).
        alerts: the admin alert path (``recovery.alerts``); when set, critical-error alerts
            go through it (rate limit, digest, per-admin mutes) after this class's own
            once-per-group-per-window claim.
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
    ) -> None:
        self.pool = pool
        self.admin_ids = tuple(admin_ids)
        self.alert_window_s = alert_window_s
        self.extra_secrets = tuple(s for s in extra_secrets if s)
        self.store_timeout_s = store_timeout_s
        self.alerts = alerts

    # --- recording ------------------------------------------------------------------------
    async def handle(
        self,
        exc: BaseException,
        *,
        context: Mapping[str, Any] | None = None,
        failed_send: FailedSend | None = None,
    ) -> ErrorRecord:
        """Classify, mask, record and escalate ``exc``; returns the record.

        Args:
            exc: the exception, with its traceback.
            context: what was going on (update id, handler...); strings are masked.
            failed_send: the Telegram message whose sending raised ``exc``, if any.

        Never raises: if recording fails (the database itself may be what failed), the
        record comes back without a ``reference`` and the failure is logged (masked).
        """
        record = ErrorRecord.from_exception(exc, context=context, extra_secrets=self.extra_secrets)
        try:
            await self._store(record, failed_send)
        except Exception as store_exc:
            # nothing was committed: no reference may be shown for it
            record.reference, record.record_id, record.occurrence_count = None, None, 0
            record.status, record.actions = None, []
            log.error(
                "could not record error %s at %s: %s: %s",
                record.error_type,
                record.location,
                type(store_exc).__name__,
                mask_sensitive(str(store_exc), extra_secrets=self.extra_secrets),
            )
        self._log(exc, record)
        return record

    async def _store(self, record: ErrorRecord, failed_send: FailedSend | None) -> None:
        """Upsert the group, then apply the strategy, each step in its own savepoint so that
        a failing step (the users table is what broke, say) never loses the record. The
        record gets its reference only once the transaction committed."""
        verdict = record.classification
        assert verdict is not None
        steps: list[tuple[str, Callable[[AnyConnection], Awaitable[bool]]]] = []
        if verdict.alert_admins:
            steps.append(("alerted", lambda conn: self._alert_admins(conn, record)))
        if failed_send is not None and verdict.mark_user_blocked:
            steps.append(("marked_unreachable", lambda conn: self._mark(conn, failed_send)))
        elif failed_send is not None and verdict.retryable and verdict.strategy in _RESENDABLE:
            steps.append(
                ("queued_resend", lambda conn: self._queue_resend(conn, verdict, failed_send))
            )
        async with self.pool.acquire(timeout=self.store_timeout_s) as conn:
            for attempt in range(_REFERENCE_ATTEMPTS):
                actions = ["recorded"] + (["ignored"] if verdict.ignore else [])
                try:
                    if not steps:  # one statement, its own transaction, asynchronous commit
                        result = await self._upsert(conn, record, durable=False)
                        break
                    async with conn.transaction():  # alerts, marks and resends are durable
                        result = await self._upsert(conn, record, durable=True)
                        for action, step in steps:
                            done = await self._run_step(conn, action, step, result.reference)
                            if done is None:
                                actions.append(f"{action.split('_')[0]}_failed")
                            elif done:
                                actions.append(action)
                    break
                except asyncpg.UniqueViolationError as exc:
                    # a new group drew a reference another group has (32**6 references):
                    # nothing was written, draw again
                    if exc.constraint_name != REFERENCE_CONSTRAINT:
                        raise
                    if attempt == _REFERENCE_ATTEMPTS - 1:
                        raise
            record.status = result.status
            record.actions = actions

    async def _upsert(
        self, conn: AnyConnection, record: ErrorRecord, *, durable: bool
    ) -> error_records.UpsertResult:
        result = await error_records.upsert(
            conn,
            durable=durable,
            reference=new_reference(),
            fingerprint=record.fingerprint,
            category=record.category.value,
            severity=record.severity.value,
            error_type=record.error_type,
            message=record.message,
            location=record.location,
            stack_trace=record.stack_trace,
            context=record.context,
        )
        # the alert quotes these; handle() clears them if the commit fails
        record.record_id = result.id
        record.occurrence_count = result.occurrence_count
        record.reference = result.reference
        return result

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
        assert record.record_id is not None
        claimed_at = await error_records.claim_alert(conn, record.record_id, self.alert_window_s)
        if claimed_at is None:
            return False
        # the occurrence number is unique within the group (the upsert holds the row lock)
        occurrence = record.occurrence_count
        params = {
            "reference": record.reference,
            "category": record.category.value,
            "severity": record.severity.value,
            "error_type": record.error_type.rsplit(".", 1)[-1],
            "message": record.message[:300],
            "count": record.occurrence_count,
        }
        if self.alerts is not None:  # the admin alert path: rate limit, digest, mutes
            await self.alerts.raise_alert(
                AlertKind.ERROR,
                f"error-alert:{record.record_id}:{occurrence}",
                "admin.error_alert",
                params,
                summary=record.reference or "",
                conn=conn,
            )
            return True
        for user_id, chat_id in await outbox.admin_recipients(conn, self.admin_ids):
            await outbox.enqueue(
                conn,
                idempotency_key=f"error-alert:{record.record_id}:{occurrence}:{chat_id}",
                chat_id=chat_id,
                recipient_id=user_id,
                template_key="admin.error_alert",
                params=params,
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
        with_trace = record.category is ErrorCategory.SYSTEM and level >= logging.ERROR
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
    async def lookup(self, reference: str) -> ErrorGroup | None:
        """The group behind an error reference a user quoted (``E-7K3M9Q``; case and blanks
        ignored), or None when there is none."""
        row = await error_records.get_by_reference(self.pool, reference)
        return ErrorGroup.from_row(row) if row is not None else None

    async def resolve_group(self, reference: str, *, resolved_by: int | None) -> ErrorGroup | None:
        """Mark a group resolved (``resolved_by``: the admin's ``users.id`` or Telegram id,
        as the caller audits it). Returns the group, or None when there is no such
        reference. Resolving a resolved group changes nothing and returns it as it is.

        When the error happens again the group becomes ``regressed`` and counts on; a
        critical one alerts the admins at once.
        """
        row = await error_records.resolve(self.pool, reference, resolved_by)
        if row is None:
            row = await error_records.get_by_reference(self.pool, reference)
        return ErrorGroup.from_row(row) if row is not None else None

    async def top_groups(
        self,
        *,
        limit: int = 10,
        offset: int = 0,
        window_s: float | None = None,
        include_resolved: bool = False,
    ) -> list[ErrorGroup]:
        """Groups with the most occurrences (running totals), most frequent first; only
        groups seen in the last ``window_s`` seconds when given. Resolved groups are left
        out unless ``include_resolved``. Page with ``limit``/``offset``."""
        rows = await error_records.top_groups(
            self.pool,
            limit=limit,
            offset=offset,
            window_s=window_s,
            include_resolved=include_resolved,
        )
        return [ErrorGroup.from_row(row) for row in rows]

    async def group_counts(self, window_s: float = DAY_S) -> list[GroupCount]:
        """Groups seen in the last ``window_s`` seconds by category and severity, with their
        running totals; most occurrences first. (Occurrences inside a window need an hourly
        rollup of occurrences, which the dashboard's statistics keep.)"""
        return await error_records.group_counts(self.pool, window_s)

    async def statistics(self) -> dict[str, list[GroupCount]]:
        """``group_counts`` for the admin screen's two windows: ``{"24h": [...], "7d": [...]}``."""
        return {"24h": await self.group_counts(DAY_S), "7d": await self.group_counts(WEEK_S)}
