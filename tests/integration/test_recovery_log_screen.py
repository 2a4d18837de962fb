"""A request's recovery log says what each action changed (the state before and after) and
which actions were part of a batch, in the admin's language."""

from __future__ import annotations

import uuid

import asyncpg
from aiogram.methods import EditMessageText

from database import recovery_log
from handlers.callbacks import StuckHistoryCb
from tests.botstack import BotStack, make_stack
from tests.factories import make_request, make_user

ADMIN, ADMIN_RU = 700_111, 700_112


def _last_edit(stack: BotStack) -> EditMessageText:
    return [c for c in stack.session.calls if isinstance(c, EditMessageText)][-1]


async def test_the_log_shows_the_state_change_and_the_batch(pool: asyncpg.Pool) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN, ADMIN_RU])
    client = await make_user(pool)
    request = await make_request(pool, client_id=client["id"], state="in_work", role="technician")
    await recovery_log.insert(
        pool, request_id=request["id"], action="force_transition", admin_id=None,
        admin_telegram_id=ADMIN, reason=None, before={"state": "new"},
        after={"state": "in_work"}, success=True, batch_id=uuid.uuid4(),
    )  # fmt: skip
    await recovery_log.insert(
        pool, request_id=request["id"], action="reassign", admin_id=None,
        admin_telegram_id=ADMIN, reason="on leave", before={"state": "in_work"},
        after={"state": "in_work"}, success=True,
    )  # fmt: skip
    await stack.feed(stack.callback(ADMIN, StuckHistoryCb(request_id=request["id"]).pack()))
    lines = _last_edit(stack).text.splitlines()
    forced = next(line for line in lines if "forced transition" in line)
    assert "(new → in work) (batch)" in forced, forced
    reassigned = next(line for line in lines if "reassign" in line)
    assert "→" not in reassigned and "(batch)" not in reassigned, reassigned
    assert reassigned.endswith("(on leave)"), reassigned

    await stack.feed(
        stack.callback(ADMIN_RU, StuckHistoryCb(request_id=request["id"]).pack(), language="ru")
    )
    forced = next(line for line in _last_edit(stack).text.splitlines() if "→" in line)
    assert "(новая → в работе) (пакет)" in forced, forced
