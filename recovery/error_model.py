"""What one error is: its fingerprint, location, masked record and the group it belongs to.

Grouping works as in error trackers (Sentry's issues): every occurrence gets a fingerprint
from the error type, the code location (the innermost frame of the project's own code, by
module and function, without the line number so that an unrelated edit does not split a
group) and the message normalized (quoted values, UUIDs, hex ids and numbers replaced by
placeholders). All occurrences with one fingerprint are one ``error_records`` row whose
``occurrence_count`` and ``last_seen_at`` grow; its short reference (``E-7K3M9Q``) is what a
user quotes and an admin looks up.

The expensive part (masking the stack trace, extracting the frames with their source lines)
is ``ErrorRecord.from_exception``; ``group_key`` finds the group of an occurrence from the
raw traceback without either, so that it runs once per group, not once per occurrence.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from recovery.classification import Classification, ErrorCategory, ErrorSeverity, classify
from recovery.masked_output import mask_value
from recovery.masking import mask_sensitive

PROJECT_ROOT = Path(__file__).resolve().parents[1]
IN_APP_EXCLUDE: tuple[str, ...] = (".venv/", "tests/fakes/")
"""Paths under the project root that are not the project's own code for grouping: the
virtualenv and the test doubles of Telegram (they stand in for library code)."""

_REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud safely
_QUOTED = re.compile(r"(\"[^\"]*\"|'[^']*'|«[^»]*»)")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I)
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")


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


@functools.lru_cache(maxsize=4096)
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


@functools.lru_cache(maxsize=4096)
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
    """A random reference in the format of ``group_reference`` (``E-`` and 6 characters)."""
    return "E-" + "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(6))


def group_reference(fingerprint_: str) -> str:
    """The reference users are shown for the group ``fingerprint_``, known before anything
    is written: ``E-`` and 6 characters of the alphabet (30 bits) taken from the
    fingerprint's SHA-256, so every process shows the same reference for one group.

    The stored row keeps the reference its first writer gave it; when that is another one
    (a group first written by an older version, or the rare clash of two groups on the same
    30 bits) the shown one is written as an alias in the same statement
    (``error_reference_aliases``), so the admin's lookup finds the group by either.
    """
    bits = int.from_bytes(hashlib.sha256(fingerprint_.encode()).digest()[:4], "big") >> 2
    chars = [_REFERENCE_ALPHABET[(bits >> (5 * i)) & 31] for i in range(5, -1, -1)]
    return "E-" + "".join(chars)


def group_key(exc: BaseException) -> tuple[str, str, str]:
    """``(error type, grouping location, raw message)`` of ``exc``, read off the raw
    traceback (no frame extraction, no source lines, no masking): what decides the group
    before the fingerprint (which needs the masked message) is computed."""
    kind = type(exc)
    own: tuple[str, str] | None = None
    last: tuple[str, str] | None = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        last = (code.co_filename, code.co_name)
        if _in_app(code.co_filename):
            own = last
        tb = tb.tb_next
    chosen = own or last
    where = f"{_module_path(chosen[0])}:{chosen[1]}" if chosen else "unknown"
    return f"{kind.__module__}.{kind.__qualname__}", where, safe_str(exc)


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
