"""The sender's LISTEN connection comes back after its backend dies or after asyncpg has
returned it to the pool behind its back (``is_closed()`` then raises ``InterfaceError``:
the bug that once killed the sender's loop), and NOTIFY wakes the sender again."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from database import notifications as sql
from recovery.outbox_listener import ListenState, OutboxListener


async def _notified(pool: asyncpg.Pool, woken: asyncio.Event) -> None:
    woken.clear()
    async with pool.acquire() as conn:
        await conn.execute(f"NOTIFY {sql.CHANNEL}")
    await asyncio.wait_for(woken.wait(), 5)


async def test_listen_survives_a_connection_released_behind_its_back(pool: asyncpg.Pool) -> None:
    woken = asyncio.Event()
    listener = OutboxListener(pool, sql.CHANNEL, woken.set)
    assert await listener.ensure() is ListenState.LISTENING
    first = listener.conn
    assert first is not None
    with pytest.warns(asyncpg.InterfaceWarning):  # still listening, as in the real case
        await pool.release(first)  # what asyncpg does when the connection's backend is gone
    with pytest.raises(asyncpg.InterfaceError):
        first.is_closed()
    assert await listener.ensure() is ListenState.LISTENING
    assert listener.conn is not first
    await _notified(pool, woken)
    await listener.close()


async def test_listen_comes_back_after_its_backend_is_terminated(pool: asyncpg.Pool) -> None:
    woken = asyncio.Event()
    listener = OutboxListener(pool, sql.CHANNEL, woken.set)
    assert await listener.ensure() is ListenState.LISTENING
    assert listener.conn is not None
    pid = listener.conn.get_server_pid()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    for _ in range(50):  # the client learns of the termination asynchronously
        state = await listener.ensure()
        if state is ListenState.LISTENING and listener.conn.get_server_pid() != pid:
            break
        await asyncio.sleep(0.1)
    assert listener.conn is not None and listener.conn.get_server_pid() != pid
    await _notified(pool, woken)
    await listener.close()


async def test_an_unreachable_database_is_reported_not_raised() -> None:
    pool = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:1/postgres", min_size=0, max_size=1
    )
    listener = OutboxListener(pool, sql.CHANNEL, lambda: None, acquire_timeout_s=2)
    try:
        assert await listener.ensure() is ListenState.UNREACHABLE
        assert listener.conn is None
    finally:
        await pool.close()
