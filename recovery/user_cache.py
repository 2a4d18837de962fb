"""This process's copy of the ``users`` rows of clients, dropped when PostgreSQL says a row
changed.

Every update needs its sender's row (role, language, blocked mark): one round trip per
update when read from PostgreSQL. Most senders are clients whose row does not change from
one message to the next, so the row of a sender with the ``client`` role is kept here and
the next update of that sender is served without a round trip.

Correctness rests on three rules:

- **Only the least privileged rows.** Only a row whose role is ``client`` and that is not
  marked "blocked the bot" is kept. A stale entry can therefore only withhold a role granted
  since (a promotion is seen a moment late), never keep one taken away: staff and admin
  rows are read from PostgreSQL on every update, as before. Admin rights from ``ADMIN_IDS``
  are decided from the settings on every update, not from the row.
- **Dropped on change, in every instance.** Migration 0006 makes PostgreSQL NOTIFY
  ``users_changed`` with the ``telegram_id`` of every row updated or deleted (``*`` after a
  TRUNCATE), whoever changed it: this process, another instance, an operator in ``psql``.
  One pooled connection per process LISTENs; an entry is dropped when its notification
  arrives, at commit plus the delivery time (well under a millisecond on one host).
  A row loaded while a notification arrives is not kept (``ticket``/``put``), so a load
  that raced a change never stores the older row.
- **No LISTEN, no cache.** Entries are served only while the LISTEN connection that was up
  when they were stored is still up; when it drops (database restart, terminated backend)
  the cache stops serving at once, and a new connection starts from an empty cache
  (notifications sent in between were missed). ``ttl_s`` bounds an entry's age besides,
  against a notification lost on a connection that still looks open.

Shapes: keys are Telegram user ids (int), values the ``asyncpg.Record`` of ``users``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import asyncpg

from database.users import CHANGES_CHANNEL
from recovery.outbox_listener import ListenState, OutboxListener

log = logging.getLogger(__name__)

CACHED_ROLE = "client"
"""The one role whose rows are kept (the least privileged)."""


def cacheable(row: asyncpg.Record) -> bool:
    """True for a row the cache may keep: role ``client``, not marked unreachable."""
    return row["role"] == CACHED_ROLE and row["blocked_bot_at"] is None


class UserCache:
    """Rows of client senders by Telegram id, valid while this process LISTENs.

    Args:
        pool: asyncpg pool; ``run`` holds one of its connections for the LISTEN.
        ttl_s: longest age of an entry in seconds (0 keeps nothing: every update reads
            PostgreSQL).
        max_entries: bound of the cache; past it the oldest stored entry is dropped.
        relisten_s: seconds between two attempts to LISTEN again while not listening.
        clock: monotonic seconds (patched in tests).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ttl_s: float = 60.0,
        max_entries: int = 100_000,
        relisten_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.relisten_s = relisten_s
        self._clock = clock
        self._rows: dict[int, tuple[float, asyncpg.Record]] = {}
        self._generation = 0
        """Bumped by every invalidation and every new LISTEN connection (``ticket``)."""
        self._listener = OutboxListener(
            pool, CHANGES_CHANNEL, _nothing, on_payload=self._changed, acquire_timeout_s=2.0
        )
        self._conn: object | None = None
        """The LISTEN connection the stored entries rely on."""

    @property
    def live(self) -> bool:
        """True when entries may be served: the LISTEN connection they rely on is up."""
        return (
            self.ttl_s > 0
            and self._conn is not None
            and self._listener.conn is self._conn
            and self._listener.alive()
        )

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, telegram_id: int) -> asyncpg.Record | None:
        """The kept row of ``telegram_id``, or None (not kept, too old, or not listening)."""
        entry = self._rows.get(telegram_id)
        if entry is None:
            return None
        if not self.live or entry[0] <= self._clock():
            self._rows.pop(telegram_id, None)
            return None
        return entry[1]

    def ticket(self) -> int:
        """Take before reading a row from PostgreSQL; give it to ``put``."""
        return self._generation

    def put(self, row: asyncpg.Record, ticket: int) -> bool:
        """Keep ``row`` (read after ``ticket`` was taken) if it is ``cacheable`` and nothing
        was invalidated since the ticket; True when kept."""
        if ticket != self._generation or not self.live or not cacheable(row):
            return False
        rows = self._rows
        if len(rows) >= self.max_entries and row["telegram_id"] not in rows:
            rows.pop(next(iter(rows)))
        rows[row["telegram_id"]] = (self._clock() + self.ttl_s, row)
        return True

    def forget(self, telegram_id: int) -> None:
        """Drop the entry of ``telegram_id`` (a write path of this process calls it right
        after its commit, so that the next update sees the change without waiting for
        the notification)."""
        self._generation += 1
        self._rows.pop(telegram_id, None)

    def clear(self) -> None:
        """Drop every entry."""
        self._generation += 1
        self._rows.clear()

    def _changed(self, payload: str) -> None:
        try:
            telegram_id = int(payload)
        except ValueError:  # '*' (TRUNCATE) or anything unexpected: drop everything
            self.clear()
            return
        self.forget(telegram_id)

    async def listen(self) -> ListenState:
        """LISTEN if not listening (never raises); a new connection starts empty."""
        state = await self._listener.ensure()
        if self._listener.conn is not self._conn:
            self.clear()  # notifications may have been missed while no connection listened
            self._conn = self._listener.conn
        return state

    async def run(self) -> None:
        """Keep listening until cancelled (a supervised task of the bot process)."""
        if self.ttl_s <= 0:
            return
        try:
            while True:
                await self.listen()
                await asyncio.sleep(self.relisten_s)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening and drop every entry."""
        self._conn = None
        self.clear()
        await self._listener.close()


def _nothing() -> None:
    """``OutboxListener``'s wake-up callback: the cache acts on the payload only."""
