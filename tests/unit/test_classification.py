"""``classify``: one test per row of the design's classification table (and its
extensions), built from real exception objects: asyncpg's own exception classes (each
carries its SQLSTATE), aiogram's exceptions as its session builds them from Telegram's JSON
error bodies, OS-level connection errors, and the project's domain errors.

Real server-side errors (PostgreSQL raising them) are in
``tests/integration/test_error_classification_pg.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import AiogramError, TelegramNetworkError
from aiogram.methods import SendMessage
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import (
    Classification,
    ErrorCategory,
    ErrorSeverity,
    RetryStrategy,
    classify,
)
from recovery.exceptions import (
    ConcurrentModificationError,
    DomainError,
    InputValidationError,
    InsufficientStockError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from tests.fakes.telegram_api import (
    BAD_GATEWAY,
    BOT_BLOCKED,
    CHAT_NOT_FOUND,
    DEFAULT_TOKEN,
    NOT_MODIFIED,
    QUERY_TOO_OLD,
    USER_DEACTIVATED,
    migrate_to_chat,
    retry_after,
)

C, S, R = ErrorCategory, ErrorSeverity, RetryStrategy
SESSION = AiohttpSession()
BOT = Bot(DEFAULT_TOKEN, session=SESSION)


def telegram_error(
    error_code: int, description: str, parameters: dict[str, Any] | None = None
) -> AiogramError:
    """The exception aiogram's session raises for Telegram's error body (the real parsing
    path of ``BaseSession.check_response``; the HTTP status equals ``error_code``)."""
    body: dict[str, Any] = {"ok": False, "error_code": error_code, "description": description}
    if parameters:
        body["parameters"] = parameters
    method = SendMessage(chat_id=42, text="hi")
    with pytest.raises(AiogramError) as info:
        SESSION.check_response(BOT, method, error_code, json.dumps(body))
    return info.value


def telegram_raw(status: int, content: str) -> AiogramError:
    """The exception for a body that is not Telegram's JSON (a proxy's error page)."""
    with pytest.raises(AiogramError) as info:
        SESSION.check_response(BOT, SendMessage(chat_id=42, text="hi"), status, content)
    return info.value


@dataclass(frozen=True)
class Row:
    """One row of the table: the exception and what classify must say."""

    make: Callable[[], BaseException]
    category: ErrorCategory
    severity: ErrorSeverity
    retryable: bool
    strategy: RetryStrategy
    reason: str
    permanent: bool = False
    ignore: bool = False
    mark_user_blocked: bool = False
    retry_after: float | None = None


E = asyncpg.exceptions
TABLE: dict[str, Row] = {
    # --- PostgreSQL: class 08 and dropped connections: transient, retry ----------------
    "08000 connection_exception": Row(
        lambda: E.PostgresConnectionError("connection exception"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "connection_exception",
    ),
    "08003 connection does not exist": Row(
        lambda: E.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "connection_exception",
    ),
    "08006 connection failure": Row(
        lambda: E.ConnectionFailureError("server closed the connection unexpectedly"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "connection_exception",
    ),
    "08001 client cannot connect": Row(
        lambda: E.ClientCannotConnectError("could not connect"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "connection_exception",
    ),
    "asyncpg: connection is closed": Row(
        lambda: asyncpg.InterfaceError("connection is closed"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "connection_lost",
    ),
    "asyncpg: a dead pooled connection was released": Row(
        lambda: asyncpg.InterfaceError(
            "cannot call Connection.fetchrow(): connection has been released back to the pool"
        ),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "connection_lost",
    ),
    "socket: connection reset": Row(
        lambda: ConnectionResetError(104, "Connection reset by peer"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "connection_lost",
    ),
    "socket: connection refused": Row(
        lambda: ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "connection_lost",
    ),
    "asyncio: several addresses refused": Row(
        lambda: OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432)"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "connection_lost",
    ),
    "pool acquire / command timeout": Row(
        lambda: TimeoutError(),  # asyncio.TimeoutError is TimeoutError
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "timeout",
    ),
    # --- 40001, 40P01: transient, retry the whole transaction ------------------------------
    "40001 serialization failure": Row(
        lambda: E.SerializationError("could not serialize access due to concurrent update"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "serialization_failure",
    ),
    "40P01 deadlock": Row(
        lambda: E.DeadlockDetectedError("deadlock detected"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "deadlock",
    ),
    # --- 57P01..57P03: transient, high -------------------------------------------------
    "57P01 admin shutdown": Row(
        lambda: E.AdminShutdownError("terminating connection due to administrator command"),
        C.TRANSIENT, S.HIGH, True, R.TRANSACTION, "admin_shutdown",
    ),
    "57P02 crash shutdown": Row(
        lambda: E.CrashShutdownError("terminating connection because of crash"),
        C.TRANSIENT, S.HIGH, True, R.TRANSACTION, "crash_shutdown",
    ),
    "57P03 cannot connect now": Row(
        lambda: E.CannotConnectNowError("the database system is starting up"),
        C.TRANSIENT, S.HIGH, True, R.TRANSACTION, "cannot_connect_now",
    ),
    # --- 53xxx: system, critical ------------------------------------------------------
    "53100 disk full": Row(
        lambda: E.DiskFullError("could not extend file: No space left on device"),
        C.SYSTEM, S.CRITICAL, False, R.NONE, "insufficient_resources",
    ),
    "53200 out of memory": Row(
        lambda: E.OutOfMemoryError("out of memory"),
        C.SYSTEM, S.CRITICAL, False, R.NONE, "insufficient_resources",
    ),
    "53300 too many connections": Row(
        lambda: E.TooManyConnectionsError("sorry, too many clients already"),
        C.SYSTEM, S.CRITICAL, False, R.NONE, "insufficient_resources",
    ),
    # --- 23xxx, 22xxx: data, no retry -------------------------------------------------
    "23505 unique violation": Row(
        lambda: E.UniqueViolationError('duplicate key value violates unique constraint "x"'),
        C.DATA, S.MEDIUM, False, R.NONE, "integrity_violation",
    ),
    "23503 foreign key violation": Row(
        lambda: E.ForeignKeyViolationError("insert or update violates foreign key constraint"),
        C.DATA, S.MEDIUM, False, R.NONE, "integrity_violation",
    ),
    "23514 check violation": Row(
        lambda: E.CheckViolationError('new row violates check constraint "users_role_check"'),
        C.DATA, S.MEDIUM, False, R.NONE, "integrity_violation",
    ),
    "22P02 invalid text representation": Row(
        lambda: E.InvalidTextRepresentationError('invalid input syntax for type integer: "x"'),
        C.DATA, S.MEDIUM, False, R.NONE, "data_exception",
    ),
    "22012 division by zero": Row(
        lambda: E.DivisionByZeroError("division by zero"),
        C.DATA, S.MEDIUM, False, R.NONE, "data_exception",
    ),
    "22001 string too long": Row(
        lambda: E.StringDataRightTruncationError("value too long for type character varying(5)"),
        C.DATA, S.MEDIUM, False, R.NONE, "data_exception",
    ),
    # --- 42xxx: system, critical (a bug or a missing migration) ------------------------
    "42P01 undefined table": Row(
        lambda: E.UndefinedTableError('relation "service_requests" does not exist'),
        C.SYSTEM, S.CRITICAL, False, R.NONE, "schema_or_syntax",
    ),
    "42703 undefined column": Row(
        lambda: E.UndefinedColumnError('column "versionn" does not exist'),
        C.SYSTEM, S.CRITICAL, False, R.NONE, "schema_or_syntax",
    ),
    "42601 syntax error": Row(
        lambda: E.PostgresSyntaxError('syntax error at or near "SELEC"'),
        C.SYSTEM, S.CRITICAL, False, R.NONE, "schema_or_syntax",
    ),
    # --- extensions of the table -----------------------------------------------------
    "57014 query canceled (statement_timeout)": Row(
        lambda: E.QueryCanceledError("canceling statement due to statement timeout"),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "query_canceled",
    ),
    "55P03 lock not available": Row(
        lambda: E.LockNotAvailableError('could not obtain lock on row in relation "x"'),
        C.TRANSIENT, S.MEDIUM, True, R.TRANSACTION, "lock_not_available",
    ),
    "40002 deferred constraint at commit": Row(
        lambda: E.TransactionIntegrityConstraintViolationError("integrity at commit"),
        C.DATA, S.MEDIUM, False, R.NONE, "integrity_violation",
    ),
    "28P01 wrong password": Row(
        lambda: E.InvalidPasswordError('password authentication failed for user "bot"'),
        C.SYSTEM, S.CRITICAL, False, R.NONE, "invalid_authorization",
    ),
    "3D000 database does not exist": Row(
        lambda: E.InvalidCatalogNameError('database "bot" does not exist'),
        C.SYSTEM, S.CRITICAL, False, R.NONE, "invalid_catalog_name",
    ),
    "XX000 internal error": Row(
        lambda: E.InternalServerError("unexpected chunk number"),
        C.SYSTEM, S.CRITICAL, False, R.NONE, "internal_error",
    ),
    "0A000 other SQLSTATE: system high": Row(
        lambda: E.FeatureNotSupportedError("cannot use window function here"),
        C.SYSTEM, S.HIGH, False, R.NONE, "database_error",
    ),
    # --- Telegram 429: transient, wait exactly retry_after, no backoff -----------------
    "429 Too Many Requests: retry after 35": Row(
        lambda: telegram_error(**retry_after(35)),
        C.TRANSIENT, S.MEDIUM, True, R.WAIT, "flood_wait", retry_after=35.0,
    ),
    # --- Telegram 5xx and network errors: transient, exponential backoff ----------------
    "502 Bad Gateway": Row(
        lambda: telegram_error(**BAD_GATEWAY),
        C.TRANSIENT, S.MEDIUM, True, R.BACKOFF, "telegram_server_error",
    ),
    "500 Internal Server Error": Row(
        lambda: telegram_error(500, "Internal Server Error"),
        C.TRANSIENT, S.MEDIUM, True, R.BACKOFF, "telegram_server_error",
    ),
    "500 restart (RestartingTelegram)": Row(
        lambda: telegram_error(500, "Internal Server Error: restart"),
        C.TRANSIENT, S.MEDIUM, True, R.BACKOFF, "telegram_server_error",
    ),
    "network: request timeout": Row(
        lambda: TelegramNetworkError(SendMessage(chat_id=1, text="x"), "Request timeout error"),
        C.TRANSIENT, S.MEDIUM, True, R.BACKOFF, "telegram_network_error",
    ),
    "502 with an HTML body (a proxy)": Row(
        lambda: telegram_raw(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
        C.TRANSIENT, S.MEDIUM, True, R.BACKOFF, "telegram_bad_response",
    ),
    # --- Telegram 403: notification, permanent, mark the user, no alert ----------------
    "403 bot was blocked by the user": Row(
        lambda: telegram_error(**BOT_BLOCKED),
        C.NOTIFICATION, S.LOW, False, R.NONE, "bot_blocked",
        permanent=True, mark_user_blocked=True,
    ),
    "403 user is deactivated": Row(
        lambda: telegram_error(**USER_DEACTIVATED),
        C.NOTIFICATION, S.LOW, False, R.NONE, "user_deactivated",
        permanent=True, mark_user_blocked=True,
    ),
    "403 bot was kicked": Row(
        lambda: telegram_error(403, "Forbidden: bot was kicked from the group chat"),
        C.NOTIFICATION, S.LOW, False, R.NONE, "bot_kicked",
        permanent=True, mark_user_blocked=True,
    ),
    "403 can't initiate conversation": Row(
        lambda: telegram_error(403, "Forbidden: bot can't initiate conversation with a user"),
        C.NOTIFICATION, S.LOW, False, R.NONE, "cannot_initiate",
        permanent=True, mark_user_blocked=True,
    ),
    # --- Telegram 400 by description -----------------------------------------------------
    "400 chat not found": Row(
        lambda: telegram_error(**CHAT_NOT_FOUND),
        C.NOTIFICATION, S.LOW, False, R.NONE, "chat_not_found",
        permanent=True, mark_user_blocked=True,
    ),
    "400 message is not modified": Row(
        lambda: telegram_error(400, NOT_MODIFIED),
        C.NOTIFICATION, S.LOW, False, R.NONE, "message_not_modified", ignore=True,
    ),
    "400 query is too old": Row(
        lambda: telegram_error(400, QUERY_TOO_OLD),
        C.NOTIFICATION, S.LOW, False, R.NONE, "query_too_old", ignore=True,
    ),
    "400 can't parse entities": Row(
        lambda: telegram_error(
            400, 'Bad Request: can\'t parse entities: Unsupported start tag "br" at byte offset 5'
        ),
        C.SYSTEM, S.HIGH, False, R.NONE, "parse_entities",
    ),
    "400 message to edit not found": Row(
        lambda: telegram_error(400, "Bad Request: message to edit not found"),
        C.NOTIFICATION, S.LOW, False, R.NONE, "message_gone", ignore=True,
    ),
    "400 message is too long": Row(
        lambda: telegram_error(400, "Bad Request: message is too long"),
        C.SYSTEM, S.HIGH, False, R.NONE, "message_too_long",
    ),
    "400 group upgraded to a supergroup": Row(
        lambda: telegram_error(**migrate_to_chat(-1001234567890)),
        C.NOTIFICATION, S.LOW, True, R.IMMEDIATE, "migrated_to_supergroup",
    ),
    "400 any other description": Row(
        lambda: telegram_error(400, "Bad Request: TOPIC_CLOSED"),
        C.NOTIFICATION, S.MEDIUM, False, R.NONE, "bad_request",
    ),
    "401 Unauthorized (token revoked)": Row(
        lambda: telegram_error(401, "Unauthorized"),
        C.SYSTEM, S.CRITICAL, False, R.NONE, "bad_token",
    ),
    "409 Conflict (another getUpdates)": Row(
        lambda: telegram_error(409, "Conflict: terminated by other getUpdates request"),
        C.SYSTEM, S.HIGH, False, R.NONE, "conflict",
    ),
    "413 Request Entity Too Large": Row(
        lambda: telegram_error(413, "Request Entity Too Large"),
        C.DATA, S.MEDIUM, False, R.NONE, "entity_too_large",
    ),
    # --- domain errors ----------------------------------------------------------------
    "insufficient stock -> inventory": Row(
        lambda: InsufficientStockError(7, requested=5, available=2),
        C.INVENTORY, S.MEDIUM, False, R.NONE, "insufficient_stock",
    ),
    "invalid transition -> business_logic": Row(
        lambda: InvalidTransitionError(12, "completed", "terminal"),
        C.BUSINESS_LOGIC, S.LOW, False, R.NONE, "invalid_transition",
    ),
    "permission denied -> business_logic": Row(
        lambda: PermissionDeniedError("advance", "client"),
        C.BUSINESS_LOGIC, S.MEDIUM, False, R.NONE, "permission_denied",
    ),
    "concurrent modification -> business_logic": Row(
        lambda: ConcurrentModificationError("request", 12, expected_version=3),
        C.BUSINESS_LOGIC, S.LOW, False, R.NONE, "concurrent_modification",
    ),
    "input validation -> data": Row(
        lambda: InputValidationError("description", "longer than 1000"),
        C.DATA, S.LOW, False, R.NONE, "validation",
    ),
    "not found -> data": Row(
        lambda: NotFoundError("request", 404),
        C.DATA, S.LOW, False, R.NONE, "not_found",
    ),
    "other domain error -> business_logic": Row(
        lambda: DomainError("some rule"),
        C.BUSINESS_LOGIC, S.MEDIUM, False, R.NONE, "domain",
    ),
    # --- anything else: the safe default -------------------------------------------------
    "KeyError -> system high": Row(
        lambda: KeyError("workflow_type"), C.SYSTEM, S.HIGH, False, R.NONE, "unexpected"
    ),
    "ZeroDivisionError -> system high": Row(
        lambda: ZeroDivisionError("division by zero"),
        C.SYSTEM, S.HIGH, False, R.NONE, "unexpected",
    ),
    "a file error is not a connection error": Row(
        lambda: FileNotFoundError(2, "No such file or directory", "/data/x"),
        C.SYSTEM, S.HIGH, False, R.NONE, "unexpected",
    ),
    "asyncpg misuse is not a dropped connection": Row(
        lambda: asyncpg.InterfaceError(
            "cannot perform operation: another operation is in progress"
        ),
        C.SYSTEM, S.HIGH, False, R.NONE, "unexpected",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(TABLE))
def test_classification_table_row(name: str) -> None:
    row = TABLE[name]
    verdict = classify(row.make())
    assert (verdict.category, verdict.severity) == (row.category, row.severity)
    assert verdict.retryable is row.retryable
    assert verdict.strategy is row.strategy
    assert verdict.reason == row.reason
    assert verdict.permanent is row.permanent
    assert verdict.ignore is row.ignore
    assert verdict.mark_user_blocked is row.mark_user_blocked
    assert verdict.retry_after == row.retry_after
    assert verdict.alert_admins is (row.severity is S.CRITICAL)


def test_the_telegram_exceptions_are_the_ones_aiogram_raises() -> None:
    from aiogram import exceptions as tg

    assert type(telegram_error(**retry_after(35))) is tg.TelegramRetryAfter
    assert type(telegram_error(**BOT_BLOCKED)) is tg.TelegramForbiddenError
    assert type(telegram_error(400, NOT_MODIFIED)) is tg.TelegramBadRequest
    assert type(telegram_error(**BAD_GATEWAY)) is tg.TelegramServerError
    assert type(telegram_error(500, "Internal Server Error: restart")) is tg.RestartingTelegram
    assert type(telegram_error(**migrate_to_chat())) is tg.TelegramMigrateToChat
    assert type(telegram_raw(502, "<html>Bad Gateway</html>")) is tg.ClientDecodeError


async def test_an_unreachable_bot_api_is_a_network_error_retried_with_backoff() -> None:
    # a real connection attempt to a port nobody listens on
    session = AiohttpSession(api=TelegramAPIServer.from_base("http://127.0.0.1:9"))
    bot = Bot(DEFAULT_TOKEN, session=session)
    try:
        with pytest.raises(TelegramNetworkError) as info:
            await bot.get_me()
    finally:
        await session.close()
    verdict = classify(info.value)
    assert verdict.category is C.TRANSIENT
    assert verdict.strategy is R.BACKOFF
    assert verdict.retryable


def test_sqlstate_decides_not_the_message_text() -> None:
    # a unique violation whose text mentions a deadlock is still a data error ...
    misleading = asyncpg.exceptions.UniqueViolationError("deadlock detected, too many clients")
    assert classify(misleading).category is C.DATA
    # ... and a deadlock is transient whatever its text says
    silent = asyncpg.exceptions.DeadlockDetectedError("")
    assert classify(silent).strategy is R.TRANSACTION


def test_a_domain_error_raised_from_a_driver_error_is_classified_as_itself() -> None:
    try:
        try:
            raise asyncpg.exceptions.ForeignKeyViolationError("fk")
        except asyncpg.exceptions.ForeignKeyViolationError as exc:
            raise NotFoundError("material", 9) from exc
    except NotFoundError as wrapped:
        assert classify(wrapped).reason == "not_found"


def test_classify_never_raises_on_odd_exceptions() -> None:
    class Odd(Exception):
        sqlstate = 12345  # not a string

        def __str__(self) -> str:
            raise RuntimeError("broken __str__")

    verdict = classify(Odd())
    assert verdict.category is C.SYSTEM
    assert verdict.severity is S.HIGH


SQLSTATE_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@given(st.text(alphabet=SQLSTATE_CHARS, min_size=5, max_size=5))
def test_every_sqlstate_gets_a_consistent_verdict(sqlstate: str) -> None:
    from recovery.classification import classify_sqlstate

    verdict: Classification = classify_sqlstate(sqlstate)
    assert verdict.code == sqlstate
    # database errors are either retried as a whole transaction or not at all
    assert verdict.strategy in (R.TRANSACTION, R.NONE)
    assert verdict.retryable is (verdict.strategy is R.TRANSACTION)
    assert verdict.retryable is (verdict.category is C.TRANSIENT)
    if sqlstate[:2] in ("23", "22"):
        assert verdict.category is C.DATA
    if sqlstate[:2] in ("42", "53"):
        assert verdict.severity is S.CRITICAL
    if sqlstate[:2] == "08":
        assert verdict.retryable
