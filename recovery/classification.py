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
import errno
import socket
from dataclasses import dataclass, replace

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


# --- connection errors and timeouts -------------------------------------------------------
_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EHOSTUNREACH",
                 "ENETUNREACH", "ENETDOWN", "EPIPE", "ENOTCONN", "EHOSTDOWN")
    if hasattr(errno, name)
)  # fmt: skip


# asyncpg's own texts for a connection that is gone (an ``InterfaceError`` has no SQLSTATE;
# asyncpg/connection.py, pool.py, connresource.py, protocol/protocol.pyx). A pooled
# connection whose server process died is released by the pool at once, so the caller's next
# statement says "released back to the pool"; the same text after a misuse of a released
# proxy is a bug, but a whole-transaction retry costs a bounded few attempts there, while not
# retrying a dropped connection loses the operation.
_ASYNCPG_CONNECTION_GONE = (
    "connection is closed",
    "the underlying connection is closed",
    "connection has been released back to the pool",
)
# asyncpg's ``InternalClientError`` of a protocol the server broke off (protocol/coreproto.pyx,
# ``_set_state``): a FATAL that arrives while no statement waits for it (e.g. 57P01 from
# ``pg_terminate_backend`` of an idle or idle-in-transaction backend) leaves the protocol
# consuming an error, and the next statement, or the reset at ``pool.release()``, is refused
# with "cannot switch to state 12; another operation (2) is in progress".
_ASYNCPG_PROTOCOL_BROKEN = "cannot switch to state"

# SQLSTATEs (PostgreSQL manual, Appendix A) of a connection the server ended or refuses,
# besides class 08 connection_exception (asyncpg's ConnectionDoesNotExistError is 08003):
# 57P01 admin_shutdown (pg_terminate_backend, a fast shutdown), 57P02 crash_shutdown,
# 57P03 cannot_connect_now (the server is starting or stopping).
_CONNECTION_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
# 40001 serialization_failure and 40P01 deadlock_detected: the server aborted the transaction,
# and a new transaction may succeed.
_TRANSACTION_ABORTED_SQLSTATES = frozenset({"40001", "40P01"})
IN_FAILED_TRANSACTION = "25P02"
"""SQLSTATE in_failed_sql_transaction: a statement sent after the transaction was aborted."""


def _sqlstate(exc: BaseException) -> str | None:
    code = getattr(exc, "sqlstate", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def _is_connection_gone(exc: BaseException) -> bool:
    """The connection itself is gone or refused (no 25P02 rule): class 08 and 57P01-57P03,
    asyncpg's texts above, and dropped or refused sockets told by type and errno."""
    sqlstate = _sqlstate(exc)
    if sqlstate is not None:
        return sqlstate[:2] == "08" or sqlstate in _CONNECTION_LOST_SQLSTATES
    if isinstance(exc, ConnectionError | socket.gaierror):  # refused, reset, aborted, pipe
        return True
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        if exc.errno in _NETWORK_ERRNOS:
            return True
        # asyncio's create_connection over several addresses: "Multiple exceptions: [Errno
        # 111] Connect call failed ..." with errno None
        return exc.errno is None and "connect call failed" in str(exc).lower()
    try:
        import asyncpg
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, asyncpg.InternalClientError):
        return _ASYNCPG_PROTOCOL_BROKEN in str(exc)
    if isinstance(exc, asyncpg.InterfaceError):
        text = str(exc)
        return any(phrase in text for phrase in _ASYNCPG_CONNECTION_GONE)
    return False


def failed_transaction_cause(exc: BaseException) -> BaseException | None:
    """For a 25P02 (in_failed_sql_transaction): the exception that aborted the transaction,
    when it is a lost connection or 40001/40P01, found in the ``__cause__``/``__context__``
    chain (a statement run while handling the first error); None otherwise, and for any
    other exception."""
    if _sqlstate(exc) != IN_FAILED_TRANSACTION:
        return None
    seen: set[int] = {id(exc)}
    pending = [exc.__cause__, exc.__context__]
    while pending:
        link = pending.pop(0)
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        if _is_connection_gone(link) or _sqlstate(link) in _TRANSACTION_ABORTED_SQLSTATES:
            return link
        pending += [link.__cause__, link.__context__]
    return None


def is_connection_lost(exc: BaseException) -> bool:
    """True when ``exc`` says the database connection (and with it the open transaction) is
    lost, so that the work can only be repeated as a whole, on another connection.

    The family (one transient class, ``classify`` reason ``connection_lost`` or its SQLSTATE's
    reason):

    - SQLSTATE class 08 (asyncpg's ``ConnectionDoesNotExistError``, 08003, "connection was
      closed in the middle of operation"), 57P01 admin_shutdown, 57P02 crash_shutdown,
      57P03 cannot_connect_now;
    - asyncpg's ``InternalClientError`` "cannot switch to state ..." (a FATAL that arrived
      between statements, e.g. at ``pool.release()`` after a terminated backend);
    - asyncpg's ``InterfaceError`` on a closed connection or one released to the pool;
    - a dropped or refused socket (``ConnectionError``, ECONNRESET, EPIPE, ...);
    - 25P02 in_failed_sql_transaction whose ``__cause__``/``__context__`` chain holds one of
      these or 40001/40P01 (``failed_transaction_cause``).

    Whether a COMMIT that failed this way took effect is unknown: the state manager looks it
    up in ``transaction_log`` (``recovery.transactions``). Never raises.
    """
    try:
        return _is_connection_gone(exc) or failed_transaction_cause(exc) is not None
    except Exception:  # pragma: no cover - a predicate must not raise
        return False


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
    sqlstate = _sqlstate(exc)
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
