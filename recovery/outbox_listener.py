"""The outbox sender's LISTEN connection and its wait between turns.

PostgreSQL sends a NOTIFY on the ``pending_notifications`` channel when rows commit
(migration 0001's trigger); one pooled connection LISTENs so that the sender wakes at once
instead of at its next poll. The connection is lost with the database (a terminated backend,
a restart): asyncpg then returns it to the pool by itself and the proxy we hold is detached
(any call on it raises ``InterfaceError: ... released back to the pool``). ``ensure`` treats
that like a closed connection and listens again on a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from enum import StrEnum

import asyncpg

log = logging.getLogger(__name__)


class ListenState(StrEnum):
    """What ``OutboxListener.ensure`` found."""

    LISTENING = "listening"
    POLL_ONLY = "poll_only"
    """The database answers but LISTEN failed: the sender polls."""
    UNREACHABLE = "unreachable"
    """No connection could be had: the database is away."""


class OutboxListener:
    """A pooled connection LISTENing on ``channel``, calling ``on_notify()`` per NOTIFY.

    Args:
        pool: asyncpg pool (the connection is held for as long as it listens).
        channel: the NOTIFY channel.
        on_notify: called from asyncpg's callback, must not block.
        on_payload: called after ``on_notify`` with the notification's payload (text),
            when given; must not block either.
        acquire_timeout_s: seconds to wait for a connection (a database that is down fails
            at once; one that hangs must not stall the sender).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        channel: str,
        on_notify: Callable[[], None],
        *,
        acquire_timeout_s: float = 5.0,
        on_payload: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.channel = channel
        self.on_notify = on_notify
        self.on_payload = on_payload
        self.acquire_timeout_s = acquire_timeout_s
        self.conn: asyncpg.pool.PoolConnectionProxy | None = None
        self.state = ListenState.UNREACHABLE
        self._failing = False

    def _callback(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.on_notify()
        if self.on_payload is not None:
            self.on_payload(str(payload))

    def alive(self) -> bool:
        """True while the LISTEN connection is open (a lost backend closes it)."""
        return self._alive()

    def _alive(self) -> bool:
        conn = self.conn
        if conn is None:
            return False
        try:
            return not conn.is_closed()
        except asyncpg.InterfaceError:  # released back to the pool when its backend died
            return False

    async def ensure(self) -> ListenState:
        """Listen if not listening; never raises (a failure is logged once per episode and
        reported in the result, and the next call tries again)."""
        if self._alive():
            return ListenState.LISTENING
        await self.close()
        try:
            conn = await self.pool.acquire(timeout=self.acquire_timeout_s)
        except Exception as exc:
            self._failed("LISTEN unavailable (%s): database unreachable", exc)
            self.state = ListenState.UNREACHABLE
            return self.state
        try:
            await conn.add_listener(self.channel, self._callback)
        except Exception as exc:
            self._failed("LISTEN failed (%s); polling only", exc)
            with contextlib.suppress(Exception):
                await self.pool.release(conn)
            self.state = ListenState.POLL_ONLY
            return self.state
        if self._failing:
            log.info("LISTEN %s re-established", self.channel)
        self._failing = False
        self.conn = conn
        self.state = ListenState.LISTENING
        return self.state

    def _failed(self, message: str, exc: BaseException) -> None:
        if not self._failing:
            log.warning(message, type(exc).__name__)
        self._failing = True

    async def close(self) -> None:
        """Stop listening and return the connection to the pool (never raises)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            if not conn.is_closed():
                await conn.remove_listener(self.channel, self._callback)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)


async def wait_any(stop: asyncio.Event, wake: asyncio.Event, *, wait_s: float) -> None:
    """Return when ``stop`` or ``wake`` is set, or after ``wait_s`` seconds."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
