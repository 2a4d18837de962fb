"""The recovery history screen, pressed through as an admin: pages forward, back to the main
menu, one answer per press, and a button from before a restart of the menu."""

from __future__ import annotations

import asyncpg
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import InlineKeyboardMarkup

from handlers.callbacks import MenuCb
from tests.botstack import BotStack, make_stack

ADMIN = 710_001


async def _press(stack: BotStack, data: str) -> tuple[str, dict[str, str]]:
    """Press ``data``; the screen's text and its buttons (label -> data). Exactly one
    answer per press."""
    before = len(stack.session.calls)
    update = stack.callback(ADMIN, data)
    await stack.feed(update)
    calls = stack.session.calls[before:]
    answers = [c for c in calls if isinstance(c, AnswerCallbackQuery)]
    assert len(answers) == 1
    screens = [c for c in calls if isinstance(c, EditMessageText | SendMessage)]
    if not screens:
        return answers[0].text or "", {}
    markup = screens[-1].reply_markup
    buttons = (
        {b.text: b.callback_data or "" for row in markup.inline_keyboard for b in row}
        if isinstance(markup, InlineKeyboardMarkup)
        else {}
    )
    return str(screens[-1].text), buttons


async def test_history_pages_forward_and_back_to_the_menu(pool: asyncpg.Pool) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN])
    await pool.execute(
        "INSERT INTO admin_audit_log (admin_telegram_id, action, success)"
        " SELECT $1, 'alert.mute', true FROM generate_series(1, 23)",
        ADMIN,
    )
    text, buttons = await _press(stack, MenuCb(section="history").pack())
    assert "Actions: 23. Page 1 of 3." in text
    assert "›" in buttons and "‹" not in buttons
    text, buttons = await _press(stack, buttons["›"])
    assert "Page 2 of 3." in text and {"‹", "›"} <= set(buttons)
    first_page_button = buttons["‹"]
    text, buttons = await _press(stack, buttons["›"])
    assert "Page 3 of 3." in text and "›" not in buttons
    text, _ = await _press(stack, buttons["« Back"])
    assert text == "Workflow recovery. Choose a section:"
    # a button of the history screen pressed after the menu moved on still gets an answer
    text, _ = await _press(stack, first_page_button)
    assert text
