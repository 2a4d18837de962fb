"""The user cache (``recovery.user_cache``) behind ``UserMiddleware``: a client's row is
served without a round trip, a change made in PostgreSQL by anyone is seen by the next
update once its NOTIFY is in, and a stale entry never grants a role: staff and admin rows
are never kept, a load that raced a change is not kept, and nothing is served while the
LISTEN connection is down."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiogram.types import Update, User

from database import users
from middlewares.user import UserMiddleware
from recovery.user_cache import UserCache

_ids = itertools.count(1)


class _Policy:
    default_locale = "en"

    def is_admin_id(self, telegram_id: int) -> bool:
        return False


async def _update(mw: UserMiddleware, telegram_id: int) -> dict[str, Any]:
    """The data a handler gets for one message from ``telegram_id``."""
    n = next(_ids)
    sender = User(id=telegram_id, is_bot=False, first_name="Ann", language_code="en")
    update = Update.model_validate(
        {
            "update_id": n,
            "message": {
                "message_id": n,
                "date": 0,
                "chat": {"id": telegram_id, "type": "private"},
                "from": sender.model_dump(),
                "text": "/my",
            },
        }
    )
    seen: dict[str, Any] = {}

    async def handler(_event: Any, data: dict[str, Any]) -> None:
        seen.update(data)

    await mw(handler, update, {"event_from_user": sender})
    return seen


@contextlib.asynccontextmanager
async def _listening(pool: asyncpg.Pool, **options: Any) -> AsyncIterator[UserCache]:
    cache = UserCache(pool, **options)
    await cache.listen()
    assert cache.live
    try:
        yield cache
    finally:
        await cache.close()  # the LISTEN connection goes back before the pool closes


async def _until(predicate: Any, timeout_s: float = 5.0) -> None:
    """Wait for ``predicate()`` (a notification to arrive), at most ``timeout_s``."""
    for _ in range(int(timeout_s / 0.001)):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"not seen within {timeout_s} s")


@pytest.fixture(autouse=True)
def _count_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts the middleware's reads of PostgreSQL (each ``load_or_register`` is one
    statement)."""
    real = users.load_or_register

    async def counted(*args: Any, **kwargs: Any) -> asyncpg.Record:
        _LOADS[0] += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(users, "load_or_register", counted)


_LOADS = [0]


async def _loads(pool: asyncpg.Pool, mw: UserMiddleware, telegram_id: int) -> tuple[int, str]:
    """(round trips to PostgreSQL, role seen) for one update of ``telegram_id``."""
    before = _LOADS[0]
    data = await _update(mw, telegram_id)
    return _LOADS[0] - before, data["user"]["role"]


async def test_a_client_is_served_from_the_cache_and_a_change_is_seen_next(
    pool: asyncpg.Pool,
) -> None:
    async with _listening(pool) as cache:
        mw = UserMiddleware(pool, _Policy(), cache)
        assert await _loads(pool, mw, 9001) == (1, "client")  # registered
        assert await _loads(pool, mw, 9001) == (0, "client")  # kept
        # an operator promotes the user from another connection (another instance, psql)
        await pool.execute("UPDATE users SET role = 'technician' WHERE telegram_id = 9001")
        await _until(lambda: cache.get(9001) is None)
        assert await _loads(pool, mw, 9001) == (1, "technician")


async def test_staff_and_admin_rows_are_read_on_every_update(pool: asyncpg.Pool) -> None:
    async with _listening(pool) as cache:
        mw = UserMiddleware(pool, _Policy(), cache)
        await _update(mw, 9002)
        await pool.execute("UPDATE users SET role = 'admin' WHERE telegram_id = 9002")
        await _until(lambda: cache.get(9002) is None)
        assert await _loads(pool, mw, 9002) == (1, "admin")
        assert await _loads(pool, mw, 9002) == (1, "admin")  # never kept
        assert len(cache) == 0
        # a demotion is seen by the very next update, notification or not
        await pool.execute("UPDATE users SET role = 'client' WHERE telegram_id = 9002")
        assert await _loads(pool, mw, 9002) == (1, "client")


async def test_a_load_that_raced_a_change_is_not_kept(pool: asyncpg.Pool) -> None:
    async with _listening(pool) as cache:
        mw = UserMiddleware(pool, _Policy(), cache)
        row = (await _update(mw, 9003))["user"]
        cache.forget(9003)
        ticket = cache.ticket()  # a load starts ...
        await pool.execute("UPDATE users SET role = 'manager' WHERE telegram_id = 9003")
        await _until(lambda: cache.ticket() != ticket)  # ... the change's NOTIFY comes in ...
        assert not cache.put(row, ticket)  # ... and the older row it read is not kept
        assert cache.get(9003) is None


async def test_nothing_is_served_without_listen_and_a_new_listen_starts_empty(
    pool: asyncpg.Pool,
) -> None:
    async with _listening(pool) as cache:
        mw = UserMiddleware(pool, _Policy(), cache)
        await _update(mw, 9004)
        assert cache.get(9004) is not None
        conn = cache._listener.conn
        assert conn is not None
        pid = conn.get_server_pid()
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        await _until(lambda: not cache.live)  # changes made now would not be heard
        assert cache.get(9004) is None
        assert await _loads(pool, mw, 9004) == (1, "client")
        await cache.listen()
        assert cache.live and len(cache) == 0


async def test_entries_expire_and_a_truncate_drops_all(pool: asyncpg.Pool) -> None:
    now = [100.0]
    async with _listening(pool, ttl_s=60.0, clock=lambda: now[0]) as cache:
        mw = UserMiddleware(pool, _Policy(), cache)
        await _update(mw, 9005)
        await _update(mw, 9006)
        assert cache.get(9005) is not None
        now[0] += 60.0
        assert cache.get(9005) is None  # too old
        assert cache.get(9006) is None
        await _update(mw, 9006)
        assert cache.get(9006) is not None
        await pool.execute("TRUNCATE users CASCADE")
        await _until(lambda: len(cache) == 0)


async def test_a_blocked_mark_or_a_deletion_drops_the_entry(pool: asyncpg.Pool) -> None:
    async with _listening(pool) as cache:
        mw = UserMiddleware(pool, _Policy(), cache)
        await _update(mw, 9007)
        await pool.execute(
            "UPDATE users SET blocked_bot_at = now() WHERE telegram_id = 9007"
        )  # a send to them got 403
        await _until(lambda: cache.get(9007) is None)
        assert (await _update(mw, 9007))["user"]["blocked_bot_at"] is None  # writing unblocks
        await pool.execute("DELETE FROM users WHERE telegram_id = 9007")
        await _until(lambda: cache.get(9007) is None)


async def test_no_ttl_means_no_cache(pool: asyncpg.Pool) -> None:
    cache = UserCache(pool, ttl_s=0)
    await cache.run()  # returns at once: nothing to keep
    mw = UserMiddleware(pool, _Policy(), cache)
    await _update(mw, 9008)
    assert await _loads(pool, mw, 9008) == (1, "client")
    assert len(cache) == 0
