"""Outages of what the bot depends on (PostgreSQL, Telegram), and the one alert for each.

An ``OutageTracker`` hears of each attempt to use one dependency (``failure``/``success``).
An outage runs from the first failure after a success to the next success. When one that
lasted at least ``threshold_s`` seconds ends, it is kept as an ``Outage`` (from when to
when, how many updates arrived meanwhile, how many calls failed, how many errors were held
in memory because they could not be written) until ``OutageWatch`` reports it: one admin
alert through ``AdminAlerts`` (the outbox, so it reaches admins once Telegram answers too).

``OutageWatch.run`` is a supervised background task: it probes PostgreSQL every
``probe_interval_s`` seconds (the database tracker's only source), and when the database or
Telegram comes back it wakes the notification sender, which delivers at once what became
due meanwhile (each row once: the outbox claims rows, docs/notifications.md).

The core does not import aiogram: the bot feeds the Telegram tracker from a Bot API
session middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import asyncpg

from database import notification_admin as notifications_sql
from database import outages as sql
from database import readiness
from recovery.alerts import AdminAlerts, AlertKind
from recovery.notification_outcomes import MAX_ATTEMPTS_REASON, TELEGRAM_UNREACHABLE_REASON

log = logging.getLogger(__name__)

Counter = Callable[[], int]
"""A monotonic count read at the start and the end of an outage (updates taken, errors
spooled)."""

TEMPLATES = {"database": "admin.outage_database", "telegram": "admin.outage_telegram"}

RESUME_MIN_INTERVAL_S = 300.0
"""After one return of Telegram has made the held-back notifications due, the next return
does so only this many seconds later, unless the outage that just ended lasted this long
itself: a Telegram that fails sends while answering long polls returns every few seconds,
and each return would otherwise spend another attempt of every row (and revive the dead ones
to die again)."""

REVIVE_MAX_AGE_S = 24 * 3600.0
"""A notification that died because Telegram did not answer is put back when Telegram
answers again within this many seconds of its death; older ones stay dead (the admin can
retry them from the menu)."""

REPORT_SPREAD_S = 30.0
"""Seconds within which every instance reports the end of one outage: the database's is
seen by each instance's probe (``probe_interval_s``), Telegram's by each instance's own next
answered call (at worst a 10 s long poll after aiogram's 5 s polling backoff)."""


@dataclass(frozen=True, slots=True)
class Outage:
    """One finished outage of ``dependency`` (``database`` or ``telegram``)."""

    dependency: str
    started_at: dt.datetime
    ended_at: dt.datetime
    failures: int
    """Failed attempts seen (probes, Bot API calls)."""
    counts: Mapping[str, int] = field(default_factory=dict)
    """Each counter's growth over the outage: ``updates``, ``errors_spooled``."""

    @property
    def duration_s(self) -> float:
        """Seconds from the first failure to the first success after it."""
        return (self.ended_at - self.started_at).total_seconds()

    def alert_params(self) -> dict[str, object]:
        """Parameters of the alert template (times as UTC ``HH:MM:SS``)."""
        return {
            "start": self.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            "end": self.ended_at.strftime("%H:%M:%S"),
            "seconds": round(self.duration_s),
            "failures": self.failures,
            "updates": self.counts.get("updates", 0),
            "errors_spooled": self.counts.get("errors_spooled", 0),
        }


class OutageTracker:
    """Failures and successes of one dependency (see the module doc).

    Args:
        dependency: its name in alerts and logs.
        threshold_s: an outage shorter than this is logged, not kept for an alert.
        counters: name -> monotonic count, read when the outage starts and ends.
        clock: wall clock, seconds since the epoch.
    """

    def __init__(
        self,
        dependency: str,
        threshold_s: float,
        *,
        counters: Mapping[str, Counter] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if threshold_s < 0:
            raise ValueError("threshold_s must not be negative")
        self.dependency = dependency
        self.threshold_s = threshold_s
        self.counters = dict(counters or {})
        self.clock = clock
        self._since: float | None = None
        self._failures = 0
        self._start_counts: dict[str, int] = {}
        self.finished: list[Outage] = []
        self.backs = 0
        """How many outages of at least ``threshold_s`` have ended so far: a watch that
        compares it with its last reading notices every such return, even one followed at
        once by a new failure (a send still in flight when Telegram came back). Shorter ones
        are not counted: a dependency that flaps (Telegram answering getUpdates while
        sendMessage fails) must not make the retries of what failed due at every flap."""
        self.answered = False
        """Whether any attempt has succeeded since the process started."""
        self.last_outage_s = 0.0
        """Length (seconds) of the last outage counted in ``backs``."""
        self._last_resume: float | None = None
        self._unresumed_since: float | None = None

    @property
    def down(self) -> bool:
        """Whether the last attempt failed."""
        return self._since is not None

    @property
    def down_since(self) -> float | None:
        """Epoch seconds of the outage's first failure (None while up)."""
        return self._since

    def failure(self) -> None:
        """One attempt failed (the first one after a success starts an outage)."""
        if self._since is None:
            self._since = self.clock()
            if self._unresumed_since is None:
                self._unresumed_since = self._since
            self._failures = 0
            self._start_counts = {name: read() for name, read in self.counters.items()}
            log.warning("%s unreachable: outage started", self.dependency)
        self._failures += 1

    def success(self) -> Outage | None:
        """One attempt succeeded; returns the outage it ended when that one is long enough
        to alert about (it is also kept in ``finished``)."""
        since, self._since = self._since, None
        self.answered = True
        if since is None:
            return None
        now = self.clock()
        counts = {
            name: max(0, read() - self._start_counts.get(name, 0))
            for name, read in self.counters.items()
        }
        log.warning(
            "%s back after %.1f s (%d failed attempts, %s)",
            self.dependency, now - since, self._failures, counts,
        )  # fmt: skip
        if now - since < self.threshold_s:
            return None
        outage = Outage(
            self.dependency,
            dt.datetime.fromtimestamp(since, dt.UTC),
            dt.datetime.fromtimestamp(now, dt.UTC),
            self._failures,
            counts,
        )
        self.finished.append(outage)
        self.backs += 1
        self.last_outage_s = outage.duration_s
        return outage

    @property
    def unresumed_since(self) -> float | None:
        """Epoch seconds of the first failure not yet followed by ``resumed``: the start of
        the earliest outage whose leftovers (notifications that died of it) are still to be
        put back. One outage can end in several short ones (an in-flight call failing just
        after the return), so this is not the start of the last one."""
        return self._unresumed_since

    def resumed(self, since: float | None, *, after_outage: bool = True) -> None:
        """What failed from ``since`` on has been put back: from now on only what fails
        from the start of the outage running now (None while up) is still to be put back.
        ``after_outage`` False: the put-back of a process start, which does not count for
        ``resume_due``."""
        if self._unresumed_since == since:
            self._unresumed_since = self._since
        if after_outage:
            self._last_resume = self.clock()

    def resume_due(self) -> bool:
        """Whether a return should make the held-back notifications due now: the first
        time, after an outage of at least ``RESUME_MIN_INTERVAL_S``, or that long after the
        last time (``RESUME_MIN_INTERVAL_S``); what is not put back now stays in
        ``unresumed_since`` for the next time."""
        if self._last_resume is None or self.last_outage_s >= RESUME_MIN_INTERVAL_S:
            return True
        return self.clock() - self._last_resume >= RESUME_MIN_INTERVAL_S


class OutageWatch:
    """Probes PostgreSQL, reports finished outages to the admins, wakes the sender.

    Args:
        pool: asyncpg pool.
        alerts: the admin alert path.
        database: the database's tracker (fed by the probe).
        telegram: the Bot API's tracker (fed by the bot's session), or None.
        on_back: called when a dependency comes back (the sender's ``wake``).
        probe_interval_s: seconds between probes, also how often finished outages are
            looked for.
        probe_timeout_s: a probe not answered within this many seconds is a failure.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        alerts: AdminAlerts,
        database: OutageTracker,
        telegram: OutageTracker | None = None,
        *,
        on_back: Callable[[str], Awaitable[None] | None] | None = None,
        probe_interval_s: float = 1.0,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.pool = pool
        self.alerts = alerts
        self.database = database
        self.telegram = telegram
        self.on_back = on_back
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self._telegram_backs = telegram.backs if telegram is not None else 0
        self._telegram_answered = False

    async def run(self, stop: asyncio.Event) -> None:
        """Probe and report until ``stop`` is set."""
        while not stop.is_set():
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.probe_interval_s)

    async def tick(self) -> None:
        """One probe, then the alerts of finished outages (while the database answers)."""
        if not await self._probe():
            self.database.failure()
            return
        if self.database.down:
            self.database.success()
            await self._notify_back("database")
        if self.telegram is not None:
            # its first answer in this process (what died in an outage before the start
            # comes back) or the end of an outage long enough to alert about
            first = self.telegram.answered and not self._telegram_answered
            self._telegram_answered = self.telegram.answered
            if first or self.telegram.backs != self._telegram_backs:
                self._telegram_backs = self.telegram.backs
                await self._notify_back("telegram")
        try:
            await self.report()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("outage alert not written yet (%s); next probe", type(exc).__name__)

    async def _probe(self) -> bool:
        try:
            await readiness.ping(self.pool, self.probe_timeout_s)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    async def _notify_back(self, dependency: str) -> None:
        log.info("%s back: waking the notification sender", dependency)
        if self.on_back is None:
            return
        try:
            result = self.on_back(dependency)
            if result is not None:
                await result
        except Exception as exc:  # the sender's own poll still comes
            log.warning("after %s came back: %s", dependency, type(exc).__name__)

    async def report(self) -> int:
        """Raise one alert per finished outage; returns how many were raised. An outage
        whose alert cannot be written yet stays for the next call.

        The dedupe key is the dependency: every instance sees the same outage and raises
        its alert within ``REPORT_SPREAD_S`` of the others, and ``AdminAlerts`` sends the
        first and counts the others as its duplicates. The dedupe window is the larger of
        that spread and the tracker's threshold: a new outage long enough to be reported
        ends at least a threshold after the previous one, so it gets its own alert.
        """
        raised = 0
        for tracker in (self.database, self.telegram):
            if tracker is None:
                continue
            while tracker.finished:
                outage = tracker.finished[0]
                await self.alerts.raise_alert(
                    AlertKind.SYSTEM,
                    f"outage:{outage.dependency}",
                    TEMPLATES[outage.dependency],
                    outage.alert_params(),
                    summary=f"{outage.dependency} outage {round(outage.duration_s)} s",
                    dedupe_window_s=max(tracker.threshold_s, REPORT_SPREAD_S),
                )
                tracker.finished.pop(0)
                raised += 1
        return raised


async def put_back_after_return(pool: asyncpg.Pool, telegram: OutageTracker) -> int | None:
    """Telegram answers (the watch's ``on_back``): put back what its outage held back
    (``resume_notifications``) when ``telegram.resume_due()``; at a process start (no outage
    seen yet) only the rows that died of an unreachable Telegram, rows waiting for their
    backoff keep it. Returns how many rows were made due, None when not due (a flapping
    Telegram: the retries keep their backoff)."""
    since = telegram.unresumed_since
    outage = since is not None or telegram.backs > 0  # else: this process's start
    if outage and not telegram.resume_due():
        return None
    count = await resume_notifications(pool, since, retrying=outage)
    telegram.resumed(since, after_outage=outage)
    return count


async def resume_notifications(
    pool: asyncpg.Pool, since_epoch: float | None, *, retrying: bool = True
) -> int:
    """After a Telegram outage that began at ``since_epoch`` (epoch seconds; None: a process
    start, where the outage, if any, was another process's): with ``retrying`` every
    'retrying' notification is made due now (not at a start: their backoff stands), and
    these dead ones get a fresh budget and are due now: those that died
    of their attempt budget on a Telegram that did not answer within ``REVIVE_MAX_AGE_S``
    (``TELEGRAM_UNREACHABLE_REASON``, whichever process saw it), and those that died of
    their budget since ``since_epoch``. The senders are woken (NOTIFY). Returns how many
    rows were made due."""
    count = await notifications_sql.retry_now(pool, None, ("retrying",)) if retrying else 0
    dead = set(await sql.dead_recently(pool, TELEGRAM_UNREACHABLE_REASON, REVIVE_MAX_AGE_S))
    if since_epoch is not None:
        since = dt.datetime.fromtimestamp(since_epoch, dt.UTC)
        dead.update(await sql.dead_since(pool, since, MAX_ATTEMPTS_REASON))
    if dead:
        count += await notifications_sql.retry_now(pool, sorted(dead), ("dead",))
    return count
