"""Read-only SQL behind the admin menu's overview screens."""

from __future__ import annotations

from typing import Any

import asyncpg


async def health_summary(
    conn: asyncpg.Connection | asyncpg.Pool, stuck_threshold_s: float
) -> dict[str, Any]:
    """``get_system_health_summary()``: the live figures in one JSON document."""
    return await conn.fetchval("SELECT get_system_health_summary($1)", float(stuck_threshold_s))


async def notification_counts(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    """Outbox rows by status."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM pending_notifications GROUP BY status"
    )
    return {row["status"]: row["n"] for row in rows}


async def error_counts(conn: asyncpg.Connection | asyncpg.Pool, hours: int) -> list[asyncpg.Record]:
    """Error groups seen in the last ``hours`` by category and severity, with occurrences."""
    return await conn.fetch(
        """
        SELECT category, severity, count(*) AS groups, sum(occurrence_count) AS occurrences
          FROM error_records
         WHERE last_seen_at > now() - make_interval(hours => $1)
         GROUP BY category, severity ORDER BY occurrences DESC
        """,
        hours,
    )


async def negative_balances(
    conn: asyncpg.Connection | asyncpg.Pool, limit: int = 10
) -> list[asyncpg.Record]:
    """Materials whose balance is below zero."""
    return await conn.fetch(
        "SELECT id, sku, name, balance FROM materials WHERE balance < 0 ORDER BY balance LIMIT $1",
        limit,
    )
