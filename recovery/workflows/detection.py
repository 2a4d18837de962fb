"""Stuck workflows: the list, the batch targets and the digests of newly stuck requests
(the definition is ``database/stuck.py``, the deadlines ``recovery.stuck.StuckPolicy``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg

from database import outbox, requests, stuck
from database.stuck import Limit
from recovery.alerts import AdminAlerts, AlertKind
from recovery.workflows.base import ManagerBase
from recovery.workflows.model import (
    DIGEST_MAX_IDS,
    StuckAlerts,
    StuckPage,
    StuckRequest,
)


class StuckDetection(ManagerBase):
    """Stuck workflows: the list, the batch targets and the digests of newly stuck requests."""

    def threshold_s(self, workflow_type: str, state: str) -> float:
        """The deadline of a state in seconds (``StuckPolicy.threshold_s``)."""
        return self.stuck_policy.threshold_s(workflow_type, state)

    def limits(self, workflow_type: str | None = None, state: str | None = None) -> list[Limit]:
        """The deadline of every non-terminal (workflow type, state), optionally filtered."""
        return self.stuck_policy.limits(workflow_type, state)

    def _item(self, row: asyncpg.Record) -> StuckRequest:
        reasons: list[str] = []
        if row["over_deadline"]:
            reasons.append("over_deadline")
        if row["assignee_id"] is not None and row["assignee_active"] is False:
            reasons.append("assignee_inactive")
        elif row["assignee_blocked"]:
            reasons.append("assignee_blocked")
        return StuckRequest(
            request_id=row["id"],
            workflow_type=row["workflow_type"],
            state=row["current_state"],
            role=row["owner_role"],
            assignee_id=row["assignee_id"],
            assignee_name=row["assignee_name"],
            version=row["version"],
            stuck_for_s=row["stuck_for_s"],
            threshold_s=row["threshold_s"],
            reasons=tuple(reasons) or ("over_deadline",),
        )

    async def find_stuck(
        self,
        *,
        workflow_type: str | None = None,
        state: str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> StuckPage:
        """A page of stuck requests (longest in state first) and how many there are."""
        limits = self.limits(workflow_type, state)
        async with self.pool.acquire() as conn:
            rows = await stuck.page(
                conn,
                limits,
                workflow_type=workflow_type,
                state=state,
                limit=limit,
                offset=max(offset, 0),
            )
            total = await stuck.count(conn, limits, workflow_type=workflow_type, state=state)
        return StuckPage(items=[self._item(row) for row in rows], total=total)

    async def stuck_targets(
        self,
        *,
        workflow_type: str | None = None,
        state: str | None = None,
        at_most: int = 1000,
    ) -> list[tuple[int, int]]:
        """(request id, version) of the stuck requests a batch would touch, longest in state
        first, at most ``at_most``: the review screen keeps them, the batch applies its
        action against exactly these versions."""
        return await stuck.targets(
            self.pool,
            self.limits(workflow_type, state),
            workflow_type=workflow_type,
            state=state,
            at_most=at_most,
        )

    async def alert_new_stuck(
        self, admin_telegram_ids: Sequence[int] = (), *, alerts: AdminAlerts | None = None
    ) -> StuckAlerts:
        """Alert the admins once per newly stuck request, in one digest per admin.

        With ``alerts`` the digest takes the admin alert path (kind ``stuck``: rate limit,
        per-admin mutes, mute buttons) in the same transaction; ``digests`` is then the
        number of admins it was enqueued for (0 when held back for the alert digest).

        In one transaction: forget alert marks of requests that left the alerted state,
        mark every stuck request not alerted yet for its current visit of its state
        (``stuck_alerts``), and enqueue one ``admin.stuck_digest`` notification per admin
        (admin-role users plus ``admin_telegram_ids``) listing them (``ids``: their numbers;
        ``items``: [id, workflow type, state, seconds in the state] of the first
        ``DIGEST_MAX_IDS``, shown as one line each in the admin's language). The outbox idempotency
        key is derived from the (request, state visit) pairs, so the same digest is never
        enqueued twice; a rollback forgets the marks and the digest together.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            forgotten = await stuck.forget_left(conn)
            rows = await stuck.remember_new(conn, self.limits())
            if not rows:
                return StuckAlerts([], 0, forgotten)
            ids = [row["request_id"] for row in rows]
            shown = ", ".join(f"#{i}" for i in ids[:DIGEST_MAX_IDS])
            if len(ids) > DIGEST_MAX_IDS:
                shown += f" (+{len(ids) - DIGEST_MAX_IDS})"
            digest = hashlib.sha256(
                ",".join(
                    f"{r['request_id']}@{r['state_entered_at'].isoformat()}" for r in rows
                ).encode()
            ).hexdigest()[:24]
            items = [
                [r["id"], r["workflow_type"], r["current_state"], r["stuck_s"]]
                for r in await requests.digest_items(conn, ids[:DIGEST_MAX_IDS])
            ]
            params = {"count": len(ids), "ids": shown, "items": items}
            if alerts is not None:
                alert = await alerts.raise_alert(
                    AlertKind.STUCK,
                    f"stuck-digest:{digest}",
                    "admin.stuck_digest",
                    params,
                    summary=f"stuck {shown}",
                    conn=conn,
                )
                return StuckAlerts(ids, alert.recipients, forgotten)
            digests = await outbox.enqueue_for_admins(
                conn,
                key_prefix=f"stuck-digest:{digest}",
                template_key="admin.stuck_digest",
                params=params,
                extra_telegram_ids=list(admin_telegram_ids),
            )
            return StuckAlerts(ids, digests, forgotten)
