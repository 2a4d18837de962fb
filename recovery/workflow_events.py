"""Outbox notifications caused by workflow changes (written in the caller's transaction)."""

from __future__ import annotations

import asyncpg

from database import outbox, users
from database.pool import AnyConnection


async def notify_state_change(
    conn: AnyConnection,
    request: asyncpg.Record,
    *,
    transition_id: int,
    kind: str,
) -> int:
    """Enqueue the notifications of one state change; returns how many were enqueued.

    - the assignee, or every reachable user of the owning role when nobody is assigned:
      ``request.waiting_for_you``;
    - the client: ``request.moving_again`` after an admin recovery (kind force, reset,
      complete, reassign), ``request.status_changed`` otherwise; nothing for ``assign``
      (the state the client sees did not change), nor for ``create`` (the client has just
      been told in the chat that the request is open).

    The idempotency key is built from the transition id, so a retried transaction that
    committed once can never enqueue twice.
    """
    params = {
        "request_id": request["id"],
        "workflow_type": request["workflow_type"],
        "state": request["current_state"],
    }
    recipients = await _staff_recipients(conn, request)
    count = await outbox.enqueue_many(
        conn,
        [
            outbox.Notification(
                idempotency_key=f"transition:{transition_id}:staff:{user['id']}",
                chat_id=user["telegram_id"],
                recipient_id=user["id"],
                template_key="request.waiting_for_you",
                params=params,
                request_id=request["id"],
            )
            for user in recipients
            if user["id"] != request["client_id"]
        ],
    )
    if kind in ("assign", "create"):  # quiet for the client
        return count
    return count + await _notify_client(conn, request, transition_id, kind, params)


async def _staff_recipients(conn: AnyConnection, request: asyncpg.Record) -> list[asyncpg.Record]:
    """Who the request now waits for: its assignee when reachable, else every reachable user
    of the owning role; nobody once it is no longer active."""
    if request["status"] != "active":
        return []
    if request["assignee_id"] is not None:
        assignee = await users.get(conn, request["assignee_id"])
        if assignee is not None and assignee["is_active"] and not assignee["blocked_bot_at"]:
            return [assignee]
        return []
    if request["owner_role"]:
        return list(await users.reachable_by_role(conn, request["owner_role"]))
    return []


async def _notify_client(
    conn: AnyConnection,
    request: asyncpg.Record,
    transition_id: int,
    kind: str,
    params: dict[str, object],
) -> int:
    """Tell the client (unless they blocked the bot): ``request.moving_again`` after an admin
    recovery, ``request.status_changed`` otherwise; returns 1 when enqueued, else 0."""
    client = await users.get(conn, request["client_id"])
    if client is None or client["blocked_bot_at"]:
        return 0
    recovery = kind in ("force", "reset", "complete", "reassign")
    enqueued = await outbox.enqueue(
        conn,
        idempotency_key=f"transition:{transition_id}:client",
        chat_id=client["telegram_id"],
        recipient_id=client["id"],
        template_key="request.moving_again" if recovery else "request.status_changed",
        params=params,
        request_id=request["id"],
    )
    return int(enqueued is not None)
