"""Group commit of the sender's 'sent' marks (the LISTEN connection that wakes the sender
is ``recovery/outbox_listener.py``)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from database import notifications as sql
from recovery.connection_lost import database_unreachable

log = logging.getLogger(__name__)

Mark = tuple[int, str, int | None]
"""(row id, claim id, Telegram message id) of a delivered row."""


class MarkHeldError(Exception):
    """The row was delivered but its 'sent' mark could not be written: the database is
    unreachable. The mark is held in memory and written when it answers (``write_held``)."""


class SentMarker:
    """Group commit of 'sent' marks across every send in flight: one ``UPDATE`` for many rows.

    Each claimed row is announced (``expect``) and reports once when its delivery is over
    (``settle``); a delivered row also adds its mark (``add``), a future of whether the mark
    applied (False: the claim was lost to another sender). Marks are written together when
    ``max_rows`` are waiting, when every claimed row has reported (nothing more can join the
    group) or ``max_delay_s`` after the first waiting mark, whichever comes first. A failed
    statement fails every mark of its group: those rows stay claimed and are sent again
    after their lease (at least once, nothing lost).

    A statement that fails because the database is unreachable holds its marks instead
    (``held``, their futures fail with ``MarkHeldError``) and sets ``unreachable``: the sender
    sends no more claimed rows until ``write_held`` has written them, so a database outage
    during a drain does not make every delivered row go out again after its lease.
    """

    def __init__(self, pool: asyncpg.Pool, *, max_rows: int, max_delay_s: float) -> None:
        self.pool = pool
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._open = 0
        self._pending: list[tuple[Mark, asyncio.Future[bool]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._held: list[Mark] = []
        self.unreachable = False
        """The last mark statement failed for want of a database (cleared by a good one)."""

    @property
    def held(self) -> int:
        """Marks of delivered rows waiting for the database."""
        return len(self._held)

    async def write_held(self) -> bool:
        """Write the held marks; True when none is left (then ``unreachable`` is cleared).
        A mark whose claim was taken meanwhile does not apply (its row was sent again)."""
        if not self._held:
            self.unreachable = False
            return True
        items, self._held = self._held, []
        try:
            marked = await sql.mark_sent_many(self.pool, items)
        except Exception as exc:
            self._held = items + self._held
            self.unreachable = self.unreachable or database_unreachable(exc)
            return False
        self.unreachable = False
        log.info("%d held 'sent' mark(s) written (%d applied)", len(items), len(marked))
        return True

    def expect(self, rows: int) -> None:
        """``rows`` more rows were claimed; each will ``settle`` once."""
        self._open += rows

    def add(self, row_id: int, claim_id: str, message_id: int | None) -> asyncio.Future[bool]:
        """Queue the 'sent' mark of a delivered row; the future says whether it applied and
        raises the database's error if its statement failed."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        # a waiter cancelled meanwhile leaves the outcome unread: read it here
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.append(((row_id, claim_id, message_id), future))
        if len(self._pending) >= self.max_rows:
            self._write_pending()
        return future

    def settle(self) -> None:
        """One claimed row's delivery is over (whatever its outcome)."""
        self._open = max(0, self._open - 1)
        if not self._pending:
            return
        if self._open == 0:
            self._write_pending()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.max_delay_s, self._write_pending
            )

    async def flush(self) -> None:
        """Write the waiting marks now and wait for every mark statement in flight."""
        self._write_pending()
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _write_pending(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        group, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._write(group))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, group: list[tuple[Mark, asyncio.Future[bool]]]) -> None:
        items = [item for item, _ in group]
        try:
            marked = await sql.mark_sent_many(self.pool, items)
        except Exception as exc:
            if database_unreachable(exc):
                self.unreachable = True
                self._held.extend(items)
                log.warning(
                    "database unreachable (%s): %d 'sent' mark(s) held until it answers",
                    type(exc).__name__, len(items),
                )  # fmt: skip
                exc = MarkHeldError(str(len(items)))
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): the waiters are too
            for _, future in group:
                future.cancel()
            raise
        self.unreachable = False
        for (row_id, _, _), future in group:
            if not future.done():
                future.set_result(row_id in marked)
