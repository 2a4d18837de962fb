"""``classify`` on errors a real PostgreSQL raises: the SQLSTATE rows of the table provoked
for real (integrity and data errors, undefined table and column, serialization failure,
deadlock, statement timeout, lock timeout, a terminated backend, too many connections, a
missing database, a refused connection and a pool acquire timeout), and the connection-lost
family (``is_connection_lost``) as asyncpg reports it after ``pg_terminate_backend``, on a
closed connection and as a 25P02 after a deadlock."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from recovery.connection_lost import is_connection_lost
from recovery.errors import ErrorCategory, ErrorSeverity, RetryStrategy, classify
from tests.conftest import with_database
from tests.factories import make_user

C, S, R = ErrorCategory, ErrorSeverity, RetryStrategy


def _with_user(dsn: str, user: str) -> str:
    """``dsn`` logging in as ``user`` (no password: the test server trusts local users)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


async def _raised(action: Callable[[], Awaitable[object]]) -> BaseException:
    try:
        await action()
    except Exception as exc:
        return exc
    raise AssertionError("no error was raised")


async def test_integrity_violations_are_data_errors(pool: asyncpg.Pool) -> None:
    user = await make_user(pool)
    unique = await _raised(
        lambda: pool.execute(
            "INSERT INTO users (telegram_id, full_name) VALUES ($1, 'x')", user["telegram_id"]
        )
    )
    foreign = await _raised(
        lambda: pool.execute(
            "INSERT INTO service_requests (workflow_type, client_id, current_state) "
            "VALUES ('repair', 999999, 'new')"
        )
    )
    check = await _raised(
        lambda: pool.execute("INSERT INTO users (telegram_id, role) VALUES (1, 'pirate')")
    )
    for exc, sqlstate in ((unique, "23505"), (foreign, "23503"), (check, "23514")):
        assert exc.sqlstate == sqlstate  # type: ignore[attr-defined]
        verdict = classify(exc)
        assert (verdict.category, verdict.retryable) == (C.DATA, False)
        assert verdict.code == sqlstate


async def test_data_exceptions_are_data_errors(pool: asyncpg.Pool) -> None:
    bad_int = await _raised(lambda: pool.fetchval("SELECT 'abc'::int"))
    by_zero = await _raised(lambda: pool.fetchval("SELECT 1 / 0"))
    assert bad_int.sqlstate == "22P02"  # type: ignore[attr-defined]
    assert by_zero.sqlstate == "22012"  # type: ignore[attr-defined]
    for exc in (bad_int, by_zero):
        assert classify(exc).category is C.DATA
        assert not classify(exc).retryable


async def test_undefined_table_column_and_syntax_are_critical_system_errors(
    pool: asyncpg.Pool,
) -> None:
    table = await _raised(lambda: pool.fetch("SELECT * FROM service_requestz"))
    column = await _raised(lambda: pool.fetch("SELECT versionn FROM service_requests"))
    syntax = await _raised(lambda: pool.fetch("SELEC 1"))
    for exc, sqlstate in ((table, "42P01"), (column, "42703"), (syntax, "42601")):
        verdict = classify(exc)
        assert verdict.code == sqlstate
        assert (verdict.category, verdict.severity) == (C.SYSTEM, S.CRITICAL)
        assert verdict.alert_admins
        assert not verdict.retryable


async def test_serialization_failure_retries_the_whole_transaction(pool: asyncpg.Pool) -> None:
    user = await make_user(pool)
    async with pool.acquire() as first, pool.acquire() as second:
        tx = first.transaction(isolation="repeatable_read")
        await tx.start()
        try:
            await first.fetchval("SELECT full_name FROM users WHERE id = $1", user["id"])
            await second.execute("UPDATE users SET full_name = 'b' WHERE id = $1", user["id"])
            exc = await _raised(
                lambda: first.execute("UPDATE users SET full_name = 'a' WHERE id = $1", user["id"])
            )
        finally:
            await tx.rollback()
    assert exc.sqlstate == "40001"  # type: ignore[attr-defined]
    verdict = classify(exc)
    assert (verdict.category, verdict.strategy, verdict.retryable) == (
        C.TRANSIENT,
        R.TRANSACTION,
        True,
    )


async def _deadlock_victim(pool: asyncpg.Pool, *, go_on: bool = False) -> BaseException:
    """Two transactions update two users in opposite orders; returns what the victim got:
    the deadlock (40P01), or with ``go_on`` the error of a statement it then runs in the
    aborted transaction while handling the deadlock (25P02; in the handling frame, where
    CPython chains ``__context__``, not inside a coroutine that frame awaits)."""
    a = await make_user(pool)
    b = await make_user(pool)
    async with pool.acquire() as one, pool.acquire() as two:
        for conn in (one, two):
            await conn.execute("SET deadlock_timeout = '50ms'")
        tx1, tx2 = one.transaction(), two.transaction()
        await tx1.start()
        await tx2.start()
        await one.execute("UPDATE users SET full_name = '1' WHERE id = $1", a["id"])
        await two.execute("UPDATE users SET full_name = '2' WHERE id = $1", b["id"])

        async def cross(conn: asyncpg.Connection, row_id: int) -> BaseException | None:
            try:
                await conn.execute("UPDATE users SET full_name = 'x' WHERE id = $1", row_id)
            except asyncpg.PostgresError as exc:
                if not go_on:
                    return exc
                try:
                    await conn.fetchval("SELECT 1")
                except asyncpg.PostgresError as then:
                    return then
            return None

        results = await asyncio.gather(cross(one, b["id"]), cross(two, a["id"]))
        await tx1.rollback()
        await tx2.rollback()
    (exc,) = [r for r in results if r is not None]
    return exc


async def test_deadlock_retries_the_whole_transaction(pool: asyncpg.Pool) -> None:
    exc = await _deadlock_victim(pool)
    assert exc.sqlstate == "40P01"  # type: ignore[attr-defined]
    assert classify(exc).strategy is R.TRANSACTION
    assert classify(exc).reason == "deadlock"


async def test_statement_timeout_and_lock_timeout_are_transient(pool: asyncpg.Pool) -> None:
    user = await make_user(pool)
    async with pool.acquire() as conn:
        await conn.execute("SET statement_timeout = '50ms'")
        canceled = await _raised(lambda: conn.execute("SELECT pg_sleep(2)"))
        await conn.execute("RESET statement_timeout")
    async with pool.acquire() as holder, pool.acquire() as waiter:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user["id"])
        locked = await _raised(
            lambda: waiter.execute(
                "SELECT 1 FROM users WHERE id = $1 FOR UPDATE NOWAIT", user["id"]
            )
        )
        await tx.rollback()
    assert canceled.sqlstate == "57014"  # type: ignore[attr-defined]
    assert locked.sqlstate == "55P03"  # type: ignore[attr-defined]
    for exc in (canceled, locked):
        assert classify(exc).category is C.TRANSIENT
        assert classify(exc).strategy is R.TRANSACTION


async def test_a_terminated_backend_is_transient(database_url: str) -> None:
    victim = await asyncpg.connect(database_url)
    killer = await asyncpg.connect(database_url)
    try:
        pid = victim.get_server_pid()
        sleeping = asyncio.ensure_future(victim.execute("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.2)
        await killer.execute("SELECT pg_terminate_backend($1)", pid)
        exc = await _raised(lambda: sleeping)
        after = await _raised(lambda: victim.fetchval("SELECT 1"))
    finally:
        await killer.close()
        victim.terminate()
    # the server's FATAL 57P01 (or the dropped socket, class 08), then "connection is closed"
    assert classify(exc).reason in ("admin_shutdown", "connection_exception")
    for error in (exc, after):
        verdict = classify(error)
        assert verdict.category is C.TRANSIENT
        assert verdict.strategy is R.TRANSACTION


async def test_too_many_connections_is_critical(pg_server_dsn: str, database_url: str) -> None:
    role = f"limited_{os.getpid()}"
    admin = await asyncpg.connect(with_database(pg_server_dsn, "postgres"))
    try:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
        dsn = _with_user(database_url, role)
        exc = await _raised(lambda: asyncpg.connect(dsn))
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
    assert exc.sqlstate == "53300"  # type: ignore[attr-defined]
    verdict = classify(exc)
    assert (verdict.category, verdict.severity, verdict.alert_admins) == (
        C.SYSTEM,
        S.CRITICAL,
        True,
    )


async def test_a_missing_database_is_critical(pg_server_dsn: str) -> None:
    exc = await _raised(
        lambda: asyncpg.connect(with_database(pg_server_dsn, f"nope_{os.getpid()}"))
    )
    assert exc.sqlstate == "3D000"  # type: ignore[attr-defined]
    assert classify(exc).severity is S.CRITICAL


async def test_a_refused_connection_and_a_pool_timeout_are_transient(
    pool: asyncpg.Pool, database_url: str
) -> None:
    refused = await _raised(
        lambda: asyncpg.connect("postgresql://postgres@127.0.0.1:1/postgres", timeout=5)
    )
    small = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        async with small.acquire():
            timed_out = await _raised(lambda: small.acquire(timeout=0.05))
    finally:
        await small.close()
    assert isinstance(refused, OSError)
    assert isinstance(timed_out, TimeoutError)
    assert classify(refused).reason == "connection_lost"
    assert classify(timed_out).reason == "timeout"
    for exc in (refused, timed_out):
        assert classify(exc).strategy is R.TRANSACTION


# --- the connection-lost family, provoked for real ------------------------------------------


async def _spin(seconds: float) -> None:
    """Yield to the event loop for ``seconds`` without sleeping in the selector (so that
    the dying connection's bytes are read one at a time, as they arrive)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:  # noqa: ASYNC110 - a busy wait on purpose
        await asyncio.sleep(0)


async def _terminated_then(
    database_url: str, act: Callable[[asyncpg.Pool, Any], Awaitable[object]], wanted: set[str]
) -> dict[str, BaseException]:
    """Terminate a pooled connection's backend while it is idle (in a transaction), then
    ``act(pool, conn)`` after a varying pause, until every exception class in ``wanted`` was
    seen (at most 2,000 tries, pauses of 0 to 4.5 ms). Which one asyncpg raises depends on
    how much of the server's FATAL and of the closed socket it has read by then, which differs
    between TCP and a Unix socket (the embedded server) and with the machine's load."""
    seen: dict[str, BaseException] = {}
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    killer = await asyncpg.connect(database_url)
    try:
        for attempt in range(2_000):
            conn = await pool.acquire()
            try:
                await conn.execute("BEGIN")
                await killer.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
                await _spin((attempt % 10) * 0.0005)
                await act(pool, conn)
            except Exception as exc:
                seen.setdefault(type(exc).__name__, exc)
            finally:
                with contextlib.suppress(Exception):
                    await pool.release(conn)
            if wanted <= seen.keys():
                break
    finally:
        await killer.close()
        await pool.close()
    return seen


async def test_every_way_asyncpg_reports_a_terminated_backend_is_a_lost_connection(
    database_url: str,
) -> None:
    async def statement(_pool: asyncpg.Pool, conn: Any) -> None:
        await conn.fetchval("SELECT $1::int", 1)

    seen = await _terminated_then(
        database_url,
        statement,
        {"ConnectionDoesNotExistError", "InterfaceError", "InternalClientError"},
    )
    # the socket closed under the statement: 08003
    assert seen["ConnectionDoesNotExistError"].sqlstate == "08003"  # type: ignore[attr-defined]
    # the pool had already released the closed connection: its proxy refuses
    assert "released back to the pool" in str(seen["InterfaceError"])
    # the FATAL was read while idle, the close not yet: the protocol refuses the statement
    assert "cannot switch to state" in str(seen["InternalClientError"])
    for exc in seen.values():
        assert is_connection_lost(exc), exc
        assert classify(exc).category is C.TRANSIENT
        assert classify(exc).strategy is R.TRANSACTION


async def test_internal_client_error_at_pool_release_after_a_terminated_backend(
    database_url: str,
) -> None:
    async def release(pool: asyncpg.Pool, conn: Any) -> None:
        try:
            await pool.release(conn)  # the reset query on a connection the server ended
        except asyncpg.InternalClientError as exc:
            if "free connection holder" in str(exc):
                # asyncpg had already put the dead connection back: lost too, not this case
                assert is_connection_lost(exc)
                return
            raise

    seen = await _terminated_then(database_url, release, {"InternalClientError"})
    exc = seen["InternalClientError"]
    assert "cannot switch to state" in str(exc)
    assert is_connection_lost(exc)
    assert classify(exc).reason == "connection_lost"


async def test_a_closed_connection_is_a_lost_connection(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    await conn.close()
    exc = await _raised(lambda: conn.fetchval("SELECT 1"))
    assert isinstance(exc, asyncpg.InterfaceError)
    assert is_connection_lost(exc)
    assert classify(exc).strategy is R.TRANSACTION


async def test_25p02_after_a_real_deadlock_is_transient(pool: asyncpg.Pool) -> None:
    exc = await _deadlock_victim(pool, go_on=True)
    assert exc.sqlstate == "25P02"  # type: ignore[attr-defined]
    assert isinstance(exc.__context__, asyncpg.DeadlockDetectedError)
    assert is_connection_lost(exc)
    verdict = classify(exc)
    assert (verdict.category, verdict.strategy) == (C.TRANSIENT, R.TRANSACTION)
    assert (verdict.reason, verdict.code) == ("deadlock", "25P02")


async def test_25p02_after_a_real_unique_violation_is_not_transient(pool: asyncpg.Pool) -> None:
    user = await make_user(pool)
    async with pool.acquire() as conn, conn.transaction():
        try:
            await conn.execute(
                "INSERT INTO users (telegram_id, full_name) VALUES ($1, 'x')", user["telegram_id"]
            )
        except asyncpg.UniqueViolationError:
            exc = await _raised(lambda: conn.fetchval("SELECT 1"))
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute("ROLLBACK")
    assert exc.sqlstate == "25P02"  # type: ignore[attr-defined]
    assert not is_connection_lost(exc)
    assert not classify(exc).retryable
