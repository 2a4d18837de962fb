"""Permission before state, through the real dispatcher: a user who may not act on a request
(a client, staff of another role, staff of the owning role when someone else holds it) gets
one refusal, the same for a missing, a stale, a completed and a live request, for forged
"Next step" buttons and for ``/use``; nothing changes. Staff of the owning role act on an
unassigned request or their own; an admin acts on any."""

from __future__ import annotations

import asyncpg
import pytest

from handlers.callbacks import AdvanceCb
from tests.botstack import BotStack, make_stack
from tests.factories import make_material, make_request, make_user

ADMIN_TG = 555_000_001


async def _snapshot(pool: asyncpg.Pool) -> list[tuple[object, ...]]:
    rows = await pool.fetch(
        "SELECT id, version, current_state, status, assignee_id FROM service_requests ORDER BY id"
    )
    ledger = await pool.fetchval("SELECT count(*) FROM inventory_transactions")
    transitions = await pool.fetchval("SELECT count(*) FROM workflow_transitions")
    outbox = await pool.fetchval("SELECT count(*) FROM pending_notifications")
    return [tuple(r) for r in rows] + [(ledger, transitions, outbox)]


async def _press(stack: BotStack, telegram_id: int, request_id: int, version: int) -> tuple:
    """What the user sees after pressing a forged Next step button: the answer (text, alert)
    and the messages sent to the chat."""
    before = len(stack.session.calls)
    await stack.feed(
        stack.callback(telegram_id, AdvanceCb(request_id=request_id, version=version).pack())
    )
    calls = stack.session.calls[before:]
    answers = [(c.text, c.show_alert) for c in calls if c.__api_method__ == "answerCallbackQuery"]
    messages = [c.text for c in calls if c.__api_method__ == "sendMessage"]
    assert len(answers) == 1, calls
    return answers[0], tuple(messages)


async def _use(stack: BotStack, telegram_id: int, request_id: int, material_id: int) -> list[str]:
    before = len(stack.session.calls)
    await stack.feed(stack.message(telegram_id, f"/use {request_id} {material_id} 1"))
    return [c.text for c in stack.session.calls[before:] if c.__api_method__ == "sendMessage"]


@pytest.fixture
async def world(pool: asyncpg.Pool) -> dict[str, object]:
    client = await make_user(pool, role="client")
    manager = await make_user(pool, role="manager")
    other_manager = await make_user(pool, role="manager")
    technician = await make_user(pool, role="technician")
    material = await make_material(pool, sku="cable", balance=10)
    live = await make_request(pool, client_id=client["id"], state="new", role="manager")
    stale = await make_request(pool, client_id=client["id"], state="new", role="manager")
    await pool.execute("UPDATE service_requests SET version = 5 WHERE id = $1", stale["id"])
    done = await make_request(
        pool, client_id=client["id"], state="completed", role=None, status="completed"
    )
    held = await make_request(
        pool, client_id=client["id"], state="new", role="manager", assignee_id=other_manager["id"]
    )
    in_work = await make_request(pool, client_id=client["id"], state="in_work", role="technician")
    missing = await pool.fetchval("SELECT coalesce(max(id), 0) + 1000 FROM service_requests")
    return {
        "client": client, "manager": manager, "other_manager": other_manager,
        "technician": technician, "material": material, "live": live, "stale": stale,
        "done": done, "held": held, "in_work": in_work, "missing": missing,
    }  # fmt: skip


async def test_a_non_owner_gets_one_refusal_for_missing_stale_completed_and_live(
    pool: asyncpg.Pool, world: dict
) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN_TG])
    cases = {
        "missing": (world["missing"], 1),
        "stale": (world["stale"]["id"], 1),
        "completed": (world["done"]["id"], world["done"]["version"]),
        "live": (world["live"]["id"], world["live"]["version"]),
    }
    before = await _snapshot(pool)
    for prober in ("client", "technician"):
        seen = {
            name: await _press(stack, world[prober]["telegram_id"], request_id, version)
            for name, (request_id, version) in cases.items()
        }
        assert len(set(seen.values())) == 1, f"{prober} can tell them apart: {seen}"
        (text, alert), messages = seen["live"]
        assert alert and "not waiting for you" in text and messages == ()
    # staff of the owning role, when someone else holds the request: the same refusal as for
    # a request that does not exist or is completed
    manager = world["manager"]["telegram_id"]
    for_manager = {
        await _press(stack, manager, world["held"]["id"], world["held"]["version"]),
        await _press(stack, manager, world["missing"], 1),
        await _press(stack, manager, world["done"]["id"], world["done"]["version"]),
    }
    assert len(for_manager) == 1, for_manager
    assert await _snapshot(pool) == before

    # /use: the same reply whether the request is missing, completed or someone else's
    replies = {
        name: await _use(
            stack, world["technician"]["telegram_id"], request_id, world["material"]["id"]
        )
        for name, request_id in (
            ("missing", world["missing"]),
            ("completed", world["done"]["id"]),
            ("other role", world["live"]["id"]),
        )
    }
    assert len({tuple(r) for r in replies.values()}) == 1, replies
    assert await _snapshot(pool) == before


async def test_owners_act_on_unassigned_or_their_own_and_admins_on_any(
    pool: asyncpg.Pool, world: dict
) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN_TG])
    (text, _), _ = await _press(
        stack, world["manager"]["telegram_id"], world["live"]["id"], world["live"]["version"]
    )
    assert "moved to" in text
    # a stale button of an owner: told it changed (the owner may know)
    (text, _), _ = await _press(stack, world["manager"]["telegram_id"], world["stale"]["id"], 1)
    assert "changed by someone else" in text
    # the holder of a request advances it; an admin advances anyone's
    (text, _), _ = await _press(
        stack,
        world["other_manager"]["telegram_id"],
        world["held"]["id"],
        world["held"]["version"],
    )
    assert "moved to" in text
    (text, _), _ = await _press(stack, ADMIN_TG, world["stale"]["id"], 5)
    assert "moved to" in text
    # and an admin is told the truth about a missing request
    (text, _), _ = await _press(stack, ADMIN_TG, world["missing"], 1)
    assert "does not exist (any more)" in text
    states = dict(
        await pool.fetch(
            "SELECT id, current_state FROM service_requests WHERE id = ANY($1::bigint[])",
            [world["live"]["id"], world["held"]["id"], world["stale"]["id"]],
        )
    )
    assert set(states.values()) == {"assigned"}


async def test_tasks_lists_only_what_the_user_may_act_on(pool: asyncpg.Pool, world: dict) -> None:
    stack = make_stack(pool)
    await stack.feed(stack.message(world["manager"]["telegram_id"], "/tasks"))
    texts = stack.session.texts_to(world["manager"]["telegram_id"])
    listed = {int(t.split()[0].lstrip("#")) for t in texts}
    assert world["live"]["id"] in listed and world["stale"]["id"] in listed
    assert world["held"]["id"] not in listed
