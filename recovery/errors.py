"""Error records and the ``ErrorHandler`` that groups, stores and escalates them.

Public names of the design: ``ErrorCategory``, ``ErrorSeverity``, ``ErrorRecord``,
``ErrorHandler`` and ``classify`` (defined in ``recovery.classification``, re-exported here).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from database import error_records, outbox
from recovery.classification import (
    Classification,
    ErrorCategory,
    ErrorSeverity,
    RetryStrategy,
    classify,
)
from recovery.masking import mask_sensitive

__all__ = [
    "Classification",
    "ErrorCategory",
    "ErrorHandler",
    "ErrorRecord",
    "ErrorSeverity",
    "RetryStrategy",
    "classify",
    "fingerprint",
    "normalize_message",
]

log = logging.getLogger(__name__)

_REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud safely
_QUOTED = re.compile(r"(\"[^\"]*\"|'[^']*'|«[^»]*»)")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b", re.I)
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")


def normalize_message(message: str) -> str:
    """The message with quoted values, UUIDs, hex ids and numbers replaced by placeholders,
    so that the same error about different ids groups together."""
    text = _QUOTED.sub("<str>", message)
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("<hex>", text)
    text = _NUMBER.sub("<n>", text)
    return " ".join(text.split())[:500]


def code_location(exc: BaseException) -> str:
    """``module:function:line`` of the innermost frame of the project's own code (or of the
    innermost frame when none is ours)."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    own = [
        f for f in frames if "site-packages" not in f.filename and "/lib/python" not in f.filename
    ]
    frame = (own or frames)[-1] if (own or frames) else None
    if frame is None:
        return "unknown"
    module = frame.filename.rsplit("/", 1)[-1]
    return f"{module}:{frame.name}:{frame.lineno}"


def fingerprint(error_type: str, location: str, message: str) -> str:
    """SHA-256 (hex, 32 chars) of type, location and normalized message: the group key."""
    raw = f"{error_type}|{location}|{normalize_message(message)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def new_reference() -> str:
    """A short error reference a user can quote, e.g. ``E-7K3M9Q`` (32**6 ~ 1e9 values)."""
    return "E-" + "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(6))


@dataclass(slots=True)
class ErrorRecord:
    """One occurrence of an error, masked and ready to store.

    ``reference`` is the group's reference once stored (the same for every occurrence of a
    group); ``occurrence_count`` is the group's count after this occurrence.
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
    alerted: bool = False

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        context: dict[str, Any] | None = None,
        classification: Classification | None = None,
        extra_secrets: Sequence[str] = (),
    ) -> ErrorRecord:
        """Build a masked record of ``exc`` (message, stack trace and context masked)."""
        verdict = classification or classify(exc)
        secrets_ = tuple(s for s in extra_secrets if s)
        error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
        message = mask_sensitive(str(exc) or type(exc).__name__, extra_secrets=secrets_)
        location = code_location(exc)
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        masked_context = {
            key: mask_sensitive(value, extra_secrets=secrets_) if isinstance(value, str) else value
            for key, value in (context or {}).items()
        }
        return cls(
            error_type=error_type,
            message=message[:2000],
            category=verdict.category,
            severity=verdict.severity,
            location=location,
            fingerprint=fingerprint(error_type, location, message),
            stack_trace=mask_sensitive(stack, extra_secrets=secrets_)[-20_000:],
            context=masked_context,
            classification=verdict,
        )


class ErrorHandler:
    """Records errors grouped by fingerprint and applies the category's strategy.

    - every error: one ``error_records`` upsert (a storm becomes one row whose
      ``occurrence_count`` grows);
    - critical errors (``alert_admins``): an alert to every admin through the notification
      outbox, at most once per group per ``alert_window_s`` seconds.

    Args:
        pool: asyncpg pool.
        admin_ids: Telegram ids from ``ADMIN_IDS`` (admin-role users are added from the DB).
        alert_window_s: minimum seconds between two alerts of the same group.
        extra_secrets: literal secrets (the bot token) masked wherever they appear.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        admin_ids: Sequence[int] = (),
        alert_window_s: float = 3600.0,
        extra_secrets: Sequence[str] = (),
    ) -> None:
        self.pool = pool
        self.admin_ids = tuple(admin_ids)
        self.alert_window_s = alert_window_s
        self.extra_secrets = tuple(s for s in extra_secrets if s)

    async def handle(
        self, exc: BaseException, *, context: dict[str, Any] | None = None
    ) -> ErrorRecord:
        """Classify, mask, record and escalate ``exc``; returns the stored record.

        Never raises because of the database: if recording fails, the record comes back
        without a ``reference`` and the failure is logged (masked).
        """
        record = ErrorRecord.from_exception(exc, context=context, extra_secrets=self.extra_secrets)
        try:
            await self._store(record)
        except Exception as store_exc:  # the database itself may be what failed
            log.error(
                "could not record error %s at %s: %s",
                record.error_type,
                record.location,
                mask_sensitive(str(store_exc), extra_secrets=self.extra_secrets),
            )
        return record

    async def _store(self, record: ErrorRecord) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            result = await error_records.upsert(
                conn,
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
            record.reference = result.reference
            record.record_id = result.id
            record.occurrence_count = result.occurrence_count
            verdict = record.classification
            if verdict is not None and verdict.alert_admins:
                record.alerted = await self._alert_admins(conn, record)

    async def _alert_admins(self, conn: asyncpg.Connection, record: ErrorRecord) -> bool:
        assert record.record_id is not None
        if not await error_records.claim_alert(conn, record.record_id, self.alert_window_s):
            return False
        stamp = await conn.fetchval("SELECT extract(epoch FROM now())::bigint")
        for user_id, chat_id in await outbox.admin_recipients(conn, self.admin_ids):
            await outbox.enqueue(
                conn,
                idempotency_key=f"error-alert:{record.record_id}:{stamp}:{chat_id}",
                chat_id=chat_id,
                recipient_id=user_id,
                template_key="admin.error_alert",
                params={
                    "reference": record.reference,
                    "category": record.category.value,
                    "severity": record.severity.value,
                    "error_type": record.error_type.rsplit(".", 1)[-1],
                    "message": record.message[:300],
                    "count": record.occurrence_count,
                },
            )
        return True
