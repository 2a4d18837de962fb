"""Every callback query gets exactly one ``answerCallbackQuery`` (``AnswerEveryCallback``,
the error middleware for a handler that raised), and every outdated admin-menu button,
whatever its section's prefix, gets "this menu is outdated, here is a fresh one"."""

from __future__ import annotations

import asyncpg
import pytest
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import AnswerCallbackQuery, EditMessageText

from handlers import callbacks as cb
from handlers.admin import MENU_PREFIXES
from tests.botstack import BotStack, make_stack

ADMIN = 700_001
USER = 700_002

FRESH = "This menu is outdated. Here is a fresh one."
SEND_AGAIN = "This menu is outdated. Send the command again."
MAIN_MENU = "Workflow recovery. Choose a section:"

# Every CallbackData class of the bot that is not a button of the admin menu
NOT_MENU: set[type[CallbackData]] = {
    cb.LanguageCb,
    cb.NewRequestCb,
    cb.AdvanceCb,
    cb.AlertMuteCb,
    cb.AlertUnmuteCb,
    cb.UseRequestCb,
    cb.UseMaterialCb,
}
MENU_CLASSES = sorted(
    (
        value
        for value in vars(cb).values()
        if isinstance(value, type)
        and issubclass(value, CallbackData)
        and value is not CallbackData
        and value not in NOT_MENU
    ),
    key=lambda cls: cls.__prefix__,
)


def outdated(prefix: str) -> str:
    """Data with a menu prefix that no handler's filter takes (too many fields)."""
    return prefix + ":x" * 12


def answers_to(stack: BotStack, query_id: str) -> list[AnswerCallbackQuery]:
    """Every answerCallbackQuery attempted for ``query_id`` (accepted or not)."""
    return [
        call
        for call in stack.session.calls
        if isinstance(call, AnswerCallbackQuery) and call.callback_query_id == query_id
    ]


def edits(stack: BotStack) -> list[EditMessageText]:
    return [call for call in stack.session.calls if isinstance(call, EditMessageText)]


def test_the_fallback_knows_every_admin_menu_prefix() -> None:
    assert {cls.__prefix__ for cls in MENU_CLASSES} == MENU_PREFIXES
    assert {"es", "eg", "nr", "iv", "hs", "wrs"} <= MENU_PREFIXES


@pytest.mark.parametrize("prefix", [cls.__prefix__ for cls in MENU_CLASSES])
async def test_an_outdated_admin_menu_button_gets_a_fresh_menu(
    pool: asyncpg.Pool, prefix: str
) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN])
    update = stack.callback(ADMIN, outdated(prefix))
    await stack.feed(update)
    (answer,) = answers_to(stack, update.callback_query.id)
    assert (answer.text, answer.show_alert) == (FRESH, True)
    assert [edit.text for edit in edits(stack)] == [MAIN_MENU]


@pytest.mark.parametrize("data", [outdated("es"), outdated("wrs"), outdated("adv"), "zz:1"])
async def test_an_outdated_button_of_a_non_admin_gets_no_menu(
    pool: asyncpg.Pool, data: str
) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN])
    update = stack.callback(USER, data)
    await stack.feed(update)
    (answer,) = answers_to(stack, update.callback_query.id)
    assert (answer.text, answer.show_alert) == (SEND_AGAIN, True)
    assert edits(stack) == []


async def test_an_admins_outdated_button_outside_the_menu_gets_no_menu(
    pool: asyncpg.Pool,
) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN])
    update = stack.callback(ADMIN, outdated("adv"))
    await stack.feed(update)
    (answer,) = answers_to(stack, update.callback_query.id)
    assert answer.text == SEND_AGAIN
    assert edits(stack) == []


# (who, data, the answer's text or None, show_alert)
CASES = [
    pytest.param(ADMIN, "wr:health", None, None, id="screen"),
    pytest.param(
        ADMIN,
        "eg:999999:0",
        "This error group does not exist (any more).",
        True,
        id="refusal-in-handler",
    ),
    pytest.param(
        USER, "wr:health", "This section is for administrators only.", True, id="admin-only"
    ),
    pytest.param(ADMIN, "iv:check", "Checking the inventory…", None, id="answered-before"),
    pytest.param(ADMIN, "wrx:0123abcd:2", None, None, id="batch-answered-before"),
    pytest.param(
        USER,
        "iv:check",
        "This section is for administrators only.",
        True,
        id="admin-only-before-a-long-run",
    ),
    pytest.param(ADMIN, "zz:1", SEND_AGAIN, True, id="outdated"),
    pytest.param(USER, "lang:ru", "Язык изменён.", None, id="language"),
]


@pytest.mark.parametrize(("who", "data", "text", "show_alert"), CASES)
async def test_every_callback_is_answered_exactly_once(
    pool: asyncpg.Pool, who: int, data: str, text: str | None, show_alert: bool | None
) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN])
    update = stack.callback(who, data)
    await stack.feed(update)
    (answer,) = answers_to(stack, update.callback_query.id)
    assert (answer.text, answer.show_alert) == (text, show_alert)
    assert stack.session.rejected == []


async def test_a_handler_that_fails_is_answered_once_by_the_error_middleware(
    pool: asyncpg.Pool,
) -> None:
    stack = make_stack(pool, admin_ids=[ADMIN])
    await pool.execute("ALTER TABLE admin_audit_log RENAME TO admin_audit_log_gone")
    update = stack.callback(ADMIN, "hs:0")
    await stack.feed(update)
    (answer,) = answers_to(stack, update.callback_query.id)
    assert answer.show_alert is True
    reference = await pool.fetchval("SELECT reference FROM error_records")
    assert reference and reference in (answer.text or "")
