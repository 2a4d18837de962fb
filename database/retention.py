"""Retention: the cleanup functions of migration 0001, each returning the rows it removed."""

from __future__ import annotations

import asyncpg

from database.pool import AnyConnection

Conn = AnyConnection | asyncpg.Pool


async def cleanup_error_records(conn: Conn, retention_days: int) -> int:
    """``cleanup_old_error_records``: error groups last seen more than N days ago."""
    return int(await conn.fetchval("SELECT cleanup_old_error_records($1)", retention_days))


async def cleanup_transaction_logs(conn: Conn, retention_days: int) -> int:
    """``cleanup_old_transaction_logs``: transaction log rows older than N days."""
    return int(await conn.fetchval("SELECT cleanup_old_transaction_logs($1)", retention_days))


async def cleanup_health_snapshots(conn: Conn, retention_days: int) -> int:
    """``cleanup_old_health_snapshots``: health snapshots older than N days."""
    return int(await conn.fetchval("SELECT cleanup_old_health_snapshots($1)", retention_days))
