"""Grouped update-id claims (``recovery.update_claims``): each id is taken once across
instances and concurrent deliveries, claims waiting together go out as one statement, a
failed statement fails its group and the next claim works on a fresh connection."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from recovery.update_claims import UpdateClaims


async def test_each_id_is_taken_once(pool: asyncpg.Pool) -> None:
    one, other = UpdateClaims(pool, "one"), UpdateClaims(pool, "other")
    try:
        assert await one.claim(1)
        assert not await one.claim(1)  # a redelivery to the same instance
        assert not await other.claim(1)  # ... or to another one
        assert await other.claim(2)
        # concurrent deliveries, the same ids twice in one group and across instances
        ids = [*range(10, 60), *range(10, 60)]
        results = await asyncio.gather(
            *(one.claim(i) for i in ids[:50]), *(other.claim(i) for i in ids[50:])
        )
        taken = [i for i, ok in zip(ids, results, strict=True) if ok]
        assert sorted(taken) == list(range(10, 60))
        rows = await pool.fetch("SELECT update_id, instance_id FROM processed_updates")
        assert len(rows) == 52
    finally:
        await one.close()
        await other.close()


async def test_waiting_claims_go_out_as_one_statement(pool: asyncpg.Pool) -> None:
    claims = UpdateClaims(pool, "one")
    statements: list[str] = []
    try:
        assert await claims.claim(1)  # the held connection is open now
        conn = claims._conn
        assert conn is not None
        conn.add_query_logger(lambda record: statements.append(record.query))
        assert all(await asyncio.gather(*(claims.claim(i) for i in range(100, 150))))
        await asyncio.sleep(0)
        assert len(statements) == 1  # the 50 claims made together: one statement
    finally:
        await claims.close()


async def test_a_failed_statement_fails_its_group_and_the_next_claim_works(
    pool: asyncpg.Pool,
) -> None:
    claims = UpdateClaims(pool, "one")
    try:
        assert await claims.claim(1)
        conn = claims._conn
        assert conn is not None
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        with pytest.raises(Exception):  # noqa: B017 (the connection-lost family)
            await claims.claim(2)
        assert claims._conn is None  # given back
        assert await claims.claim(2)  # on a fresh connection
        assert not await claims.claim(1)
    finally:
        await claims.close()
    await asyncio.wait_for(pool.close(), 5)  # nothing is held any more
