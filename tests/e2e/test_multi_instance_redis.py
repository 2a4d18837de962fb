"""With ``REDIS_URL`` the FSM storage is shared: a /new conversation started on one
instance continues on the other, step by step, as a load balancer would route it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from database.pool import create_pool
from handlers.callbacks import NewRequestCb
from tests.e2e.instances import Cluster, eventually
from tests.fakes.telegram_api import FakeTelegramAPI

REDIS_URL = os.environ.get("REDIS_URL")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not REDIS_URL, reason="REDIS_URL is not set: the shared FSM storage needs a Redis server"
    ),
]

CLIENT = 885_000_001


@pytest_asyncio.fixture
async def key_prefix() -> AsyncIterator[str]:
    """A Redis key prefix of this test alone; its keys are deleted afterwards."""
    from redis.asyncio import Redis

    prefix = f"fsm-test-{uuid.uuid4().hex}"
    yield prefix
    redis = Redis.from_url(REDIS_URL or "")
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def test_a_conversation_moves_between_instances(
    fake_api: FakeTelegramAPI, cluster: Cluster, database_url: str, key_prefix: str
) -> None:
    shared = {
        "REDIS_URL": REDIS_URL or "",
        "REDIS_KEY_PREFIX": key_prefix,
        "SCHEDULER_ENABLED": "false",
    }
    a, b = await asyncio.gather(
        cluster.start("a", fake_api, **shared), cluster.start("b", fake_api, **shared)
    )

    # step 1 on a: /new asks for the type
    assert await a.post_update(fake_api.push_message(CLIENT, "/new")) == 200
    await eventually(lambda: "What do you need?" in _texts(fake_api))
    # step 2 on b: the type is chosen; b puts the conversation in its next state
    pick = fake_api.push_callback(CLIENT, NewRequestCb(workflow_type="repair").pack())
    assert await b.post_update(pick) == 200
    await eventually(lambda: any(t.startswith("Describe the problem") for t in _texts(fake_api)))
    # step 3 on a again: a knows the state b set, and opens the request
    described = fake_api.push_message(CLIENT, "Router dead, 5 Main Street")
    assert await a.post_update(described) == 200
    await eventually(lambda: any("is open" in text for text in _texts(fake_api)))

    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        requests = await db.fetch(
            "SELECT r.* FROM service_requests r JOIN users u ON u.id = r.client_id "
            "WHERE u.telegram_id = $1",
            CLIENT,
        )
        handled_by = await _handled_by(db)
    finally:
        await db.close()
    assert len(requests) == 1
    assert requests[0]["workflow_type"] == "repair"
    assert requests[0]["description"] == "Router dead, 5 Main Street"
    assert handled_by == ["a", "b", "a"]


def _texts(api: FakeTelegramAPI) -> list[str]:
    """What the bot said to the client so far (the request's own status notification may
    come after the handler's answer)."""
    return [message.get("text", "") for message in api.messages_to(CLIENT)]


async def _handled_by(db: asyncpg.Pool) -> list[str]:
    rows = await db.fetch("SELECT instance_id FROM processed_updates ORDER BY update_id")
    return [row["instance_id"] for row in rows]
