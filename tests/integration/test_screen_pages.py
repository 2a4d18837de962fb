"""Screens past their last page show the last page; a refusal for a request that does not
exist offers no button to open it."""

from __future__ import annotations

import asyncpg
from aiogram.methods import EditMessageText

from handlers.callbacks import StuckAssigneesCb, StuckDetailCb, StuckHistoryCb
from tests.botstack import BotStack, make_stack
from tests.factories import make_request, make_user

ADMIN = 700_101


def _last_edit(stack: BotStack) -> EditMessageText:
    return [c for c in stack.session.calls if isinstance(c, EditMessageText)][-1]


def _buttons(edit: EditMessageText) -> list[str]:
    markup = edit.reply_markup
    return [b.text for row in markup.inline_keyboard for b in row] if markup else []


async def test_pages_past_the_end_show_the_last_page(pool: asyncpg.Pool) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN])
    client = await make_user(pool)
    request = await make_request(pool, client_id=client["id"], state="in_work", role="technician")
    for n in range(2):
        await make_user(pool, role="technician", name=f"Tech {n}")
    await stack.feed(
        stack.callback(ADMIN, StuckHistoryCb(request_id=request["id"], page=999).pack())
    )
    assert "page 1 of 1" in _last_edit(stack).text
    assert "1000" not in _last_edit(stack).text
    candidates = StuckAssigneesCb(request_id=request["id"], version=request["version"], page=999)
    await stack.feed(stack.callback(ADMIN, candidates.pack()))
    assert "(page 1 of 1)" in _last_edit(stack).text
    assert {"Tech 0 · 0 active", "Tech 1 · 0 active"} <= set(_buttons(_last_edit(stack)))


async def test_a_missing_request_offers_the_list_not_the_request(pool: asyncpg.Pool) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN])
    await stack.feed(stack.callback(ADMIN, StuckDetailCb(request_id=999_999).pack()))
    edit = _last_edit(stack)
    assert "Refused: request #999999 does not exist." in edit.text
    assert _buttons(edit) == ["Stuck workflows"]
