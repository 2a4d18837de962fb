"""The outbox's batch statements: ``enqueue_many`` (one statement for a fan-out) and the
group commit of 'sent' marks (one statement for every send in flight), with what the speed
must not cost: exact outcomes per row, no row marked sent twice, nothing lost when a mark
statement fails."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from database import notifications as sql
from database import outbox
from tests.fakes.telegram_api import BAD_GATEWAY, BOT_BLOCKED
from tests.integration.notification_support import Harness, enqueue_text, open_harness


@pytest_asyncio.fixture
async def harness(pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    async with open_harness(pool) as h:
        yield h


def _register(h: Harness, count: int, first: int = 91_000_001) -> list[int]:
    chats = list(range(first, first + count))
    for chat in chats:
        h.api.add_user(chat, f"User{chat}")
    return chats


# --- enqueue_many ---------------------------------------------------------------------------


async def test_enqueue_many_adds_every_row_in_one_statement_and_skips_known_keys(
    pool: asyncpg.Pool,
) -> None:
    rows = [
        outbox.Notification(f"fan:{n}", 1000 + n, "admin.text", {"text": f"t{n}", "n": [n]})
        for n in range(300)
    ]
    statements: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        statements.append(record.query)

    async with pool.acquire() as conn:
        conn.add_query_logger(log)
        async with conn.transaction():
            assert await outbox.enqueue_many(conn, rows) == 300
        # a repeat of the same business event adds nothing; new keys among old ones do
        again = [*rows[:10], outbox.Notification("fan:new", 5, "admin.text", {"text": "x"})]
        assert await outbox.enqueue_many(conn, again) == 1
        assert await outbox.enqueue_many(conn, []) == 0
        conn.remove_query_logger(log)
    await asyncio.sleep(0)
    inserts = [q for q in statements if "INSERT INTO pending_notifications" in q]
    assert len(inserts) == 2  # one per call with rows, none for the empty list
    stored = await pool.fetch(
        "SELECT idempotency_key, chat_id, template_key, params, status FROM pending_notifications"
        " ORDER BY id"
    )
    assert len(stored) == 301
    assert stored[7]["idempotency_key"] == "fan:7" and stored[7]["chat_id"] == 1007
    assert stored[7]["params"] == {"text": "t7", "n": [7]}
    assert {r["status"] for r in stored} == {"pending"}


async def test_enqueue_many_is_cancelled_with_its_transaction(pool: asyncpg.Pool) -> None:
    rows = [outbox.Notification(f"rb:{n}", n, "admin.text", {"text": "x"}) for n in range(5)]
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await outbox.enqueue_many(conn, rows)
                raise RuntimeError("the state change failed")
    assert await pool.fetchval("SELECT count(*) FROM pending_notifications") == 0


async def test_admin_fan_out_enqueues_one_row_per_admin(pool: asyncpg.Pool) -> None:
    for n in range(4):
        await pool.execute(
            "INSERT INTO users (telegram_id, full_name, role, language) "
            "VALUES ($1, 'A', 'admin', 'en')",
            7000 + n,
        )
    async with pool.acquire() as conn, conn.transaction():
        count = await outbox.enqueue_for_admins(
            conn, key_prefix="alert:1", template_key="admin.text", params={"text": "x"},
            extra_telegram_ids=[7000, 8000],
        )  # fmt: skip
    assert count == 5  # four admin users (one also in ADMIN_IDS) and one more id
    chats = await pool.fetch("SELECT chat_id, idempotency_key FROM pending_notifications")
    assert {r["chat_id"] for r in chats} == {7000, 7001, 7002, 7003, 8000}
    assert {r["idempotency_key"] for r in chats} == {f"alert:1:{r['chat_id']}" for r in chats}


# --- group commit of 'sent' marks -----------------------------------------------------------


async def test_marks_of_a_batch_go_out_in_few_statements_with_exact_outcomes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    chats = _register(harness, 50)
    blocked, failing = chats[3], chats[7]
    ids = [await enqueue_text(harness.pool, chat, f"note {chat}") for chat in chats]
    harness.api.fail_next("sendMessage", **BOT_BLOCKED, chat_id=blocked)
    harness.api.fail_next("sendMessage", **BAD_GATEWAY, chat_id=failing)
    groups: list[int] = []
    real_mark = sql.mark_sent_many

    async def counting_mark(db: object, items: list[tuple[int, str, int | None]]) -> set[int]:
        groups.append(len(items))
        return await real_mark(db, items)  # type: ignore[arg-type]

    monkeypatch.setattr(sql, "mark_sent_many", counting_mark)
    manager = harness.manager(concurrency=8, batch_size=50)
    result = await manager.drain_once()
    assert (result.claimed, result.sent, result.skipped, result.retried) == (50, 48, 1, 1)
    assert result.failed == 0
    rows = {
        r["id"]: r
        for r in await harness.pool.fetch(
            "SELECT id, chat_id, status, attempts, telegram_message_id, claimed_by "
            "FROM pending_notifications"
        )
    }
    for row_id, chat in zip(ids, chats, strict=True):
        row = rows[row_id]
        expected = {blocked: "skipped", failing: "retrying"}.get(chat, "sent")
        assert row["status"] == expected, (chat, row)
        assert row["claimed_by"] is None
        if expected == "sent":
            assert row["attempts"] == 1 and row["telegram_message_id"] is not None
    # group commit: the 48 marks in one statement (every claimed row had reported), at
    # most a few when a delay ran out first on a busy machine
    assert sum(groups) == 48 and len(groups) <= 4, groups


async def test_no_row_is_marked_sent_twice_when_a_lease_passes_to_another_sender(
    harness: Harness,
) -> None:
    """Sender A's sends are accepted by Telegram, then A stalls past its lease; sender B
    claims the rows, sends and marks them. A's late marks must not apply."""
    chats = _register(harness, 12)
    for chat in chats:
        await enqueue_text(harness.pool, chat, f"lease {chat}")
    stalled, release = asyncio.Event(), asyncio.Event()
    sent_by_a: list[int] = []

    async def stalling_send(chat_id: int, text: str) -> int | None:
        message_id = await harness.send(chat_id, text)
        sent_by_a.append(chat_id)
        if len(sent_by_a) == len(chats):
            stalled.set()
        await release.wait()  # a stall past the lease (a frozen process, a slow network)
        return message_id

    a = harness.manager(sender=stalling_send, concurrency=len(chats))
    b = harness.manager()
    first = asyncio.create_task(a.drain_once())
    await asyncio.wait_for(stalled.wait(), 30)
    # A's lease runs out while it stalls (moved on the database clock instead of waiting)
    await harness.pool.execute(
        "UPDATE pending_notifications SET lease_until = now() - interval '1 second' "
        "WHERE claimed_by LIKE $1 || '#%'",
        a.instance_id,
    )
    taken_over = await b.drain_once()
    assert (taken_over.claimed, taken_over.sent) == (12, 12)
    b_rows = {
        r["id"]: r["telegram_message_id"]
        for r in await harness.pool.fetch(
            "SELECT id, telegram_message_id FROM pending_notifications"
        )
    }
    release.set()
    late = await first
    assert late.sent == 0  # every mark of A was refused: its claim was lost
    rows = await harness.pool.fetch("SELECT * FROM pending_notifications")
    assert {r["status"] for r in rows} == {"sent"}
    assert all(r["attempts"] == 1 for r in rows)  # each row marked once
    assert {r["id"]: r["telegram_message_id"] for r in rows} == b_rows  # B's marks stand
    delivered = Counter(call.params["chat_id"] for call in harness.api.calls("sendMessage"))
    assert delivered == Counter({chat: 2 for chat in chats})  # at least once: A's and B's


async def test_a_failed_mark_statement_loses_no_row(harness: Harness) -> None:
    """The mark statement fails (a real PostgreSQL error raised by a trigger, not a lost
    connection: those marks are held, tests/integration/test_notification_database_outage.py):
    the rows stay claimed, nothing is counted sent, and after the lease they are sent again
    and marked."""
    chats = _register(harness, 20)
    ids = [await enqueue_text(harness.pool, chat, f"m {chat}") for chat in chats]
    await harness.pool.execute(
        """
        CREATE FUNCTION refuse_sent() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'mark refused' USING ERRCODE = 'P0001'; END $$;
        CREATE TRIGGER refuse_sent BEFORE UPDATE ON pending_notifications
            FOR EACH ROW WHEN (NEW.status = 'sent') EXECUTE FUNCTION refuse_sent();
        """
    )
    manager = harness.manager()
    result = await manager.drain_once()
    assert (result.claimed, result.sent, result.failed) == (20, 0, 20)
    rows = await harness.pool.fetch("SELECT status, attempts FROM pending_notifications")
    assert Counter((r["status"], r["attempts"]) for r in rows) == Counter({("sending", 0): 20})

    await harness.pool.execute("DROP TRIGGER refuse_sent ON pending_notifications")
    await harness.pool.execute(
        "UPDATE pending_notifications SET lease_until = now() - interval '1 second'"
    )
    again = await manager.drain_once()
    assert (again.claimed, again.sent) == (20, 20)
    rows = await harness.pool.fetch("SELECT id, status, attempts FROM pending_notifications")
    assert {r["id"]: (r["status"], r["attempts"]) for r in rows} == {
        row_id: ("sent", 1) for row_id in ids
    }
    delivered = Counter(call.params["chat_id"] for call in harness.api.calls("sendMessage"))
    assert delivered == Counter({chat: 2 for chat in chats})  # sent twice, never lost
