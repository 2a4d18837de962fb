"""Periodic jobs on a real PostgreSQL: one run per job and interval across instances, a
dead instance's run taken over, shutdown cancelling a run, and the cleanup job's counts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg
import pytest_asyncio
from aiogram import Bot

from bot.app import build_services
from bot.i18n import create_i18n
from bot.metrics import Metrics
from bot.scheduler import JobRunner, build_scheduler, cleanup, job_table, phase_s
from bot.services import Services
from bot.settings import Settings
from database import job_runs
from tests.fakes.telegram_api import DEFAULT_TOKEN

# A slot this long does not end while a test runs (floor(now / 1e9) changes in 2033).
LONG = 1e9

MakeServices = Callable[..., Services]


@pytest_asyncio.fixture
async def make_services(pool: asyncpg.Pool) -> AsyncIterator[MakeServices]:
    """Factory: the services of one instance (own metrics) on the test database."""
    bots: list[Bot] = []

    def make(instance_id: str, **settings: object) -> Services:
        config = Settings(_env_file=None, bot_token=DEFAULT_TOKEN, instance_id=instance_id,
                          **settings)  # fmt: skip
        bot = Bot(DEFAULT_TOKEN)  # never called by these jobs
        bots.append(bot)
        metrics = Metrics(instance_id, "polling")
        return build_services(config, pool, create_i18n("en"), bot, metrics)

    yield make
    for bot in bots:
        await bot.session.close()


def outcomes(*services: Services, job: str) -> dict[str, float]:
    """bot_job_runs_total{job} by outcome, summed over instances."""
    totals: dict[str, float] = {}
    for svc in services:
        assert svc.metrics is not None
        for family in svc.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == "bot_job_runs_total" and sample.labels["job"] == job:
                    outcome = sample.labels["outcome"]
                    totals[outcome] = totals.get(outcome, 0) + sample.value
    return totals


async def test_a_slot_runs_once_however_many_instances_fire(
    pool: asyncpg.Pool, make_services: MakeServices
) -> None:
    a, b = make_services("a"), make_services("b")
    runners = [JobRunner(a, "a"), JobRunner(b, "b")]
    calls = itertools.count()

    async def probe(services: Services) -> dict[str, int]:
        n = next(calls) + 1
        await asyncio.sleep(0.05)  # long enough for the others to meet the lock
        return {"n": n}

    results = await asyncio.gather(*(r.run("probe", probe, LONG) for r in runners * 5))
    assert [r for r in results if r is not None] == [{"n": 1}]
    # a later firing in the same interval finds the run done
    assert await runners[1].run("probe", probe, LONG) is None
    assert next(calls) == 1

    rows = await pool.fetch("SELECT * FROM job_runs WHERE job_name = 'probe'")
    assert len(rows) == 1
    assert rows[0]["status"] == "ok"
    assert rows[0]["result"] == {"n": 1}
    assert rows[0]["finished_at"] >= rows[0]["started_at"]
    totals = outcomes(a, b, job="probe")
    assert totals["ok"] == 1
    assert totals["skipped_locked"] + totals["skipped_done"] == 10


async def test_the_next_interval_runs_again(
    pool: asyncpg.Pool, make_services: MakeServices
) -> None:
    runner = JobRunner(make_services("a"), "a")

    async def probe(services: Services) -> str:
        return "ran"

    assert await runner.run("probe", probe, 0.5) == "ran"
    first = await pool.fetchval("SELECT slot_start FROM job_runs WHERE job_name = 'probe'")
    # wait on the database clock until the next half-second slot has begun
    for _ in range(100):
        slot = await pool.fetchval(
            "SELECT to_timestamp(floor(extract(epoch FROM now()) / 0.5) * 0.5)"
        )
        if slot != first:
            break
        await asyncio.sleep(0.05)
    assert await runner.run("probe", probe, 0.5) == "ran"
    slots = [
        r["slot_start"]
        for r in await pool.fetch(
            "SELECT slot_start FROM job_runs WHERE job_name = 'probe' AND status = 'ok' "
            "ORDER BY slot_start"
        )
    ]
    assert len(slots) == 2
    assert (slots[1] - slots[0]).total_seconds() % 0.5 == 0
    assert slots[1] > slots[0]


async def test_a_dead_instances_run_is_abandoned_and_taken_over(
    pool: asyncpg.Pool, database_url: str, make_services: MakeServices
) -> None:
    # instance "dead" holds the job's lock and has started this slot's run ...
    dead = await asyncpg.connect(database_url)
    assert await dead.fetchval("SELECT pg_try_advisory_lock(hashtext('job:probe'))")
    assert await job_runs.begin(dead, "probe", LONG, "dead") is not None
    b = make_services("b")
    runner = JobRunner(b, "b")
    ran: list[str] = []

    async def probe(services: Services) -> str:
        ran.append(services.settings.instance_id or "")
        return "taken over"

    # ... so while it lives, the others are turned away
    assert await runner.run("probe", probe, LONG) is None
    assert outcomes(b, job="probe")["skipped_locked"] == 1
    # then its connection drops (the process died): PostgreSQL frees the lock
    dead.terminate()
    for _ in range(100):
        if await runner.run("probe", probe, LONG) is not None:
            break
        await asyncio.sleep(0.05)
    assert ran == ["b"]

    rows = await pool.fetch("SELECT * FROM job_runs WHERE job_name = 'probe' ORDER BY id")
    assert [(r["instance_id"], r["status"]) for r in rows] == [("dead", "abandoned"), ("b", "ok")]
    assert rows[0]["slot_start"] == rows[1]["slot_start"]
    assert "dead stopped before finishing" in rows[0]["error"]
    assert rows[0]["finished_at"] is not None


async def test_a_failed_run_is_recorded_masked_and_counts_for_its_interval(
    pool: asyncpg.Pool, make_services: MakeServices
) -> None:
    a = make_services("a")
    runner = JobRunner(a, "a")

    async def broken(services: Services) -> None:
        raise RuntimeError("cannot reach +998 90 123 45 67")

    assert await runner.run("broken", broken, LONG) is None
    row = await pool.fetchrow("SELECT * FROM job_runs WHERE job_name = 'broken'")
    assert row["status"] == "failed"
    assert row["error"].startswith("RuntimeError: cannot reach")
    assert "123 45 67" not in row["error"]
    assert await a.error_handler.flush()  # the error pipeline's write, without its window
    errors = await pool.fetch("SELECT * FROM error_records")
    assert len(errors) == 1
    assert errors[0]["context"]["job"] == "broken"
    assert outcomes(a, job="broken")["failed"] == 1
    assert await runner.run("broken", broken, LONG) is None
    assert outcomes(a, job="broken")["skipped_done"] == 1


async def test_shutdown_cancels_a_running_job_and_frees_its_slot(
    pool: asyncpg.Pool, make_services: MakeServices
) -> None:
    a_runner = JobRunner(make_services("a"), "a")
    b_runner = JobRunner(make_services("b"), "b")
    started = asyncio.Event()

    async def endless(services: Services) -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(a_runner.run("probe", endless, LONG))
    await asyncio.wait_for(started.wait(), 10)
    assert await a_runner.stop(grace_s=0.1) == 1
    assert await task is None
    assert await a_runner.run("probe", endless, LONG) is None  # stopping: takes no new run

    async def quick(services: Services) -> str:
        return "done"

    assert await b_runner.run("probe", quick, LONG) == "done"
    rows = await pool.fetch("SELECT * FROM job_runs WHERE job_name = 'probe' ORDER BY id")
    assert [(r["instance_id"], r["status"]) for r in rows] == [("a", "cancelled"), ("b", "ok")]
    assert rows[0]["slot_start"] == rows[1]["slot_start"]


async def test_cleanup_removes_rows_past_their_retention_and_reports_counts(
    pool: asyncpg.Pool, make_services: MakeServices
) -> None:
    services = make_services(
        "a",
        error_retention_days=10,
        transaction_log_retention_days=5,
        health_snapshot_retention_days=3,
        job_run_retention_days=7,
        processed_update_retention_days=2,
        notification_retention_days=14,
    )
    ages = {  # table -> ages in days of the rows to insert; past retention -> removed
        "error_records": [20, 11, 9, 0],
        "transaction_log": [6, 6, 6, 4],
        "system_health_snapshots": [4, 1],
        "job_runs": [8, 8, 1],
        "processed_updates": [3, 3, 3, 3, 1],
        "pending_notifications": [15, 15, 13],  # all 'sent'
    }
    for n, days in enumerate(ages["error_records"]):
        await pool.execute(  # a group and its hour in the rollup, as the error pipeline writes
            "WITH e AS (INSERT INTO error_records (reference, fingerprint, category, severity, "
            "error_type, message, last_seen_at) VALUES ($1, $1, 'system', 'high', 'E', 'm', "
            "now() - make_interval(days => $2)) RETURNING *) "
            "INSERT INTO error_hourly_counts (hour, record_id, category, severity, occurrences) "
            "SELECT date_trunc('hour', last_seen_at, 'UTC'), id, category, severity, 1 FROM e",
            f"E-{n}",
            days,
        )
    for days in ages["transaction_log"]:
        await pool.execute(
            "INSERT INTO transaction_log (transaction_id, operation, status, created_at) "
            "VALUES (gen_random_uuid(), 'op', 'committed', now() - make_interval(days => $1))",
            days,
        )
    for days in ages["system_health_snapshots"]:
        await pool.execute(
            "INSERT INTO system_health_snapshots (status, metrics, created_at) "
            "VALUES ('healthy', '{}', now() - make_interval(days => $1))",
            days,
        )
    for n, days in enumerate(ages["job_runs"]):
        await pool.execute(
            "INSERT INTO job_runs (job_name, slot_start, interval_s, instance_id, status, "
            "started_at) VALUES ('old', to_timestamp($1), 1, 'x', 'ok', "
            "now() - make_interval(days => $2))",
            n,
            days,
        )
    for n, days in enumerate(ages["processed_updates"]):
        await pool.execute(
            "INSERT INTO processed_updates (update_id, instance_id, received_at) "
            "VALUES ($1, 'x', now() - make_interval(days => $2))",
            n,
            days,
        )
    for n, days in enumerate(ages["pending_notifications"]):
        await pool.execute(
            "INSERT INTO pending_notifications (idempotency_key, chat_id, template_key, status, "
            "sent_at, updated_at) VALUES ($1, 1, 'admin.text', 'sent', now(), "
            "now() - make_interval(days => $2))",
            f"old-{n}",
            days,
        )
    expected = {
        "error_records": 2,
        "transaction_log": 3,
        "system_health_snapshots": 1,
        "job_runs": 2,
        "processed_updates": 4,
        "pending_notifications": 2,
    }

    result = await JobRunner(services, "a").run("cleanup", cleanup, 86400)

    # plus the dashboard's error rollup: the hour row of the 9-day-old group (retention 3 days)
    reported = {**expected, "dashboard": 1}
    assert result == reported
    for table, removed in expected.items():
        left = await pool.fetchval(f"SELECT count(*) FROM {table}")
        extra = 1 if table == "job_runs" else 0  # the cleanup run's own row
        assert left == len(ages[table]) - removed + extra, table
    run = await pool.fetchrow("SELECT * FROM job_runs WHERE job_name = 'cleanup'")
    assert run["status"] == "ok"
    assert run["result"] == reported
    assert services.metrics is not None
    removed_metric = {
        s.labels["table"]: s.value
        for f in services.metrics.registry.collect()
        for s in f.samples
        if s.name == "bot_cleanup_removed_rows_total"
    }
    assert removed_metric == reported


def test_jobs_fire_on_an_epoch_aligned_grid(make_services: MakeServices) -> None:
    services = make_services("a", job_health_interval_s=300, job_cleanup_interval_s=86400)
    scheduler = build_scheduler(services)
    table = job_table(services)
    assert {job.id for job in scheduler.get_jobs()} == set(table)
    now = datetime.now(UTC)
    for job in scheduler.get_jobs():
        interval = table[job.id][1]
        fire = job.trigger.get_next_fire_time(None, now)
        assert fire >= now
        assert (fire - now).total_seconds() <= interval
        assert fire.timestamp() % interval == phase_s(interval)
