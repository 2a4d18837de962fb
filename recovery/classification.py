"""``classify(exc)``: the design's error classification table as code.

Sources of the rules:
- PostgreSQL SQLSTATE codes, Appendix A of the PostgreSQL manual
  (https://www.postgresql.org/docs/current/errcodes-appendix.html): class 08 connection
  exceptions, 40001 serialization_failure, 40P01 deadlock_detected, 57P01..57P03
  admin_shutdown / crash_shutdown / cannot_connect_now, class 53 insufficient resources,
  class 23 integrity constraint violations, class 22 data exceptions, class 42 syntax error or
  access rule violation.
- Telegram Bot API error answers (https://core.telegram.org/bots/api#making-requests and
  https://core.telegram.org/bots/faq): 429 with ``parameters.retry_after``, 403 when the bot
  was blocked / the user deactivated / the bot kicked, 400 descriptions such as
  "Bad Request: chat not found", 5xx on Telegram's side.

The aiogram exception classes are imported lazily, so that the core does not need aiogram
to classify database or domain errors.
"""

from __future__ import annotations

import asyncio
import enum
import socket
from dataclasses import dataclass

from recovery.exceptions import (
    ConcurrentModificationError,
    DomainError,
    InputValidationError,
    InsufficientStockError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)


class ErrorCategory(enum.StrEnum):
    """What kind of failure an error is; decides the handling strategy."""

    TRANSIENT = "transient"
    DATA = "data"
    BUSINESS_LOGIC = "business_logic"
    SYSTEM = "system"
    INVENTORY = "inventory"
    NOTIFICATION = "notification"


class ErrorSeverity(enum.StrEnum):
    """How bad an error is. ``critical`` alerts the admins."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class RetryStrategy(enum.StrEnum):
    """How a retryable error is retried."""

    NONE = "none"
    BACKOFF = "backoff"  # exponential backoff with full jitter
    WAIT = "wait"  # wait exactly retry_after seconds (Telegram 429), no backoff
    TRANSACTION = "transaction"  # retry the whole database transaction
    IMMEDIATE = "immediate"  # retry at once (a chat that migrated to a supergroup)


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one exception.

    Attributes:
        category, severity: see the enums.
        retryable: repeating the same operation may succeed.
        retry_after: seconds to wait before the retry (Telegram 429), else None.
        strategy: how to retry.
        permanent: retrying can never succeed for this target (blocked user, chat not found).
        ignore: harmless, log at debug and carry on ("message is not modified").
        alert_admins: admins are alerted (critical errors).
        mark_user_blocked: the recipient must be marked as unreachable.
        migrate_to_chat_id: the new chat id of a group that became a supergroup.
        code: the SQLSTATE or the Telegram error code, when there is one.
        reason: a short machine-readable reason (``deadlock``, ``bot_blocked``...).
    """

    category: ErrorCategory
    severity: ErrorSeverity
    retryable: bool = False
    retry_after: float | None = None
    strategy: RetryStrategy = RetryStrategy.NONE
    permanent: bool = False
    ignore: bool = False
    alert_admins: bool = False
    mark_user_blocked: bool = False
    migrate_to_chat_id: int | None = None
    code: str | None = None
    reason: str = ""


C, S, R = ErrorCategory, ErrorSeverity, RetryStrategy


def _transient(
    reason: str, code: str | None = None, *, strategy: R = R.TRANSACTION, severity: S = S.MEDIUM
) -> Classification:
    return Classification(C.TRANSIENT, severity, retryable=True, strategy=strategy,
                          code=code, reason=reason)  # fmt: skip


def classify_sqlstate(sqlstate: str) -> Classification:
    """Classify a PostgreSQL error by its five-character SQLSTATE (class = first two)."""
    klass = sqlstate[:2]
    if sqlstate in ("40001", "40P01"):
        reason = "serialization_failure" if sqlstate == "40001" else "deadlock"
        return _transient(reason, sqlstate)
    if sqlstate in ("57P01", "57P02", "57P03"):
        return _transient("server_shutdown", sqlstate, severity=S.HIGH)
    if klass == "08":
        return _transient("connection_exception", sqlstate)
    if klass == "53":
        return Classification(C.SYSTEM, S.CRITICAL, alert_admins=True, code=sqlstate,
                              reason="insufficient_resources")  # fmt: skip
    if klass == "23":
        return Classification(C.DATA, S.MEDIUM, code=sqlstate, reason="integrity_violation")
    if klass == "22":
        return Classification(C.DATA, S.MEDIUM, code=sqlstate, reason="data_exception")
    if klass == "42":
        return Classification(C.SYSTEM, S.CRITICAL, alert_admins=True, code=sqlstate,
                              reason="schema_or_syntax")  # fmt: skip
    if sqlstate == "57014":  # query_canceled (statement_timeout)
        return _transient("query_canceled", sqlstate)
    return Classification(C.SYSTEM, S.HIGH, code=sqlstate, reason="database_error")


def _classify_telegram(exc: BaseException) -> Classification | None:
    try:
        from aiogram import exceptions as tg
    except ImportError:  # pragma: no cover - aiogram is a dependency of the bot
        return None
    if not isinstance(exc, tg.AiogramError):
        return None
    if isinstance(exc, tg.TelegramRetryAfter):
        return Classification(C.TRANSIENT, S.MEDIUM, retryable=True,
                              retry_after=float(exc.retry_after), strategy=R.WAIT,
                              code="429", reason="flood_wait")  # fmt: skip
    if isinstance(exc, tg.TelegramMigrateToChat):
        return Classification(C.NOTIFICATION, S.LOW, retryable=True, strategy=R.IMMEDIATE,
                              migrate_to_chat_id=exc.migrate_to_chat_id, code="400",
                              reason="migrated_to_supergroup")  # fmt: skip
    if isinstance(exc, tg.TelegramServerError):
        return _transient("telegram_server_error", "5xx", strategy=R.BACKOFF)
    if isinstance(exc, tg.TelegramNetworkError):
        return _transient("telegram_network_error", None, strategy=R.BACKOFF)
    if isinstance(exc, tg.TelegramForbiddenError):
        return Classification(C.NOTIFICATION, S.LOW, permanent=True, mark_user_blocked=True,
                              code="403", reason="bot_blocked")  # fmt: skip
    if isinstance(exc, tg.TelegramUnauthorizedError):
        return Classification(C.SYSTEM, S.CRITICAL, code="401", reason="bad_token")
    if isinstance(exc, tg.TelegramBadRequest):
        text = exc.message.lower()
        if "chat not found" in text or "user not found" in text or "peer_id_invalid" in text:
            return Classification(C.NOTIFICATION, S.LOW, permanent=True,
                                  mark_user_blocked=True, code="400",
                                  reason="chat_not_found")  # fmt: skip
        if "message is not modified" in text:
            return Classification(C.NOTIFICATION, S.LOW, ignore=True, code="400",
                                  reason="message_not_modified")  # fmt: skip
        if "query is too old" in text or "query id is invalid" in text:
            return Classification(C.NOTIFICATION, S.LOW, ignore=True, code="400",
                                  reason="query_too_old")  # fmt: skip
        if "can't parse entities" in text or "can't find end of the entity" in text:
            return Classification(C.SYSTEM, S.HIGH, code="400", reason="parse_entities")
        if "message to edit not found" in text or "message to delete not found" in text:
            return Classification(C.NOTIFICATION, S.LOW, ignore=True, code="400",
                                  reason="message_gone")  # fmt: skip
        return Classification(C.NOTIFICATION, S.MEDIUM, code="400", reason="bad_request")
    if isinstance(exc, tg.TelegramAPIError):
        return Classification(C.NOTIFICATION, S.MEDIUM, code=None, reason="telegram_error")
    return None


def classify(exc: BaseException) -> Classification:
    """Classify any exception by the design's table; never raises.

    Order: the project's domain errors, PostgreSQL errors by SQLSTATE (not by message text),
    asyncpg client-side connection errors, Telegram errors, timeouts and OS-level connection
    errors, and finally the safe default (system, high).
    """
    if isinstance(exc, DomainError):
        return _classify_domain(exc)
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return classify_sqlstate(sqlstate)
    telegram = _classify_telegram(exc)
    if telegram is not None:
        return telegram
    if _is_connection_error(exc):
        return _transient("connection_lost", None)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return _transient("timeout", None)
    return Classification(C.SYSTEM, S.HIGH, reason="unexpected")


def _classify_domain(exc: DomainError) -> Classification:
    if isinstance(exc, InsufficientStockError):
        return Classification(C.INVENTORY, S.MEDIUM, reason="insufficient_stock")
    if isinstance(exc, ConcurrentModificationError):
        return Classification(C.BUSINESS_LOGIC, S.LOW, reason="concurrent_modification")
    if isinstance(exc, InvalidTransitionError):
        return Classification(C.BUSINESS_LOGIC, S.LOW, reason="invalid_transition")
    if isinstance(exc, PermissionDeniedError):
        return Classification(C.BUSINESS_LOGIC, S.MEDIUM, reason="permission_denied")
    if isinstance(exc, InputValidationError):
        return Classification(C.DATA, S.LOW, reason="validation")
    if isinstance(exc, NotFoundError):
        return Classification(C.DATA, S.LOW, reason="not_found")
    return Classification(C.BUSINESS_LOGIC, S.MEDIUM, reason="domain")


def _is_connection_error(exc: BaseException) -> bool:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover
        asyncpg = None  # type: ignore[assignment]
    if asyncpg is not None:
        if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError):
            return True
        if isinstance(exc, asyncpg.InterfaceError) and "connection" in str(exc).lower():
            return True
        if isinstance(exc, asyncpg.exceptions.ConnectionFailureError):
            return True
    return isinstance(exc, ConnectionError | socket.gaierror | BrokenPipeError) or (
        isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError)
    )
