"""``AdminAlerts``: the one path every admin alert takes (critical errors, health changes,
stuck-workflow digests, system alerts), with noise control.

Each alert is decided under a transaction-level advisory lock (one decision at a time
across instances) and stored in ``admin_alerts``:

- dedupe: an alert whose ``dedupe_key`` was raised within ``dedupe_window_s`` seconds is not
  sent again; the earlier alert's ``duplicates`` grows;
- rate limit: when ``rate_limit`` alerts already went out one by one within
  ``rate_window_s`` seconds, the alert is queued; ``flush_digest`` (a scheduler job) then
  sends the queued alerts as one digest per admin ("many arrived together");
- mute: an admin mutes a kind for a period from buttons on the alert message itself; a
  muted admin is skipped for that kind until the mute ends.

Delivery goes through the transactional outbox (``database.outbox.enqueue``): when the
caller passes its connection, the alert commits or rolls back with the caller's change.
The core offers mutes, the Telegram layer makes the buttons: an outbox row carries
``params["mute"] = {"kinds": [...], "durations": [seconds, ...]}`` (``mute_offer``) and the
sender builds the keyboard in the recipient's language at send time. No text and no
callback data is stored.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg

from database import alerts as sql
from database import outbox
from database.pool import AnyConnection

log = logging.getLogger(__name__)


class AlertKind(StrEnum):
    """What an alert is about; an admin mutes alerts by kind."""

    ERROR = "error"
    HEALTH = "health"
    STUCK = "stuck"
    SYSTEM = "system"


class AlertOutcome(StrEnum):
    """What ``raise_alert`` did with an alert."""

    SENT = "sent"
    DUPLICATE = "duplicate"
    QUEUED = "queued"


MUTE_DURATIONS_S: tuple[int, ...] = (3600, 24 * 3600)
"""The mute periods offered on an alert message, in seconds."""

MUTE_PARAM = "mute"
"""The outbox parameter that offers mutes (``mute_offer``)."""

DIGEST_TEMPLATE = "admin.alert_digest"
DIGEST_DETAILS_MAX = 10


def mute_offer(kinds: Sequence[AlertKind | str], durations: Sequence[int]) -> dict[str, Any]:
    """What an alert message offers to mute: each of ``kinds`` for each of ``durations``
    (seconds, from ``MUTE_DURATIONS_S``). The Telegram layer turns it into buttons."""
    return {"kinds": [str(kind) for kind in kinds], "durations": [int(s) for s in durations]}


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Noise control numbers (settings ``ALERT_*``).

    Raises:
        ValueError: on construction, for a negative window or a rate limit below 1.
    """

    dedupe_window_s: float = 1800.0
    rate_limit: int = 5
    rate_window_s: float = 300.0
    digest_batch: int = 1000

    def __post_init__(self) -> None:
        if self.dedupe_window_s < 0 or self.rate_window_s <= 0:
            raise ValueError("alert windows must be positive")
        if self.rate_limit < 1 or self.digest_batch < 1:
            raise ValueError("rate_limit and digest_batch must be at least 1")


@dataclass(frozen=True, slots=True)
class AlertResult:
    """Outcome of one ``raise_alert``: the ``admin_alerts`` row and how many admins it was
    enqueued for (0 unless sent)."""

    outcome: AlertOutcome
    alert_id: int
    recipients: int = 0


class AdminAlerts:
    """Raises admin alerts through dedupe, rate limit, digest and per-admin mutes.

    Args:
        pool: asyncpg pool.
        admin_ids: Telegram ids from ``ADMIN_IDS`` (admin-role users are added from the DB).
        policy: dedupe window, rate limit and window.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        admin_ids: Sequence[int] = (),
        policy: AlertPolicy | None = None,
    ) -> None:
        self.pool = pool
        self.admin_ids = tuple(admin_ids)
        self.policy = policy or AlertPolicy()

    async def raise_alert(
        self,
        kind: AlertKind | str,
        dedupe_key: str,
        template_key: str,
        params: dict[str, Any],
        *,
        summary: str = "",
        conn: AnyConnection | None = None,
        dedupe_window_s: float | None = None,
    ) -> AlertResult:
        """Raise one alert. ``template_key``/``params`` name an outbox template rendered in
        each admin's language; ``summary`` is a short untranslated token (an error reference,
        ``healthy→critical``) listed when the alert ends up in a digest.

        With ``conn`` the alert joins the caller's transaction (in a savepoint) and commits
        with it; without, it runs in its own transaction. ``dedupe_window_s`` (seconds)
        replaces the policy's window for this alert: an event that can happen again soon
        and must be told again (an outage) uses a window that only folds reports of the
        same event.

        Raises:
            ValueError: unknown ``kind``.
            asyncpg.PostgresError: the database failed (the savepoint is rolled back).
        """
        kind = AlertKind(kind)
        window_s = self.policy.dedupe_window_s if dedupe_window_s is None else dedupe_window_s
        alert = (kind, dedupe_key, template_key, params, summary, window_s)
        if conn is None:
            async with self.pool.acquire() as own, own.transaction():
                return await self._raise(own, *alert)
        async with conn.transaction():
            return await self._raise(conn, *alert)

    async def _raise(
        self,
        conn: AnyConnection,
        kind: AlertKind,
        dedupe_key: str,
        template_key: str,
        params: dict[str, Any],
        summary: str,
        dedupe_window_s: float,
    ) -> AlertResult:
        await sql.lock(conn)
        earlier = await sql.recent_by_key(conn, dedupe_key, dedupe_window_s)
        if earlier is not None:
            await sql.add_duplicate(conn, earlier)
            return AlertResult(AlertOutcome.DUPLICATE, earlier)
        already_sent = await sql.sent_since(conn, self.policy.rate_window_s)
        status = "sent" if already_sent < self.policy.rate_limit else "queued"
        stored = {**params, "summary": summary}
        alert_id = await sql.insert(
            conn,
            kind=kind.value,
            dedupe_key=dedupe_key,
            template_key=template_key,
            params=stored,
            status=status,
        )
        if status == "queued":
            log.info("admin alert %s (%s) queued for the digest", alert_id, kind.value)
            return AlertResult(AlertOutcome.QUEUED, alert_id)
        recipients = await self._recipients(conn, {kind})
        params = {**stored, MUTE_PARAM: mute_offer([kind], MUTE_DURATIONS_S)}
        await outbox.enqueue_many(
            conn,
            [
                outbox.Notification(
                    f"admin-alert:{alert_id}:{chat_id}", chat_id, template_key, params, user_id
                )
                for user_id, chat_id in recipients
            ],
        )
        await sql.set_recipients(conn, alert_id, len(recipients))
        return AlertResult(AlertOutcome.SENT, alert_id, len(recipients))

    async def _recipients(
        self, conn: AnyConnection, kinds: set[AlertKind]
    ) -> list[tuple[int | None, int]]:
        """Admins who did not mute every one of ``kinds``."""
        everyone = await outbox.admin_recipients(conn, self.admin_ids)
        mutes = await sql.mutes_of_chats(conn, [chat_id for _, chat_id in everyone])
        return [
            (user_id, chat_id)
            for user_id, chat_id in everyone
            if any((chat_id, kind.value) not in mutes for kind in kinds)
        ]

    async def flush_digest(self) -> int:
        """Send the queued alerts as one digest per admin (counts by kind, the alerts'
        summaries), leaving out the kinds each admin muted; returns how many alerts it took.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await sql.lock(conn)
            rows = await sql.queued(conn, self.policy.digest_batch)
            if not rows:
                return 0
            everyone = await outbox.admin_recipients(conn, self.admin_ids)
            mutes = await sql.mutes_of_chats(conn, [chat_id for _, chat_id in everyone])
            digests = []
            for user_id, chat_id in everyone:
                mine = [row for row in rows if (chat_id, row["kind"]) not in mutes]
                if mine:
                    key = f"admin-digest:{rows[0]['id']}-{rows[-1]['id']}:{chat_id}"
                    params = self._digest_params(mine)
                    digests.append(
                        outbox.Notification(key, chat_id, DIGEST_TEMPLATE, params, user_id)
                    )
            await outbox.enqueue_many(conn, digests)
            delivered = len(digests)
            await sql.mark_digested(conn, [row["id"] for row in rows], delivered)
            log.info("admin alert digest: %d alerts to %d admins", len(rows), delivered)
            return len(rows)

    def _digest_params(self, rows: list[asyncpg.Record]) -> dict[str, Any]:
        counts = Counter(row["kind"] for row in rows)
        details = []
        for row in rows[:DIGEST_DETAILS_MAX]:
            token = (row["params"] or {}).get("summary") or row["dedupe_key"]
            details.append(f"{token} ×{row['duplicates'] + 1}" if row["duplicates"] else token)
        if len(rows) > DIGEST_DETAILS_MAX:
            details.append(f"… +{len(rows) - DIGEST_DETAILS_MAX}")
        params: dict[str, Any] = {
            "total": len(rows),
            **{kind.value: counts.get(kind.value, 0) for kind in AlertKind},
            "details": ", ".join(details),
        }
        muted = [kind for kind in AlertKind if counts.get(kind.value)]
        params[MUTE_PARAM] = mute_offer(muted, MUTE_DURATIONS_S[:1])
        return params

    async def mute(
        self, *, chat_id: int, kind: AlertKind | str, duration_s: int, muted_by: int | None
    ) -> dt.datetime:
        """Mute ``kind`` for the admin in ``chat_id`` for ``duration_s`` seconds (one of
        ``MUTE_DURATIONS_S``); returns when the mute ends.

        Raises:
            ValueError: unknown kind or a duration that is not offered.
        """
        kind = AlertKind(kind)
        if duration_s not in MUTE_DURATIONS_S:
            raise ValueError(f"mute duration {duration_s} s is not offered")
        return await sql.mute(
            self.pool, chat_id=chat_id, kind=kind.value, duration_s=duration_s, muted_by=muted_by
        )

    async def unmute(self, *, chat_id: int, kind: AlertKind | str) -> dt.datetime | None:
        """Lift the admin's mute of ``kind``; returns when it would have ended, or None."""
        return await sql.unmute(self.pool, chat_id=chat_id, kind=AlertKind(kind).value)

    async def muted_until(self, *, chat_id: int, kind: AlertKind | str) -> dt.datetime | None:
        """End of the admin's live mute of ``kind``, or None."""
        return await sql.mute_of(self.pool, chat_id=chat_id, kind=AlertKind(kind).value)
