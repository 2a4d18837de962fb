"""``ErrorStatistics``: the figures of the error statistics screen.

Windows count occurrences from the hourly rollup ``error_hourly_counts`` (kept by a trigger
on ``error_records``), in whole UTC hours: "24 h" covers the current hour and the 24 before
it. Top groups and look-ups read ``error_records`` (one row per group).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from database import dashboard, error_records

MAX_WINDOW_H = 24 * 31
"""Longest window the statistics accept, in hours (the chart's x axis stays readable)."""


@dataclass(frozen=True, slots=True)
class CategoryCount:
    """Occurrences and distinct groups of one category and severity in a window."""

    category: str
    severity: str
    groups: int
    occurrences: int


@dataclass(frozen=True, slots=True)
class HourlySeries:
    """Occurrences per UTC hour and category; ``hours`` lists every hour of the window,
    ``by_category[c][i]`` is the count of category ``c`` in ``hours[i]`` (zeros filled)."""

    hours: list[dt.datetime]
    by_category: dict[str, list[int]]

    @property
    def total(self) -> int:
        """Occurrences in the window."""
        return sum(sum(values) for values in self.by_category.values())


COUNT_CAP = 10_000
"""Unresolved groups are counted up to this number (pages past it are not offered)."""


@dataclass(frozen=True, slots=True)
class GroupPage:
    """A page of unresolved error groups, most frequent first, and how many there are
    (``capped``: there are more than ``total``)."""

    items: list[asyncpg.Record]
    total: int
    capped: bool = False


def _window(hours: int) -> int:
    if not 1 <= hours <= MAX_WINDOW_H:
        raise ValueError(f"window of {hours} h is outside 1..{MAX_WINDOW_H}")
    return hours


class ErrorStatistics:
    """Read side of ``error_records`` for admins.

    Args:
        pool: asyncpg pool.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def counts(self, hours: int) -> list[CategoryCount]:
        """By category and severity over the last ``hours`` hours, most occurrences first.

        Raises:
            ValueError: ``hours`` outside 1..``MAX_WINDOW_H``.
        """
        rows = await dashboard.error_counts(self.pool, _window(hours))
        return [
            CategoryCount(r["category"], r["severity"], r["groups"], r["occurrences"]) for r in rows
        ]

    async def hourly(self, hours: int, *, now: dt.datetime | None = None) -> HourlySeries:
        """Occurrences per hour and category over the last ``hours`` hours (zeros filled).

        Raises:
            ValueError: ``hours`` outside 1..``MAX_WINDOW_H``.
        """
        rows = await dashboard.errors_per_hour(self.pool, _window(hours))
        current = (now or dt.datetime.now(dt.UTC)).replace(minute=0, second=0, microsecond=0)
        slots = [current - dt.timedelta(hours=hours - i) for i in range(hours + 1)]
        index = {slot: i for i, slot in enumerate(slots)}
        by_category: dict[str, list[int]] = {}
        for row in rows:
            i = index.get(row["hour"].astimezone(dt.UTC))
            if i is None:
                continue
            by_category.setdefault(row["category"], [0] * len(slots))[i] += row["occurrences"]
        return HourlySeries(slots, dict(sorted(by_category.items())))

    async def top_groups(self, *, page: int, page_size: int) -> GroupPage:
        """A page (0-based; clamped to the last page) of unresolved groups; counted up to
        ``COUNT_CAP``."""
        counted = await dashboard.unresolved_group_count(self.pool, COUNT_CAP)
        total = min(counted, COUNT_CAP)
        last = max((total - 1) // page_size, 0)
        page = min(max(page, 0), last)
        items = await dashboard.top_groups(self.pool, page_size, page * page_size)
        return GroupPage(items, total, capped=counted > COUNT_CAP)

    async def group(self, record_id: int) -> asyncpg.Record | None:
        """One group by id, or None (also for ids outside the BIGINT range)."""
        if not 0 < record_id < 2**63:
            return None
        return await dashboard.error_group(self.pool, record_id)

    async def lookup(self, reference: str) -> asyncpg.Record | None:
        """The group whose reference a user quoted (case and spaces ignored), or None."""
        text = reference.strip()
        if not text or len(text) > 64:
            return None
        async with self.pool.acquire() as conn:
            return await error_records.get_by_reference(conn, text)
