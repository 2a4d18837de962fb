"""Every dialogue step has a hint for a message it cannot take, and outside a dialogue an
unknown command, free text and media each get their own hint."""

from __future__ import annotations

import datetime as dt

from aiogram.fsm.state import StatesGroup
from aiogram.types import Chat, Message, PhotoSize, Sticker, User

import handlers.admin.errors
import handlers.admin.inventory
import handlers.admin.stuck_workflows
import handlers.client
import handlers.staff
from bot.i18n import create_i18n
from handlers.fallback import STEP_HINTS, message_hint

MODULES = (
    handlers.client,
    handlers.staff,
    handlers.admin.errors,
    handlers.admin.inventory,
    handlers.admin.stuck_workflows,
)


def _states() -> set[str]:
    names: set[str] = set()
    for module in MODULES:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, StatesGroup)
                and value is not StatesGroup
            ):
                names.update(s.state for s in value.__all_states__ if s.state)
    return names


def test_every_dialogue_step_has_a_hint() -> None:
    states = _states()
    assert "NewRequest:description" in states
    assert states <= set(STEP_HINTS), sorted(states - set(STEP_HINTS))


def _message(**content: object) -> Message:
    return Message(
        message_id=1,
        date=dt.datetime.now(dt.UTC),
        chat=Chat(id=1, type="private"),
        from_user=User(id=1, is_bot=False, first_name="A"),
        **content,
    )


def test_each_kind_of_message_gets_its_own_hint() -> None:
    i18n = create_i18n("en")
    photo = [PhotoSize(file_id="f", file_unique_id="u", width=1, height=1)]
    sticker = Sticker(
        file_id="s",
        file_unique_id="su",
        type="regular",
        width=1,
        height=1,
        is_animated=False,
        is_video=False,
    )
    with i18n.context(), i18n.use_locale("en"):
        command = message_hint(_message(text="/nonsense"), None)
        text = message_hint(_message(text="hello"), None)
        media = message_hint(_message(photo=photo), None)
        sticker_hint = message_hint(_message(sticker=sticker), None)
        at_step = message_hint(_message(photo=photo), "NewRequest:description")
    assert "do not know this command" in command
    assert "commands only" in text
    assert "only text messages" in media and media == sticker_hint
    assert "description" in at_step and "text message" in at_step
    assert len({command, text, media, at_step}) == 4
