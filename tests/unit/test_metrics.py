"""Metrics, liveness and readiness endpoints, the error observers and update tracking
(deduplication, in-flight waiting), against a real PostgreSQL and the Bot API fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message, Update
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.app import build_services
from bot.error_observers import ObservedErrorHandler, count_errors
from bot.i18n import create_i18n
from bot.metrics import Metrics, Readiness, ops_routes, refresh_shared_gauges
from bot.settings import Settings
from database import processed_updates
from database.migrate import head_revision
from database.pool import create_pool
from middlewares.updates import UpdateTrackingMiddleware
from tests.e2e.instances import metric, parse_metrics
from tests.factories import make_request, make_user
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI


async def _client(
    metrics: Metrics, readiness: Readiness, refresh: object = None
) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    app.add_routes(ops_routes(metrics, readiness, refresh))  # type: ignore[arg-type]
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_ready_when_the_database_answers_at_head(pool: asyncpg.Pool) -> None:
    metrics = Metrics("t", "webhook")
    client = await _client(metrics, Readiness(pool, head_revision(), 2.0, metrics))
    try:
        response = await client.get("/readyz")
        body = await response.json()
        assert response.status == 200, body
        assert body["status"] == "ready"
        assert body["revision"] == head_revision()
        assert (await client.get("/healthz")).status == 200
        assert metric(parse_metrics(await (await client.get("/metrics")).text()),
                      "bot_database_up") == 1  # fmt: skip
    finally:
        await client.close()


async def test_not_ready_while_draining(pool: asyncpg.Pool) -> None:
    readiness = Readiness(pool, head_revision(), 2.0)
    client = await _client(Metrics("t", "webhook"), readiness)
    try:
        readiness.draining = True
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["draining"] is True
        assert (await client.get("/healthz")).status == 200  # alive all the same
    finally:
        await client.close()


async def test_not_ready_when_the_schema_is_behind(fresh_database_url: str) -> None:
    empty = await create_pool(fresh_database_url, min_size=1, max_size=2)
    client = await _client(Metrics("t", "webhook"), Readiness(empty, head_revision(), 2.0))
    try:
        response = await client.get("/readyz")
        body = await response.json()
        assert response.status == 503
        assert body["database"] == "ok"
        assert body["schema"] == "behind"
        assert body["revision"] is None
    finally:
        await client.close()
        await empty.close()


async def test_not_ready_when_the_schema_is_not_this_codes_head(pool: asyncpg.Pool) -> None:
    client = await _client(Metrics("t", "webhook"), Readiness(pool, "9999_future", 2.0))
    try:
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["schema"] == "not at head"
    finally:
        await client.close()


async def test_not_ready_and_database_down_when_unreachable(database_url: str) -> None:
    gone = await create_pool(database_url, min_size=1, max_size=2)
    await gone.close()
    metrics = Metrics("t", "webhook")

    async def refresh() -> None:
        await refresh_shared_gauges(metrics, gone, _no_stuck)

    client = await _client(metrics, Readiness(gone, head_revision(), 1.0, metrics), refresh)
    try:
        response = await client.get("/readyz")
        body = await response.json()
        assert response.status == 503
        assert body["database"] == "unreachable"
        # a scrape still answers, with the database marked down
        scrape = await client.get("/metrics")
        assert scrape.status == 200
        assert metric(parse_metrics(await scrape.text()), "bot_database_up") == 0
    finally:
        await client.close()


async def _no_stuck() -> int:
    return 0


async def test_a_scrape_reads_the_shared_figures_from_the_database(pool: asyncpg.Pool) -> None:
    client_user = await make_user(pool)
    await make_request(pool, client_id=client_user["id"], hours_in_state=30)
    for n, status in enumerate(["pending", "retrying", "retrying", "dead", "sent"]):
        await pool.execute(
            "INSERT INTO pending_notifications (idempotency_key, chat_id, template_key, status) "
            "VALUES ($1, 1, 'admin.text', $2)",
            f"k{n}",
            status,
        )
    metrics = Metrics("t", "webhook")
    services = build_services(
        Settings(_env_file=None, bot_token=DEFAULT_TOKEN), pool, create_i18n("en"),
        Bot(DEFAULT_TOKEN), metrics,
    )  # fmt: skip

    async def count_stuck() -> int:
        return (await services.workflow_recovery.find_stuck(limit=1)).total

    async def refresh() -> None:
        await refresh_shared_gauges(metrics, pool, count_stuck)

    client = await _client(metrics, Readiness(pool, head_revision()), refresh)
    try:
        samples = parse_metrics(await (await client.get("/metrics")).text())
    finally:
        await client.close()
    assert metric(samples, "bot_notification_retry_queue_depth") == 2
    assert metric(samples, "bot_notification_rows", status="dead") == 1
    assert metric(samples, "bot_notification_rows", status="sent") == 1
    assert metric(samples, "bot_notification_rows", status="sending") == 0
    assert metric(samples, "bot_stuck_workflows") == 1
    assert metric(samples, "bot_instance_info", instance="t", mode="webhook") == 1


async def test_recorded_errors_are_counted_and_a_broken_observer_changes_nothing(
    pool: asyncpg.Pool,
) -> None:
    metrics = Metrics("t", "polling")

    def broken(record: object, exc: BaseException) -> None:
        raise RuntimeError("observer bug")

    handler = ObservedErrorHandler(pool, observers=[broken, count_errors(metrics)])
    record = await handler.handle(ValueError("bad input"), context={"where": "test"})
    assert record.reference is not None
    samples = parse_metrics(metrics.render().decode())
    counted = metric(samples, "bot_errors_total", category=record.category.value,
                     severity=record.severity.value)  # fmt: skip
    assert counted == 1
    assert metric(samples, "bot_errors_total") == 1
    assert await handler.flush()  # the error pipeline's write, without its window
    assert await pool.fetchval("SELECT count(*) FROM error_records") == 1


@pytest_asyncio.fixture
async def api() -> AsyncIterator[FakeTelegramAPI]:
    """The Bot API fake."""
    async with FakeTelegramAPI(token=DEFAULT_TOKEN) as fake:
        yield fake


def _dispatch(api: FakeTelegramAPI, tracker: UpdateTrackingMiddleware) -> tuple[Bot, Dispatcher]:
    """A dispatcher with the tracker outermost and one handler echoing the text (the
    project's routers can be attached to one dispatcher per process only)."""
    bot = Bot(DEFAULT_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(api.base_url)))
    dp = Dispatcher()
    dp.update.outer_middleware(tracker)
    router = Router()

    @router.message()
    async def echo(message: Message) -> None:
        await message.answer(f"echo: {message.text}")

    dp.include_router(router)
    return bot, dp


async def test_a_redelivered_update_is_handled_once(
    pool: asyncpg.Pool, api: FakeTelegramAPI
) -> None:
    metrics = Metrics("t", "webhook")

    async def claim(update_id: int) -> bool:
        return await processed_updates.claim(pool, update_id, "t")

    tracker = UpdateTrackingMiddleware(metrics, claim=claim)
    bot, dp = _dispatch(api, tracker)
    try:
        update = api.push_message(42, "/start")
        await asyncio.gather(*(dp.feed_raw_update(bot, update) for _ in range(3)))
        await dp.feed_raw_update(bot, update)
    finally:
        await bot.session.close()
    assert len(api.messages_to(42)) == 1
    samples = parse_metrics(metrics.render().decode())
    assert metric(samples, "bot_updates_total", update_type="message", outcome="handled") == 1
    assert metric(samples, "bot_updates_total", update_type="message", outcome="duplicate") == 3
    assert metric(samples, "bot_updates_in_flight") == 0
    assert await pool.fetchval("SELECT instance_id FROM processed_updates") == "t"


async def test_an_update_is_handled_when_its_id_cannot_be_recorded(
    pool: asyncpg.Pool, api: FakeTelegramAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async def claim(update_id: int) -> bool:
        raise ConnectionRefusedError("database down")

    tracker = UpdateTrackingMiddleware(Metrics("t", "webhook"), claim=claim)
    bot, dp = _dispatch(api, tracker)
    try:
        await dp.feed_raw_update(bot, api.push_message(43, "/start"))
    finally:
        await bot.session.close()
    assert len(api.messages_to(43)) == 1
    assert "handling it anyway" in caplog.text


async def test_shutdown_waits_for_the_updates_in_flight() -> None:
    tracker = UpdateTrackingMiddleware()
    release = asyncio.Event()
    finished: list[int] = []

    async def slow_handler(event: object, data: dict[str, object]) -> str:
        await release.wait()
        finished.append(1)
        return "done"

    update = Update.model_validate({"update_id": 1})  # a kind aiogram does not know
    task = asyncio.create_task(tracker(slow_handler, update, {}))
    await asyncio.sleep(0)
    assert tracker.in_flight == 1
    assert await tracker.wait_idle(0.05) is False  # still running
    release.set()
    assert await tracker.wait_idle(5) is True
    assert finished == [1]
    assert await task == "done"
    assert tracker.in_flight == 0
