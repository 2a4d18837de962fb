"""A released pooled connection carries no state into its next use, although releasing an
ordinary connection costs no round trip (``database.pool``).

Each test uses a pool of exactly one connection, so the next ``acquire`` gets the same
PostgreSQL session (checked by its backend pid), and looks at that session from inside
(settings, transaction, channels, cursors, statements) and from another connection
(``pg_locks``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from database.locks import advisory_lock, try_advisory_lock
from database.pool import PooledConnection, create_pool, session_connection

ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture
async def one_connection_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()


class Watcher:
    """A second connection that sees the session's locks from outside."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def advisory_locks(self, pid: int) -> int:
        return int(
            await self.conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid
            )
        )


@pytest_asyncio.fixture
async def watcher(database_url: str) -> AsyncIterator[Watcher]:
    conn = await asyncpg.connect(database_url)
    try:
        yield Watcher(conn)
    finally:
        await conn.close()


async def session_state(conn: asyncpg.Connection) -> dict[str, object]:
    """What a session carries: settings changed from their defaults, an open transaction,
    LISTEN channels, open cursors (portals), statements prepared by SQL ``PREPARE``."""
    row = await conn.fetchrow(
        """
        SELECT current_setting('statement_timeout') AS statement_timeout,
               current_setting('jit') AS jit,
               current_setting('synchronous_commit') AS synchronous_commit,
               current_setting('search_path') AS search_path,
               (SELECT count(*) FROM pg_listening_channels()) AS channels,
               (SELECT count(*) FROM pg_cursors) AS cursors,
               (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) AS sql_prepared
        """
    )
    assert row is not None
    return {**dict(row), "in_transaction": conn.is_in_transaction()}


async def fresh_state(database_url: str) -> dict[str, object]:
    """The same view on a brand-new session."""
    conn = await asyncpg.connect(database_url)
    try:
        return await session_state(conn)
    finally:
        await conn.close()


async def test_ordinary_use_leaves_nothing_and_releases_without_a_statement(
    one_connection_pool: asyncpg.Pool, database_url: str
) -> None:
    pool = one_connection_pool
    baseline = await fresh_state(database_url)
    seen: list[str] = []
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
        # transaction-local settings, an xact-level advisory lock and a cursor: all end
        # with the transaction
        async with conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = '7s'")
            await conn.execute("SET LOCAL jit = off")
            await conn.fetchval("SELECT set_config('synchronous_commit', 'off', true)")
            await conn.execute("SELECT pg_advisory_xact_lock(42)")
            cursor = await conn.cursor("SELECT generate_series(1, 10)")
            await cursor.fetch(2)
        conn.add_query_logger(lambda record: seen.append(record.query))
    await asyncio.sleep(0)  # query loggers are called soon after each query
    assert seen == [], "releasing an ordinary connection sent a statement"
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid
        assert await session_state(conn) == baseline


async def test_an_abandoned_transaction_is_rolled_back_on_release(
    one_connection_pool: asyncpg.Pool, database_url: str
) -> None:
    pool = one_connection_pool
    baseline = await fresh_state(database_url)
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
        await conn.execute("BEGIN")  # never committed: the holder forgot it
        await conn.execute("SET LOCAL statement_timeout = '9s'")
        await conn.execute("CREATE TABLE leaked (x int)")
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid
        assert await session_state(conn) == baseline
        assert await conn.fetchval("SELECT to_regclass('leaked')") is None


async def test_a_session_connection_is_reset_in_full(
    one_connection_pool: asyncpg.Pool, database_url: str, watcher: Watcher
) -> None:
    pool = one_connection_pool
    baseline = await fresh_state(database_url)
    async with session_connection(pool) as conn:
        pid = conn.get_server_pid()
        # everything a session may keep, left behind on purpose
        await conn.execute("SELECT pg_advisory_lock(7), pg_advisory_lock_shared(8)")
        await conn.execute("SET statement_timeout = '5s'")
        await conn.execute("SET search_path = pg_catalog")
        await conn.execute("LISTEN some_channel")
        await conn.execute("DECLARE kept CURSOR WITH HOLD FOR SELECT 1")
        await conn.execute("PREPARE kept_stmt AS SELECT 1")
        assert await watcher.advisory_locks(pid) == 2
    assert await watcher.advisory_locks(pid) == 0
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid
        state = await session_state(conn)
    # RESET ALL does not deallocate a statement prepared by SQL PREPARE (DISCARD ALL would,
    # and asyncpg's reset does not use it): the project's code prepares none that way (the
    # source scan below), asyncpg's own statement cache is kept on purpose
    assert state == {**baseline, "sql_prepared": 1}


async def test_a_listener_connection_is_unlistened_on_release(
    one_connection_pool: asyncpg.Pool, database_url: str
) -> None:
    pool = one_connection_pool
    baseline = await fresh_state(database_url)
    conn = await pool.acquire()
    pid = conn.get_server_pid()
    await conn.add_listener("pending_notifications", lambda *_: None)
    assert (await session_state(conn))["channels"] == 1
    with pytest.warns(asyncpg.InterfaceWarning, match="active notification listener"):
        await pool.release(conn)  # without remove_listener
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid
        assert await session_state(conn) == baseline


async def test_try_lock_frees_the_lock_and_the_connection(
    one_connection_pool: asyncpg.Pool, watcher: Watcher
) -> None:
    pool = one_connection_pool
    async with try_advisory_lock(pool, "job:probe") as acquired:
        assert acquired
        pid = int(
            await watcher.conn.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' LIMIT 1"
            )
        )
    assert await watcher.advisory_locks(pid) == 0
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid
        assert not await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")


async def test_a_holder_cancelled_before_its_unlock_leaves_no_lock(
    one_connection_pool: asyncpg.Pool, watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unlock never reaches the server (the task is cancelled while it is being sent):
    the pool's reset of the session connection frees the lock all the same."""
    pool = one_connection_pool
    holding, unlocking = asyncio.Event(), asyncio.Event()
    original = PooledConnection.execute

    async def hanging_unlock(self: PooledConnection, query: str, *args: object) -> str:
        if "pg_advisory_unlock(" in query:
            unlocking.set()
            await asyncio.sleep(3600)  # a network that never delivers the statement
        return await original(self, query, *args)

    monkeypatch.setattr(PooledConnection, "execute", hanging_unlock)

    async def job() -> None:
        async with advisory_lock(pool, "inventory:reconciliation"):
            holding.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(job())
    await holding.wait()
    pid = int(await watcher.conn.fetchval("SELECT pid FROM pg_locks WHERE locktype = 'advisory'"))
    task.cancel()  # the block ends; its finally starts the unlock
    await unlocking.wait()
    task.cancel()  # and the unlock is cut short
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await watcher.advisory_locks(pid) == 0
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid


def test_session_level_sql_only_in_the_session_helpers() -> None:
    """Ordinary pooled connections are released without a reset statement, so no code
    outside ``database/locks.py`` and ``database/pool.py`` may leave session state behind
    with SQL: session advisory locks, plain SET, session ``set_config``, cursors WITH HOLD,
    temporary tables, SQL PREPARE (LISTEN goes through ``add_listener``, which marks its
    connection by itself)."""
    pattern = re.compile(
        r"pg_(try_)?advisory_lock(_shared)?\s*\(|set_config\([^)]*,\s*false\s*\)|WITH\s+HOLD"
        r"|[\"';]\s*(SET\s+(SESSION\s+)?(?!LOCAL\b)\w+\s*(=|TO\b)|PREPARE\s"
        r"|DECLARE\s|CREATE\s+TEMP)"  # the project writes SQL keywords in capitals
    )
    allowed = {Path("database/locks.py"), Path("database/pool.py")}
    offenders = []
    for package in ("bot", "database", "recovery", "handlers", "middlewares"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative in allowed:
                continue
            for match in pattern.finditer(path.read_text()):
                line = path.read_text().count("\n", 0, match.start()) + 1
                offenders.append(f"{relative}:{line}: {match.group(0)!r}")
    assert offenders == []
