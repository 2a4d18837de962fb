"""The embedded PostgreSQL used when ``DATABASE_URL`` is unset (the ``pgserver`` package
bundles the PostgreSQL binaries). Data lives under ``DATA_DIR/pgdata``; the server listens
on a Unix socket only."""

from __future__ import annotations

import logging
from pathlib import Path

from database.embedded import create_database_sql, database_exists_sql

log = logging.getLogger(__name__)

DATABASE_NAME = "service_bot"


def start_embedded(data_dir: Path, database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the embedded server and make sure ``database`` exists.

    Returns a ``postgresql://`` URL for asyncpg. Blocking: call it in a thread from async
    code. The server keeps running until the last process using it exits.

    Raises:
        bot.features.MissingExtraError: pgserver (the ``embedded`` extra) is not installed.
        RuntimeError: the server could not be initialised or started.
    """
    from bot.features import require

    require(
        "embedded",
        "DATABASE_URL is not set (the embedded PostgreSQL is the default)",
        ", or set DATABASE_URL=postgresql://user:password@host:5432/db",
    )
    import pgserver

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    except Exception as exc:
        raise RuntimeError(f"embedded PostgreSQL did not start under {data_dir}: {exc}") from exc
    exists = server.psql(database_exists_sql(database))
    if "1 row" not in exists:
        server.psql(create_database_sql(database))
        log.info("created embedded database %s", database)
    return server.get_uri(database)
