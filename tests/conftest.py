"""Test databases on a real PostgreSQL.

The server is ``TEST_DATABASE_URL`` when set (any database on it; the tests create their
own), otherwise an embedded PostgreSQL (``pgserver``) started for the session in a
temporary directory. Migrations run once into a template database; every test that asks for
``database_url`` or ``pool`` gets a fresh database created from that template.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
import pytest
import pytest_asyncio

from database.migrate import upgrade_to_head
from database.pool import create_pool
from tests.redis_server import RedisServer

_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    """Compile the gettext catalogs before collection (some test modules build their
    ``I18n`` at import): the checkout's build step, strict (``scripts/catalogs.py``)."""
    from scripts.catalogs import compile_catalogs

    compile_catalogs()


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def _admin_execute(server_dsn: str, sql: str) -> None:
    with psycopg.connect(with_database(server_dsn, "postgres"), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """A DSN to a PostgreSQL server the tests may create databases on."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    # a short path: the server's Unix socket lives in it (108-byte limit)
    directory = Path(tempfile.mkdtemp(prefix="pgt"))
    server = pgserver.get_server(directory / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(pg_server_dsn: str) -> Iterator[str]:
    """Name of a database migrated to head once per session, used as a template."""
    name = f"tpl_{os.getpid()}"
    _admin_execute(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin_execute(pg_server_dsn, f'CREATE DATABASE "{name}"')
    upgrade_to_head(with_database(pg_server_dsn, name))
    try:
        yield name
    finally:
        _admin_execute(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_database_url(pg_server_dsn: str) -> Iterator[str]:
    """An empty database (no schema), dropped after the test."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    _admin_execute(pg_server_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(pg_server_dsn, name)
    finally:
        _admin_execute(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server_dsn: str, template_database: str) -> Iterator[str]:
    """A fresh database at the migration head, created from the template."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    _admin_execute(pg_server_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        yield with_database(pg_server_dsn, name)
    finally:
        _admin_execute(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on a fresh migrated database."""
    pool = await create_pool(database_url, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


REDIS_URL = os.environ.get("REDIS_URL")
"""The Redis server of the Redis tests (``scripts/test.sh`` sets it when the machine's Redis
answers); unset: those tests are skipped, saying so."""

needs_redis = pytest.mark.skipif(
    not REDIS_URL, reason="REDIS_URL is not set: no Redis server for this test"
)

_RUN_PREFIX = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
"""Every Redis key a test run writes starts with this: runs sharing one Redis never meet."""


@pytest_asyncio.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A Redis key prefix of this test alone (under the run's prefix); every key under it
    is deleted afterwards."""
    from redis.asyncio import Redis

    prefix = f"{_RUN_PREFIX}-{next(_counter)}"
    yield prefix
    redis = Redis.from_url(REDIS_URL or "")
    try:
        keys = [key async for key in redis.scan_iter(match=f"*{prefix}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server of this test alone (``tests.redis_server``), to stop and start again;
    skipped without ``redis-server``."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: cannot stop a Redis of this test's own")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
