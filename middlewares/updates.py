"""``UpdateTrackingMiddleware``: the outermost update middleware of a running bot process.

It knows which updates are being handled (graceful shutdown waits for them), counts them
for the metrics and, with a ``claim`` function, skips an update id that some instance took
before: Telegram redelivers a webhook update whose answer it did not get, and behind a load
balancer the second delivery may reach another instance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import TelegramObject, Update
from aiogram.types.update import UpdateTypeLookupError

from bot.metrics import Metrics
from recovery.masking import mask_sensitive

log = logging.getLogger(__name__)

ClaimUpdate = Callable[[int], Awaitable[bool]]
"""``claim(update_id) -> True`` when this instance takes the update first."""


class UpdateTrackingMiddleware(BaseMiddleware):
    """Tracks in-flight updates, deduplicates them and feeds the update metrics.

    Register it before every other outer update middleware (``build_dispatcher``'s
    ``outer_middlewares``), so that the error middleware runs inside it.

    Args:
        metrics: where ``bot_updates_total`` and friends go; None to count nothing.
        claim: takes an update id (``database.processed_updates.claim``); None disables
            deduplication. When the claim itself fails (database down) the update is
            handled anyway: a rare double handling beats losing the update.
    """

    def __init__(self, metrics: Metrics | None = None, claim: ClaimUpdate | None = None) -> None:
        self.metrics = metrics
        self.claim = claim
        self._tasks: set[asyncio.Task[Any]] = set()
        self.taken = 0
        """Updates taken since start (a monotonic count: an outage's updates are its growth)."""
        # labelled metric children, looked up once per label set instead of once per update
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[str, Any] = {}

    @property
    def in_flight(self) -> int:
        """Number of updates being handled now."""
        return len(self._tasks)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the updates in flight to finish; True when
        none is left."""
        deadline = time.monotonic() + timeout_s
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True

    def cancel_all(self) -> int:
        """Cancel the updates in flight (shutdown deadline); returns how many there were."""
        for task in self._tasks:
            task.cancel()
        return len(self._tasks)

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        update_type = _update_type(event)
        self.taken += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        if self.metrics is not None:
            self.metrics.updates_in_flight.inc()
        started = time.monotonic()
        outcome = "failed"
        try:
            if not await self._take(event.update_id):
                outcome = "duplicate"
                log.info("update %s skipped: another delivery was taken before", event.update_id)
                return UNHANDLED
            result = await handler(event, data)
            outcome = "unhandled" if result is UNHANDLED else "handled"
            return result
        finally:
            if task is not None:
                self._tasks.discard(task)
            if self.metrics is not None:
                self.metrics.updates_in_flight.dec()
                self._count(update_type, outcome)
                if outcome != "duplicate":
                    self._time(update_type, time.monotonic() - started)

    def _count(self, update_type: str, outcome: str) -> None:
        assert self.metrics is not None
        key = (update_type, outcome)
        if (counter := self._counted.get(key)) is None:
            counter = self._counted[key] = self.metrics.updates.labels(update_type, outcome)
        counter.inc()

    def _time(self, update_type: str, seconds: float) -> None:
        assert self.metrics is not None
        if (histogram := self._timed.get(update_type)) is None:
            histogram = self._timed[update_type] = self.metrics.update_seconds.labels(update_type)
        histogram.observe(seconds)

    async def _take(self, update_id: int) -> bool:
        if self.claim is None:
            return True
        try:
            return await self.claim(update_id)
        except Exception as exc:
            log.warning(
                "could not record update %s (%s); handling it anyway",
                update_id,
                mask_sensitive(str(exc)) or type(exc).__name__,
            )
            return True


def _update_type(update: Update) -> str:
    """``message``, ``callback_query``...; ``unknown`` for a kind aiogram does not know."""
    try:
        return update.event_type
    except UpdateTypeLookupError:
        return "unknown"
