"""The error pipeline on a real PostgreSQL: exact counts when occurrences from many tasks
meet flushes, the reference shown is the one the admin finds, a real outage (the database
behind a TCP proxy that is cut) is spooled and written when the database answers again (and
the user is told "temporarily unavailable" with a reference that resolves afterwards), the
spool's bound and its drop counter, a retried batch counted once, HOT counter updates."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.types import Message, Update

from bot.i18n import create_i18n
from database import error_records
from database.pool import create_pool
from middlewares.enhanced_error_handler import EnhancedErrorHandlerMiddleware
from middlewares.error_messages import BY_CATEGORY, BY_CATEGORY_SEVERITY
from recovery.error_pipeline import ErrorPipeline
from recovery.error_stats import ErrorStatistics
from recovery.errors import ErrorCategory, ErrorHandler, ErrorSeverity, group_reference
from recovery.exceptions import ConcurrentModificationError, InputValidationError
from tests.fakes.bot_session import FakeBotSession
from tests.fakes.telegram_api import DEFAULT_TOKEN
from tests.integration.commit_cut_proxy import OutageProxy


def concurrent(request_id: int) -> BaseException:
    try:
        raise ConcurrentModificationError("request", request_id, 1)
    except ConcurrentModificationError as exc:
        return exc


def invalid(n: int) -> BaseException:
    try:
        raise InputValidationError("description", f"longer than {n}")
    except InputValidationError as exc:
        return exc


async def _until(predicate: object, what: str, attempts: int = 400) -> None:
    """Wait (up to ``attempts`` x 50 ms) for ``predicate()``; fail naming ``what``."""
    for _ in range(attempts):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def _counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT fingerprint, occurrence_count FROM error_records")
    return {r["fingerprint"]: r["occurrence_count"] for r in rows}


async def test_exact_counts_from_50_tasks_across_flushes(pool: asyncpg.Pool) -> None:
    handler = ErrorHandler(pool, pipeline=ErrorPipeline(pool, window_s=0.01))
    handler.start()
    per_task = 40
    shown: list[tuple[str | None, str]] = []

    async def user(task_no: int) -> None:
        for n in range(per_task):
            exc = concurrent(n) if (task_no + n) % 3 else invalid(n)
            record = await handler.handle(exc, context={"task": task_no})
            shown.append((record.reference, record.fingerprint))
            if n % 7 == 0:
                await asyncio.sleep(0.005)  # let the flush task cut the stream into batches

    async def flusher() -> None:  # explicit flushes in the middle of the stream as well
        for _ in range(20):
            await handler.flush()
            await asyncio.sleep(0.003)

    await asyncio.gather(*(user(t) for t in range(50)), flusher())
    assert await handler.stop()

    counts = await _counts(pool)
    expected: dict[str, int] = {}
    for _, fp in shown:
        expected[fp] = expected.get(fp, 0) + 1
    assert counts == expected
    assert sum(counts.values()) == 50 * per_task
    # the hourly rollup was written with the counters, occurrence for occurrence
    assert await pool.fetchval("SELECT sum(occurrences) FROM error_hourly_counts") == 50 * per_task
    # several batches did happen (the counts crossed flush boundaries)
    assert await pool.fetchval("SELECT seq FROM error_flush_marks") > 1
    # every reference shown finds its group
    for reference, fp in set(shown):
        assert reference == group_reference(fp)
        group = await ErrorStatistics(pool).lookup(reference or "")
        assert group is not None and group["fingerprint"] == fp
        assert group["reference"] == reference


async def test_occurrences_during_a_write_wait_for_the_next_one_without_backoff(
    pool: asyncpg.Pool,
) -> None:
    pipeline = ErrorPipeline(pool)
    pipeline.record(concurrent(1))
    writing = asyncio.create_task(pipeline.flush())
    await asyncio.sleep(0)  # the flush took its batch and waits for PostgreSQL
    pipeline.record(concurrent(2))
    assert await writing  # a success, not a failure to back off from
    assert pipeline.unreachable_since is None
    assert pipeline.held_occurrences == 1
    assert await pipeline.flush()
    assert sum((await _counts(pool)).values()) == 2


async def test_a_batch_retried_after_a_lost_answer_is_counted_once(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    batch = [
        error_records.GroupOccurrences(
            fingerprint="fp-1", reference="E-AAAAAA", category="system", severity="high",
            error_type="app.Boom", message="boom", location=None, stack_trace="app.Boom",
            context_json="{}", n=7, first_seen_at=now, last_seen_at=now,
            hours={now.replace(minute=0, second=0, microsecond=0): 7},
        )
    ]  # fmt: skip
    writer = uuid.uuid4()
    first = await error_records.record_batch(pool, batch, writer=writer, seq=1)
    assert first is not None and first[0].occurrence_count == 7
    # the same batch again (its first answer was lost): nothing changes
    assert await error_records.record_batch(pool, batch, writer=writer, seq=1) is None
    assert (await _counts(pool))["fp-1"] == 7
    assert await pool.fetchval("SELECT sum(occurrences) FROM error_hourly_counts") == 7
    second = await error_records.record_batch(pool, batch, writer=writer, seq=2)
    assert second is not None and second[0].occurrence_count == 14


async def test_counter_updates_are_hot(pool: asyncpg.Pool) -> None:
    pipeline = ErrorPipeline(pool)
    pipeline.record(concurrent(1))
    assert await pipeline.flush()  # the group's row, with its sample
    async with pool.acquire() as conn, conn.transaction():
        for n in range(10):
            pipeline.record(concurrent(n))
            group = pipeline.spool.take(pipeline._seq + 1)
            assert group is not None
            seq, held = group
            stored = await error_records.record_batch(
                conn, [pipeline._payload(fp, h) for fp, h in held.items()],
                writer=pipeline.writer, seq=seq,
            )  # fmt: skip
            assert stored is not None
            pipeline._seq = seq
            pipeline.spool.written()
        updated, hot = await conn.fetchrow(
            "SELECT pg_stat_get_xact_tuples_updated('error_records'::regclass), "
            "pg_stat_get_xact_tuples_hot_updated('error_records'::regclass)"
        )
    assert (updated, hot) == (10, 10)
    assert (await _counts(pool)) == {pipeline._keys[next(iter(pipeline._keys))]: 11}


async def test_the_spool_is_bounded_and_counts_what_it_drops(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    dropped: list[int] = []
    pipeline = ErrorPipeline(pool, max_groups=3, store_timeout_s=1, on_drop=dropped.append)
    await pool.close()  # the database is unreachable for this pool
    errors = [concurrent(1), invalid(1), RuntimeError("a"), KeyError("b"), ValueError("c")]
    for n, exc in enumerate(errors):
        for _ in range(n + 1):
            pipeline.record(exc)
        if n == 1:
            assert not await pipeline.flush()  # the first two groups are a failed batch
    assert pipeline.held_groups == 3
    assert pipeline.spool.dropped_groups == 2
    assert dropped == [1, 2]  # the oldest groups (1 and 2 occurrences) went first
    assert pipeline.spool.dropped_occurrences == 3
    assert pipeline.held_occurrences == 3 + 4 + 5


async def test_stop_with_the_database_away_ends_and_says_what_is_not_written(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    pipeline = ErrorPipeline(pool, window_s=0.01, store_timeout_s=1, backoff_base_s=0.01)
    pipeline.start()
    await pool.close()
    for n in range(3):
        pipeline.record(concurrent(n))
    await _until(lambda: pipeline.unreachable_since is not None, "a failed flush")
    assert not await pipeline.stop(timeout_s=1)  # returns, within its bound
    assert pipeline._task is not None and pipeline._task.done()
    assert "error records not written at shutdown: 3 occurrences of 1 groups" in caplog.text


async def test_stop_writes_what_is_held_when_the_database_returns_within_its_time(
    proxy: OutageProxy, pool: asyncpg.Pool
) -> None:
    through_proxy = await create_pool(proxy.dsn, min_size=1, max_size=2)
    pipeline = ErrorPipeline(
        through_proxy, window_s=0.02, store_timeout_s=1, backoff_base_s=0.05, backoff_max_s=0.2
    )
    pipeline.start()
    try:
        await proxy.down()
        for n in range(3):
            pipeline.record(concurrent(n))
        await _until(lambda: pipeline.unreachable_since is not None, "a failed flush")
        asyncio.get_running_loop().call_later(1.0, proxy.up)  # back during the stop
        assert await pipeline.stop(timeout_s=10)
        assert sum((await _counts(pool)).values()) == 3
    finally:
        with contextlib.suppress(Exception):
            await through_proxy.close()


async def test_an_outage_is_spooled_and_every_reference_resolves_afterwards(
    proxy: OutageProxy, pool: asyncpg.Pool
) -> None:
    through_proxy = await create_pool(proxy.dsn, min_size=1, max_size=4)
    pipeline = ErrorPipeline(
        through_proxy, window_s=0.02, store_timeout_s=1, backoff_base_s=0.05, backoff_max_s=0.2
    )
    handler = ErrorHandler(through_proxy, store_timeout_s=1, pipeline=pipeline)
    handler.start()
    try:
        before = await handler.handle(concurrent(1))
        assert await handler.flush()
        assert before.reference is not None

        await proxy.down()
        shown: dict[str, int] = {}
        for n in range(30):
            record = await handler.handle(concurrent(n))
            shown[record.reference or ""] = shown.get(record.reference or "", 0) + 1
        await _until(lambda: pipeline.unreachable_since is not None, "a failed flush")
        for n in range(20):
            record = await handler.handle(invalid(n))
            assert record.actions == ["spooled"]
            shown[record.reference or ""] = shown.get(record.reference or "", 0) + 1
        assert len(shown) == 2 and before.reference in shown
        # nothing of the outage is in the database yet (read past the proxy)
        assert sum((await _counts(pool)).values()) == 1
        assert pipeline.held_occurrences == 50

        proxy.up()
        await _until(lambda: pipeline.held_occurrences == 0, "the spool written")
        assert pipeline.unreachable_since is None
        for reference, n in shown.items():
            group = await ErrorStatistics(pool).lookup(reference)
            assert group is not None, reference
            assert group["occurrence_count"] == n + (1 if reference == before.reference else 0)
        assert sum((await _counts(pool)).values()) == 51
        assert await pool.fetchval("SELECT sum(occurrences) FROM error_hourly_counts") == 51
    finally:
        assert await handler.stop(timeout_s=5)
        with contextlib.suppress(Exception):
            await through_proxy.close()


async def test_a_user_during_the_outage_is_told_with_a_reference_that_resolves_afterwards(
    proxy: OutageProxy, pool: asyncpg.Pool
) -> None:
    through_proxy = await create_pool(proxy.dsn, min_size=1, max_size=2)
    pipeline = ErrorPipeline(
        through_proxy, window_s=0.02, store_timeout_s=1, backoff_base_s=0.05, backoff_max_s=0.2
    )
    handler = ErrorHandler(through_proxy, store_timeout_s=1, pipeline=pipeline)
    handler.start()
    i18n = create_i18n("en")
    session = FakeBotSession()
    bot = Bot(DEFAULT_TOKEN, session=session)
    router = Router()

    @router.message()
    async def needs_the_database(message: Message) -> None:
        await through_proxy.fetchval("SELECT 1")  # the database is away: this raises

    dp = Dispatcher()
    dp.update.outer_middleware(EnhancedErrorHandlerMiddleware(handler, i18n, "en"))
    dp.include_router(router)
    temporarily = {
        i18n.gettext(BY_CATEGORY[ErrorCategory.TRANSIENT], locale=lang) for lang in ("en", "ru")
    } | {
        i18n.gettext(BY_CATEGORY_SEVERITY[(ErrorCategory.TRANSIENT, ErrorSeverity.HIGH)],
                     locale=lang) for lang in ("en", "ru")
    }  # fmt: skip
    try:
        await proxy.down()
        shown: list[str] = []
        for n, lang in enumerate(["en", "ru", "en", "ru"]):
            update = Update.model_validate(
                {
                    "update_id": 700 + n,
                    "message": {
                        "message_id": n + 1, "date": 0, "text": "/my",
                        "chat": {"id": 4200 + n, "type": "private", "first_name": "U"},
                        "from": {"id": 4200 + n, "is_bot": False, "first_name": "U",
                                 "language_code": lang},
                    },
                },
                context={"bot": bot},
            )  # fmt: skip
            await dp.feed_update(bot, update)
            (reply,) = session.texts_to(4200 + n)
            first, second = reply.split("\n", 1)
            assert first in temporarily, reply  # the localized "temporarily unavailable"
            match = re.search(r"E-[A-Z2-9]{6}", second)
            assert match, reply
            shown.append(match.group())
        assert sum((await _counts(pool)).values()) == 0  # nothing written yet

        proxy.up()
        await _until(lambda: pipeline.held_occurrences == 0, "the spool written")
        for reference in set(shown):
            group = await ErrorStatistics(pool).lookup(reference)
            assert group is not None, reference
            assert group["category"] == ErrorCategory.TRANSIENT
            assert group["occurrence_count"] == shown.count(reference)
    finally:
        assert await handler.stop(timeout_s=5)
        await bot.session.close()
        with contextlib.suppress(Exception):
            await through_proxy.close()


async def test_a_critical_error_during_the_outage_alerts_the_admins_afterwards(
    proxy: OutageProxy, pool: asyncpg.Pool
) -> None:
    through_proxy = await create_pool(proxy.dsn, min_size=1, max_size=2)
    pipeline = ErrorPipeline(
        through_proxy, window_s=0.02, store_timeout_s=1, backoff_base_s=0.05, backoff_max_s=0.2
    )
    handler = ErrorHandler(through_proxy, admin_ids=[42], store_timeout_s=1, pipeline=pipeline)
    handler.start()
    try:
        await proxy.down()
        records = [await handler.handle(too_many_connections()) for _ in range(3)]
        assert all(record.severity is ErrorSeverity.CRITICAL for record in records)
        assert records[-1].actions == ["spooled"]
        proxy.up()
        assert await handler.flush()
        alerts = await pool.fetch(
            "SELECT chat_id, params FROM pending_notifications"
            " WHERE template_key = 'admin.error_alert'"
        )
        assert [(a["chat_id"], a["params"]["reference"]) for a in alerts] == [
            (42, records[0].reference)
        ]
        assert await handler.flush()  # held once: no second alert
        assert await pool.fetchval("SELECT count(*) FROM pending_notifications") == 1
    finally:
        assert await handler.stop(timeout_s=5)
        with contextlib.suppress(Exception):
            await through_proxy.close()


def too_many_connections() -> BaseException:
    """SQLSTATE 53300, critical: what a database at its connection limit answers."""
    try:
        raise asyncpg.TooManyConnectionsError("sorry, too many clients already")
    except asyncpg.TooManyConnectionsError as exc:
        return exc
