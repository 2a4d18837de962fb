"""The asyncpg connection pool shared by the bot, the scheduler and the recovery core.

Releasing a connection costs no round trip. asyncpg's default reset runs
``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every release,
doubling the round trips of a one-statement ``pool.fetchval``. Ordinary use of a pooled
connection leaves nothing in its session that outlives a transaction: settings are
transaction-local (``SET LOCAL``, ``set_config(..., true)``), advisory locks are
transaction-level (``pg_advisory_xact_lock``), cursors live inside transactions, and asyncpg
itself rolls back an abandoned transaction and forgets listener callbacks on release
(``Connection._reset``). What does outlive a transaction lives on a *session connection*:

- session advisory locks: ``session_connection`` (``database.locks``, the reconciliation
  lock);
- LISTEN: ``Connection.add_listener`` (the notification sender's wake-up channel) marks
  its connection by itself.

A session connection gets asyncpg's full reset query when it is released, so the next
user of that connection finds no lock, no channel and no setting left behind
(``tests/integration/test_pool_reset.py`` checks both kinds; a source scan there keeps
session-level SQL out of ordinary code).

The reset statement also noticed a backend that died between a connection's last statement
and its release. Without it, that connection's next user meets the dead backend instead: its
first statement fails with asyncpg's connection-lost family (transient, so
``TransactionalStateManager`` retries the whole transaction; a plain call reports it), and
asyncpg then replaces the connection. A backend that dies while its connection is idle in
the pool was never caught by the reset either.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

AnyConnection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
"""A connection to run statements on: an ``asyncpg.Connection`` of its own, or one acquired
from a pool (``pool.acquire()`` hands out a ``PoolConnectionProxy`` with the same methods)."""


def _encode_json(value: object) -> str:
    """Encode a Python value for a json/jsonb parameter (dates and UUIDs as strings)."""
    return json.dumps(value, default=str)


async def _init_connection(connection: asyncpg.Connection) -> None:
    """json/jsonb parameters take Python objects and columns come back decoded, on every
    pooled connection (pass dicts, never pre-encoded strings)."""
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=_encode_json, decoder=json.loads, schema="pg_catalog"
        )


class PooledConnection(asyncpg.Connection):
    """A pooled connection that knows whether it carries session state.

    ``holds_session_state`` is set by ``mark_session_state`` (``session_connection``) and
    by ``add_listener``; the pool's reset then runs the full reset query once and clears it.
    """

    __slots__ = ("holds_session_state",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holds_session_state = False

    def mark_session_state(self) -> None:
        """This connection is about to hold state beyond a transaction (a session lock)."""
        self.holds_session_state = True

    async def add_listener(self, channel: str, callback: Any) -> None:
        """LISTEN on ``channel`` (asyncpg's ``add_listener``); the channel is dropped with
        ``UNLISTEN *`` when the connection goes back to the pool."""
        self.holds_session_state = True
        await super().add_listener(channel, callback)


async def _reset_connection(connection: asyncpg.Connection) -> None:
    """The pool's ``reset``: nothing for an ordinary connection (asyncpg has already rolled
    back an open transaction), asyncpg's full reset query for a session connection."""
    if isinstance(connection, PooledConnection) and connection.holds_session_state:
        await connection.execute(connection.get_reset_query())
        connection.holds_session_state = False


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout_s: float = 30.0,
    application_name: str = "service-recovery-bot",
) -> asyncpg.Pool:
    """Open an asyncpg pool on ``dsn`` (``postgresql://...``) with JSON codecs installed and
    the release reset of the module docstring.

    Raises:
        OSError, asyncpg.PostgresError: the server cannot be reached or refuses the login.
    """
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout_s,
        init=_init_connection,
        reset=_reset_connection,
        connection_class=PooledConnection,
        server_settings={"application_name": application_name},
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def session_connection(pool: asyncpg.Pool) -> AsyncIterator[AnyConnection]:
    """A connection of ``pool`` for session-level state (a session advisory lock): whatever
    the block leaves on it, a cancellation in the middle of it included, is reset in full
    when it goes back to the pool (a pool not made by ``create_pool`` resets every
    connection in full anyway)."""
    async with pool.acquire() as conn:
        if hasattr(conn, "mark_session_state"):
            conn.mark_session_state()
        yield conn
