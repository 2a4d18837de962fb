"""``Supervisor``: every long-lived background task of a process, kept running.

A supervised task is a coroutine function that runs until it is cancelled or returns (it
returns when its own stop signal says so). When it raises instead, the supervisor:

1. logs the exception with its traceback (``log.error(..., exc_info=exc)``);
2. counts the restart (``on_restart(name)``: ``bot_background_restarts_total{task}``);
3. marks the task *down* (health screen, ``/readyz`` answers 503 naming it) until it runs
   again;
4. restarts it after a capped exponential backoff with jitter:
   ``min(base_delay_s * 2**(n-1) + uniform(0, base_delay_s), max_delay_s)`` for the n-th
   restart in a row (the formula of tenacity's ``wait_exponential_jitter``: a floor that
   doubles, so a crash loop never spins, and jitter, so instances do not restart in step);
   a run that lasted at least ``stable_after_s`` seconds resets n to 1.

Periodic jobs are not long-lived tasks (each firing is its own run, and the next firing is
the restart); an exception that escapes a job's own bookkeeping is reported here with
``record_failure`` so it is logged and counted the same way, without marking anything down.

The core imports no aiogram: the bot layer hands in coroutine functions and callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Coroutine[Any, Any, None]]
"""Makes one run of a supervised task (called again for each restart)."""


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delays between restarts of a crashed task, in seconds.

    Raises:
        ValueError: on construction, when a delay is not positive or ``max_delay_s`` is
            below ``base_delay_s``.
    """

    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.base_delay_s <= 0 or self.stable_after_s <= 0:
            raise ValueError("backoff delays must be positive")
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must not be below base_delay_s")

    def delay_s(self, restart: int) -> float:
        """Seconds to wait before restart number ``restart`` (1, 2, ...) in a row."""
        exponent = min(max(restart, 1) - 1, 60)  # 2**60 s is past any cap
        floor = self.base_delay_s * 2.0**exponent
        return min(floor + random.uniform(0, self.base_delay_s), self.max_delay_s)


@dataclass(slots=True)
class TaskState:
    """What the supervisor knows of one task: ``up`` while a run is in progress."""

    name: str
    up: bool = False
    restarts: int = 0
    last_error: str | None = None
    down_since: float | None = None
    """``time.time()`` of the crash that took it down (None while up)."""


class Supervisor:
    """Starts, watches and restarts the process's long-lived tasks (see the module doc).

    Args:
        policy: restart delays (``BACKGROUND_RESTART_*`` settings).
        on_restart: called with the task's name on each crash (the metrics counter).
        sleep: the wait between a crash and the restart (patched in tests).
    """

    def __init__(
        self,
        policy: BackoffPolicy | None = None,
        *,
        on_restart: Callable[[str], None] | None = None,
        sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self.on_restart = on_restart
        self._sleep = sleep
        self._states: dict[str, TaskState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping = False

    def start(self, name: str, factory: TaskFactory) -> asyncio.Task[None]:
        """Run ``factory()`` as task ``name`` under supervision; returns the watching task.

        Raises:
            ValueError: a task of that name is already supervised.
        """
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"task {name!r} is already supervised")
        self._states[name] = TaskState(name)
        task = asyncio.get_running_loop().create_task(self._watch(name, factory), name=name)
        self._tasks[name] = task
        return task

    async def _watch(self, name: str, factory: TaskFactory) -> None:
        state = self._states[name]
        in_a_row = 0
        while True:
            state.up, state.down_since = True, None
            started = time.monotonic()
            try:
                await factory()
            except asyncio.CancelledError:
                state.up = False
                raise
            except Exception as exc:
                if self.stopping:
                    log.info("background task %s ended with %s while stopping", name, exc)
                    state.up = False
                    return
                stable = time.monotonic() - started >= self.policy.stable_after_s
                in_a_row = 1 if stable else in_a_row + 1
                delay = self.policy.delay_s(in_a_row)
                self._crashed(state, exc, delay)
                await self._sleep(delay)
                if self.stopping:
                    return
                log.info("background task %s restarting (restart %d)", name, state.restarts)
                continue
            state.up = False
            return

    def _crashed(self, state: TaskState, exc: BaseException, delay_s: float) -> None:
        state.up = False
        state.restarts += 1
        state.down_since = time.time()
        state.last_error = type(exc).__name__
        log.error(
            "background task %s crashed; restart in %.1f s", state.name, delay_s, exc_info=exc
        )
        if self.on_restart is not None:
            self.on_restart(state.name)

    def record_failure(self, name: str, exc: BaseException) -> None:
        """Log and count an exception of a periodic job (``name``) that escaped its own
        handling; the next firing is its restart, so nothing is marked down."""
        log.error("background job %s failed", name, exc_info=exc)
        if self.on_restart is not None:
            self.on_restart(name)

    def states(self) -> list[TaskState]:
        """Every supervised task, in start order."""
        return list(self._states.values())

    def down(self) -> list[str]:
        """Names of the tasks waiting to be restarted after a crash."""
        return [s.name for s in self._states.values() if s.down_since is not None]

    def task(self, name: str) -> asyncio.Task[None] | None:
        """The watching task of ``name`` (None if never started)."""
        return self._tasks.get(name)

    async def stop(self, name: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for ``name`` to return by itself (its own stop
        signal was set), then cancel it. Returns whether it ended by itself."""
        task = self._tasks.get(name)
        if task is None:
            return True
        state = self._states[name]
        if state.down_since is not None:  # waiting out its backoff: nothing to finish
            timeout_s = 0.0
        done, _ = await asyncio.wait({task}, timeout=max(timeout_s, 0.0))
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return bool(done)

    async def stop_all(self, timeout_s: float = 0.0) -> None:
        """No more restarts; wait up to ``timeout_s`` seconds, then cancel what is left."""
        self.stopping = True
        for name in list(self._tasks):
            await self.stop(name, timeout_s)
