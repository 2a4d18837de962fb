"""The asyncpg connection pool shared by the bot, the scheduler and the recovery core."""

from __future__ import annotations

import json

import asyncpg


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


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout_s: float = 30.0,
    application_name: str = "service-recovery-bot",
) -> asyncpg.Pool:
    """Open an asyncpg pool on ``dsn`` (``postgresql://...``) with JSON codecs installed.

    Raises:
        OSError, asyncpg.PostgresError: the server cannot be reached or refuses the login.
    """
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout_s,
        init=_init_connection,
        server_settings={"application_name": application_name},
    )
    assert pool is not None
    return pool
