"""The supervisor of background tasks: a crash is logged with its traceback, counted in
``bot_background_restarts_total{task}``, shown as down (``/readyz`` 503 naming the task)
and restarted after a capped, jittered exponential backoff."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.metrics import Metrics, Readiness, ops_routes
from database.migrate import head_revision
from recovery.supervisor import BackoffPolicy, Supervisor


class Flaky:
    """A task that crashes ``crashes`` times, then runs until ``stop`` is set."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0
        self.stop = asyncio.Event()
        self.running = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"crash {self.runs}")
        self.running.set()
        await self.stop.wait()


def _counted(metrics: Metrics, task: str) -> float:
    value = metrics.registry.get_sample_value("bot_background_restarts_total", {"task": task})
    return value or 0.0


async def test_a_crashed_task_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics("t", "polling")
    delays: list[float] = []

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)

    supervisor = Supervisor(
        BackoffPolicy(base_delay_s=1.0, max_delay_s=30.0),
        on_restart=lambda name: metrics.background_restarts.labels(name).inc(),
        sleep=no_wait,
    )
    flaky = Flaky(crashes=3)
    with caplog.at_level(logging.ERROR, logger="recovery.supervisor"):
        supervisor.start("sender", flaky)
        await asyncio.wait_for(flaky.running.wait(), 5)
    assert flaky.runs == 4
    assert _counted(metrics, "sender") == 3
    assert supervisor.down() == []  # running again
    assert [s.restarts for s in supervisor.states()] == [3]
    crashes = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crashes) == 3
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in crashes)
    # doubling: 1, 2, 4 s plus up to 1 s of jitter
    for n, delay in enumerate(delays, start=1):
        assert 2 ** (n - 1) <= delay <= 2 ** (n - 1) + 1.0
    flaky.stop.set()
    await supervisor.stop("sender", 1.0)
    assert supervisor.down() == []


def test_backoff_is_capped_and_jittered() -> None:
    policy = BackoffPolicy(base_delay_s=0.5, max_delay_s=8.0)
    delays = [policy.delay_s(n) for n in range(1, 30)]
    assert max(delays) <= 8.0
    assert delays[-1] == 8.0  # reached the cap and stays there
    assert len({policy.delay_s(2) for _ in range(20)}) > 1  # jitter
    with pytest.raises(ValueError):
        BackoffPolicy(base_delay_s=5.0, max_delay_s=1.0)


async def test_a_task_waiting_for_its_restart_is_down_then_up_again() -> None:
    gate, waiting = asyncio.Event(), asyncio.Event()

    async def held(seconds: float) -> None:
        waiting.set()
        await gate.wait()

    supervisor = Supervisor(sleep=held)
    flaky = Flaky(crashes=1)
    supervisor.start("outage_watch", flaky)
    await asyncio.wait_for(waiting.wait(), 5)
    assert supervisor.down() == ["outage_watch"]
    gate.set()
    await asyncio.wait_for(flaky.running.wait(), 5)
    assert supervisor.down() == []
    await supervisor.stop_all()
    assert supervisor.task("outage_watch").done()


async def test_a_task_that_returns_is_not_restarted() -> None:
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1

    supervisor = Supervisor()
    await supervisor.start("heartbeat", once)
    assert calls == 1
    assert supervisor.down() == []


async def test_a_crash_while_stopping_is_not_restarted() -> None:
    supervisor = Supervisor()
    flaky = Flaky(crashes=5)
    supervisor.stopping = True
    await supervisor.start("polling", flaky)
    assert flaky.runs == 1
    assert supervisor.down() == []


def test_record_failure_counts_a_job(caplog: pytest.LogCaptureFixture) -> None:
    counted: list[str] = []
    supervisor = Supervisor(on_restart=counted.append)
    with caplog.at_level(logging.ERROR, logger="recovery.supervisor"):
        supervisor.record_failure("job:cleanup", OSError("refused"))
    assert counted == ["job:cleanup"]
    assert caplog.records[-1].exc_info is not None
    assert supervisor.down() == []  # a job is not a long-lived task


async def test_readyz_is_503_naming_a_task_that_is_down(pool: asyncpg.Pool) -> None:
    gate, waiting = asyncio.Event(), asyncio.Event()

    async def held(seconds: float) -> None:
        waiting.set()
        await gate.wait()

    supervisor = Supervisor(sleep=held)
    metrics = Metrics("t", "polling")
    readiness = Readiness(pool, head_revision(), 2.0, metrics, tasks_down=supervisor.down)
    app = web.Application()
    app.add_routes(ops_routes(metrics, readiness))
    client = TestClient(TestServer(app))
    await client.start_server()
    flaky = Flaky(crashes=1)
    try:
        assert (await client.get("/readyz")).status == 200
        supervisor.start("notification_sender", flaky)
        await asyncio.wait_for(waiting.wait(), 5)
        response = await client.get("/readyz")
        body = await response.json()
        assert response.status == 503, body
        assert body["tasks_down"] == ["notification_sender"]
        gate.set()
        await asyncio.wait_for(flaky.running.wait(), 5)
        assert (await client.get("/readyz")).status == 200
    finally:
        flaky.stop.set()
        await supervisor.stop_all(1.0)
        await client.close()
