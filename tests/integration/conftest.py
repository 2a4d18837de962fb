"""Integration fixtures shared by several files: the database behind a TCP proxy that can be
taken down (``OutageProxy``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.integration.commit_cut_proxy import OutageProxy


@pytest_asyncio.fixture
async def proxy(database_url: str) -> AsyncIterator[OutageProxy]:
    """The test database behind an ``OutageProxy`` (``proxy.dsn``), closed afterwards."""
    relay = OutageProxy(database_url)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()
