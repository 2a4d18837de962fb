"""``classify(exc)``: the design's error classification table as code.

Every exception that reaches the bot gets a :class:`Classification`: its category and
severity, whether repeating the operation may succeed and how (:class:`RetryStrategy`), and
for Telegram's 429 after how many seconds. ``docs/errors.md`` shows the table in one place.

Sources of the rules:

- PostgreSQL SQLSTATE codes, Appendix A of the PostgreSQL manual
  (https://www.postgresql.org/docs/current/errcodes-appendix.html). PostgreSQL errors are
  classified by their SQLSTATE (exact code first, then its two-character class), never by
  message text; asyncpg puts the code on every server error as ``exc.sqlstate`` and also on
  its client-side connection errors (``ConnectionDoesNotExistError`` is 08003).
- Telegram Bot API error answers (https://core.telegram.org/bots/api#making-requests,
  https://core.telegram.org/bots/faq): the HTTP status picks aiogram's exception class
  (429 ``TelegramRetryAfter`` with ``parameters.retry_after``, 403 ``TelegramForbiddenError``,
  5xx ``TelegramServerError``...). A 400 is told apart by its ``description`` text, the only
  thing Telegram gives ("Bad Request: chat not found", "Bad Request: message is not
  modified: ...").
- The project's own exceptions (``recovery.exceptions``) by class.

Strategies (who acts on them):

- ``TRANSACTION``: repeat the whole database transaction with bounded exponential backoff
  (``recovery.transactions``; safe because a failed transaction left nothing behind).
- ``BACKOFF``: a Telegram call that may succeed later; a failed send goes to the
  notification outbox, which retries with exponential backoff and full jitter.
- ``WAIT``: Telegram flood control: wait exactly ``retry_after`` seconds, no backoff.
- ``IMMEDIATE``: resend at once to ``migrate_to_chat_id`` (a group became a supergroup).
- ``NONE``: do not repeat; answer the user (data, business) or alert the admins (critical).

aiogram and asyncpg are imported lazily, so that the core classifies domain errors without
them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from recovery.connection_lost import (
    IN_FAILED_TRANSACTION,
    failed_transaction_cause,
    is_connection_lost,
    sqlstate_of,
)
from recovery.exceptions import (
    ConcurrentModificationError,
    DomainError,
    InputValidationError,
    InsufficientStockError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    TransactionInDoubtError,
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
    """How a retryable error is retried (see the module docstring)."""

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
        strategy: how to retry (``NONE`` when not retryable).
        permanent: retrying can never succeed for this target (blocked user, chat not found).
        ignore: harmless (e.g. "message is not modified"): recorded at low severity, the user
            is not told anything.
        mark_user_blocked: the recipient must be marked as unreachable.
        migrate_to_chat_id: the new chat id of a group that became a supergroup.
        code: the SQLSTATE or the Telegram HTTP status (``"429"``, ``"5xx"``), when known.
        reason: a short machine-readable reason (``deadlock``, ``bot_blocked``...); the user's
            message is chosen by it (``middlewares.error_messages``).
    """

    category: ErrorCategory
    severity: ErrorSeverity
    retryable: bool = False
    retry_after: float | None = None
    strategy: RetryStrategy = RetryStrategy.NONE
    permanent: bool = False
    ignore: bool = False
    mark_user_blocked: bool = False
    migrate_to_chat_id: int | None = None
    code: str | None = None
    reason: str = ""

    @property
    def alert_admins(self) -> bool:
        """Critical errors alert the admins (once per error group per alert window)."""
        return self.severity is ErrorSeverity.CRITICAL


C, S, R = ErrorCategory, ErrorSeverity, RetryStrategy


def _retry(
    reason: str,
    code: str | None = None,
    *,
    strategy: RetryStrategy = R.TRANSACTION,
    severity: ErrorSeverity = S.MEDIUM,
) -> Classification:
    """A transient error: repeating may succeed."""
    return Classification(C.TRANSIENT, severity, retryable=True, strategy=strategy, code=code,
                          reason=reason)  # fmt: skip


def _fail(
    category: ErrorCategory, severity: ErrorSeverity, reason: str, code: str | None = None
) -> Classification:
    """An error that repeating cannot fix."""
    return Classification(category, severity, code=code, reason=reason)


# --- PostgreSQL ---------------------------------------------------------------------------
# Exact SQLSTATE codes, checked before the classes below.
_SQLSTATE_CODES: dict[str, tuple[str, ...]] = {
    # (kind, reason[, severity]); kind "retry" = transient + TRANSACTION
    "40001": ("retry", "serialization_failure"),
    "40P01": ("retry", "deadlock"),
    "40002": ("data", "integrity_violation"),  # deferred constraint failed at COMMIT
    "57P01": ("retry", "admin_shutdown", "high"),
    "57P02": ("retry", "crash_shutdown", "high"),
    "57P03": ("retry", "cannot_connect_now", "high"),
    "57P04": ("system", "database_dropped", "critical"),
    "57P05": ("retry", "idle_session_timeout"),
    "57014": ("retry", "query_canceled"),  # statement_timeout or pg_cancel_backend
    "55P03": ("retry", "lock_not_available"),  # lock_timeout / NOWAIT
    "25P03": ("retry", "idle_in_transaction_timeout"),
    "25P04": ("retry", "transaction_timeout"),
}
# SQLSTATE classes (first two characters).
_SQLSTATE_CLASSES: dict[str, tuple[str, ...]] = {
    "08": ("retry", "connection_exception"),
    "40": ("retry", "transaction_rollback"),
    "53": ("system", "insufficient_resources", "critical"),  # disk full, OOM, connections
    "23": ("data", "integrity_violation"),
    "22": ("data", "data_exception"),
    "42": ("system", "schema_or_syntax", "critical"),  # undefined table/column: a bug or a
    # missing migration
    "28": ("system", "invalid_authorization", "critical"),
    "3D": ("system", "invalid_catalog_name", "critical"),  # the database does not exist
    "58": ("system", "system_io_error", "critical"),
    "XX": ("system", "internal_error", "critical"),  # e.g. data corrupted
    "54": ("system", "program_limit_exceeded", "high"),
}


def _from_row(row: tuple[str, ...], sqlstate: str) -> Classification:
    kind, reason = row[0], row[1]
    severity = S(row[2]) if len(row) > 2 else None
    if kind == "retry":
        return _retry(reason, sqlstate, severity=severity or S.MEDIUM)
    if kind == "data":
        return _fail(C.DATA, severity or S.MEDIUM, reason, sqlstate)
    return _fail(C.SYSTEM, severity or S.HIGH, reason, sqlstate)


def classify_sqlstate(sqlstate: str) -> Classification:
    """Classify a PostgreSQL error by its five-character SQLSTATE.

    The exact code wins over its class (``40002`` is data, the rest of class 40 transient);
    an unknown code is a system error of high severity.
    """
    row = _SQLSTATE_CODES.get(sqlstate) or _SQLSTATE_CLASSES.get(sqlstate[:2])
    if row is None:
        return _fail(C.SYSTEM, S.HIGH, "database_error", sqlstate)
    return _from_row(row, sqlstate)


# --- Telegram -----------------------------------------------------------------------------
# 400 descriptions (lower case substrings) -> verdict. Order matters: first match wins.
_BAD_REQUEST: tuple[tuple[tuple[str, ...], Classification], ...] = (
    (
        ("chat not found", "user not found", "peer_id_invalid", "user_is_blocked"),
        Classification(C.NOTIFICATION, S.LOW, permanent=True, mark_user_blocked=True,
                       code="400", reason="chat_not_found"),
    ),
    (
        ("not enough rights", "have no rights", "chat_write_forbidden", "chat_restricted"),
        Classification(C.NOTIFICATION, S.LOW, permanent=True, code="400", reason="no_rights"),
    ),
    (
        ("message is not modified",),
        Classification(C.NOTIFICATION, S.LOW, ignore=True, code="400",
                       reason="message_not_modified"),
    ),
    (
        ("query is too old", "query id is invalid"),
        Classification(C.NOTIFICATION, S.LOW, ignore=True, code="400", reason="query_too_old"),
    ),
    (
        ("message to edit not found", "message to delete not found", "message can't be edited",
         "message can't be deleted"),
        Classification(C.NOTIFICATION, S.LOW, ignore=True, code="400", reason="message_gone"),
    ),
    (
        ("can't parse entities", "can't find end of the entity", "unsupported start tag"),
        _fail(C.SYSTEM, S.HIGH, "parse_entities", "400"),  # an escaping bug of ours
    ),
    (
        ("message is too long", "message_too_long", "caption is too long", "text is too long"),
        _fail(C.SYSTEM, S.HIGH, "message_too_long", "400"),  # we sent more than Telegram takes
    ),
    (
        ("message text is empty", "text must be non-empty"),
        _fail(C.SYSTEM, S.HIGH, "empty_text", "400"),
    ),
    (
        ("button_data_invalid", "can't parse inline keyboard", "reply markup is too long",
         "can't parse reply keyboard"),
        _fail(C.SYSTEM, S.HIGH, "bad_markup", "400"),
    ),
    (
        ("wrong file identifier", "file must be non-empty", "image_process_failed",
         "photo_invalid_dimensions", "wrong type of the web page content"),
        _fail(C.DATA, S.MEDIUM, "bad_file", "400"),
    ),
    (
        ("message to be replied not found",),
        Classification(C.NOTIFICATION, S.MEDIUM, code="400", reason="reply_target_gone"),
    ),
)  # fmt: skip

_FORBIDDEN_REASONS: tuple[tuple[str, str], ...] = (
    ("blocked by the user", "bot_blocked"),
    ("user is deactivated", "user_deactivated"),
    ("kicked", "bot_kicked"),
    ("can't initiate conversation", "cannot_initiate"),
    ("not a member", "bot_not_member"),
)


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
    if isinstance(exc, tg.TelegramServerError):  # includes RestartingTelegram
        return _retry("telegram_server_error", "5xx", strategy=R.BACKOFF)
    if isinstance(exc, tg.TelegramEntityTooLarge):  # 413 (a subclass of the network error)
        return _fail(C.DATA, S.MEDIUM, "entity_too_large", "413")
    if isinstance(exc, tg.TelegramNetworkError):  # aiohttp errors and timeouts
        return _retry("telegram_network_error", None, strategy=R.BACKOFF)
    if isinstance(exc, tg.TelegramForbiddenError):
        text = exc.message.lower()
        reason = next((r for key, r in _FORBIDDEN_REASONS if key in text), "forbidden")
        return Classification(C.NOTIFICATION, S.LOW, permanent=True, mark_user_blocked=True,
                              code="403", reason=reason)  # fmt: skip
    if isinstance(exc, tg.TelegramUnauthorizedError):  # the token was revoked
        return _fail(C.SYSTEM, S.CRITICAL, "bad_token", "401")
    if isinstance(exc, tg.TelegramConflictError):  # another instance polls, or a webhook
        return _fail(C.SYSTEM, S.HIGH, "conflict", "409")
    if isinstance(exc, tg.TelegramNotFound):  # wrong method or API server URL
        return _fail(C.SYSTEM, S.HIGH, "api_not_found", "404")
    if isinstance(exc, tg.TelegramBadRequest):
        text = exc.message.lower()
        for keys, verdict in _BAD_REQUEST:
            if any(key in text for key in keys):
                return verdict
        return Classification(C.NOTIFICATION, S.MEDIUM, code="400", reason="bad_request")
    if isinstance(exc, tg.TelegramAPIError):
        return Classification(C.NOTIFICATION, S.MEDIUM, reason="telegram_error")
    if isinstance(exc, tg.ClientDecodeError):
        # not JSON at all (a proxy's HTML error page): transient; JSON that does not fit
        # aiogram's models: a version mismatch, a system error
        if isinstance(exc.original, ValueError) and not _is_validation_error(exc.original):
            return _retry("telegram_bad_response", None, strategy=R.BACKOFF)
        return _fail(C.SYSTEM, S.HIGH, "telegram_response_mismatch")
    return None


def _is_validation_error(exc: BaseException) -> bool:
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, ValidationError)


# --- domain -------------------------------------------------------------------------------
def _classify_domain(exc: DomainError) -> Classification:
    if isinstance(exc, InsufficientStockError):
        return _fail(C.INVENTORY, S.MEDIUM, "insufficient_stock")
    if isinstance(exc, ConcurrentModificationError):
        return _fail(C.BUSINESS_LOGIC, S.LOW, "concurrent_modification")
    if isinstance(exc, InvalidTransitionError):
        return _fail(C.BUSINESS_LOGIC, S.LOW, "invalid_transition")
    if isinstance(exc, PermissionDeniedError):
        return _fail(C.BUSINESS_LOGIC, S.MEDIUM, "permission_denied")
    if isinstance(exc, InputValidationError):
        return _fail(C.DATA, S.LOW, "validation")
    if isinstance(exc, NotFoundError):
        return _fail(C.DATA, S.LOW, "not_found")
    return _fail(C.BUSINESS_LOGIC, S.MEDIUM, "domain")


UNEXPECTED = Classification(C.SYSTEM, S.HIGH, reason="unexpected")
"""The safe default: an error nobody expected is a system error of high severity."""

OUTCOME_UNKNOWN = Classification(C.SYSTEM, S.HIGH, reason="outcome_unknown")
"""A transaction whose COMMIT answer was lost and could not be looked up afterwards: not
retried (the change may have happened; it is in ``transaction_log`` under its id)."""


def classify(exc: BaseException) -> Classification:
    """Classify any exception by the design's table; never raises.

    Order: the project's domain errors; a transaction whose outcome stayed unknown
    (``OUTCOME_UNKNOWN``); a 25P02 by the error that aborted its transaction when that is
    transient (``failed_transaction_cause``); PostgreSQL errors by SQLSTATE (asyncpg's server
    errors and its connection errors, which carry class 08 codes); Telegram errors (aiogram);
    the rest of the connection-lost family (``is_connection_lost``); timeouts
    (``asyncio.TimeoutError`` from asyncpg's ``command_timeout`` or a pool acquire timeout:
    retry the transaction); and finally the safe default, ``UNEXPECTED`` (system, high).

    An exception that wraps another (``raise DomainError(...) from exc``) is classified as
    itself: the wrapper is the project's own verdict.
    """
    try:
        return _classify(exc)
    except Exception:  # pragma: no cover - a bug here must not hide the original error
        return UNEXPECTED


def _classify(exc: BaseException) -> Classification:
    if isinstance(exc, DomainError):
        return _classify_domain(exc)
    if isinstance(exc, TransactionInDoubtError):
        return OUTCOME_UNKNOWN
    sqlstate = sqlstate_of(exc)
    if sqlstate == IN_FAILED_TRANSACTION:
        cause = failed_transaction_cause(exc)
        if cause is not None:  # the transaction died of a transient cause: classify that
            return replace(_classify(cause), code=IN_FAILED_TRANSACTION)
    if sqlstate is not None:
        return classify_sqlstate(sqlstate)
    telegram = _classify_telegram(exc)
    if telegram is not None:
        return telegram
    if is_connection_lost(exc):
        return _retry("connection_lost")
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is the same class
        return _retry("timeout")
    return UNEXPECTED
