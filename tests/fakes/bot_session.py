"""An in-process test double of aiogram's Bot API session (no network).

It records every method the bot calls and answers it the way Telegram does, through
aiogram's own response parsing (``BaseSession.check_response`` on a JSON body): a Message
for ``sendMessage``/``editMessageText``, ``true`` for the rest. Queued Telegram error bodies
(``fail_next``) come back as the exceptions aiogram raises for them. A callback query can
be answered once; a second answer gets Telegram's "query is too old" error.

Like Telegram, it refuses what Telegram refuses, with Telegram's 400 answers (the checks of
``tests.fakes.telegram_api``): text in HTML parse mode that is not valid Telegram HTML
("can't parse entities"), an empty text, a text over 4096 characters (a caption over 1024)
after entity parsing, callback data outside 1..64 bytes, a button without text, a callback
answer over 200 characters. ``rejected`` lists the refused calls::

    session = FakeBotSession()
    bot = Bot(TOKEN, session=session)
    session.fail_next("sendMessage", **BOT_BLOCKED, chat_id=42)
    await dp.feed_update(bot, update)
    assert session.texts_to(42) == [...]
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiogram.client.default import Default
from aiogram.client.session.base import BaseSession
from aiogram.methods import AnswerCallbackQuery, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import InlineKeyboardMarkup

from tests.fakes.telegram_api import QUERY_TOO_OLD, ApiError, _trim, _u16, parse_html

# Telegram's limits (https://core.telegram.org/bots/api): message text 1-4096 characters
# after entities parsing, caption 0-1024, callback data 1-64 bytes, callback answer text
# 0-200 characters.
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64
CALLBACK_ANSWER_LIMIT = 200

if TYPE_CHECKING:
    from aiogram import Bot


@dataclass
class _Failure:
    method: str
    error_code: int
    description: str
    parameters: dict[str, Any] | None
    chat_id: int | None


class FakeBotSession(BaseSession):
    """Records calls (``calls``) and answers them; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[TelegramMethod[Any]] = []
        self._outcomes: list[bool] = []  # per call: Telegram accepted it
        self._failures: list[_Failure] = []
        self._answered: set[str] = set()
        self._message_ids = itertools.count(1)
        self.rejected: list[tuple[TelegramMethod[Any], str]] = []
        """Calls refused the way Telegram refuses invalid input, with the description."""

    def fail_next(
        self,
        method: str,
        *,
        error_code: int,
        description: str,
        parameters: dict[str, Any] | None = None,
        chat_id: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (Bot API name, e.g. ``sendMessage``;
        optionally only for ``chat_id``) with Telegram's error body."""
        failure = _Failure(method.lower(), error_code, description, parameters, chat_id)
        self._failures += [failure] * times

    def texts_to(self, chat_id: int) -> list[str]:
        """Texts of the messages sent to ``chat_id`` that Telegram accepted, oldest first."""
        return [
            str(getattr(call, "text", ""))
            for call, ok in zip(self.calls, self._outcomes, strict=True)
            if ok
            and call.__api_method__ == "sendMessage"
            and getattr(call, "chat_id", None) == chat_id
        ]

    @property
    def callback_answers(self) -> list[AnswerCallbackQuery]:
        """The accepted answerCallbackQuery calls, oldest first."""
        return [
            call
            for call, ok in zip(self.calls, self._outcomes, strict=True)
            if ok and isinstance(call, AnswerCallbackQuery)
        ]

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
    ) -> TelegramType:
        self.calls.append(method)
        self._outcomes.append(False)
        try:
            self._validate(bot, method)
        except ApiError as exc:
            self.rejected.append((method, exc.description))
            status, body = exc.error_code, exc.body()
        else:
            status, body = self._answer(method)
        result = self.check_response(bot, method, status, json.dumps(body))
        self._outcomes[-1] = True
        return result.result  # type: ignore[return-value]

    @staticmethod
    def _validate(bot: Bot, method: TelegramMethod[Any]) -> None:
        """Raise Telegram's error for input Telegram refuses (see the module docstring)."""
        api = method.__api_method__
        mode = getattr(method, "parse_mode", None)
        if isinstance(mode, Default):
            mode = bot.default[mode.name]
        mode = getattr(mode, "value", mode)  # ParseMode.HTML -> "HTML"
        for field, limit in (("text", TEXT_LIMIT), ("caption", CAPTION_LIMIT)):
            if not hasattr(method, field) or api == "answerCallbackQuery":
                continue
            value = getattr(method, field)
            if value is None:
                if field == "text":
                    raise ApiError(400, "Bad Request: message text is empty")
                continue
            text = str(value)
            if str(mode or "").lower() == "html" and not getattr(method, "entities", None):
                text, entities = parse_html(text)  # raises "can't parse entities"
            else:
                entities = []
            text, _ = _trim(text, entities)
            if field == "text" and not text:
                raise ApiError(400, "Bad Request: message text is empty")
            if _u16(text) > limit:
                what = "message" if field == "text" else "message caption"
                raise ApiError(400, f"Bad Request: {what} is too long")
        markup = getattr(method, "reply_markup", None)
        if isinstance(markup, InlineKeyboardMarkup):
            for row in markup.inline_keyboard:
                for button in row:
                    if not button.text:
                        raise ApiError(400, "Bad Request: BUTTON_TEXT_EMPTY")
                    data = button.callback_data
                    if data is not None and not 1 <= len(data.encode()) <= CALLBACK_DATA_LIMIT:
                        raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        answer = method.text if isinstance(method, AnswerCallbackQuery) else None
        if answer is not None and len(answer) > CALLBACK_ANSWER_LIMIT:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")

    def _answer(self, method: TelegramMethod[Any]) -> tuple[int, dict[str, Any]]:
        api = method.__api_method__
        chat_id = getattr(method, "chat_id", None)
        for failure in self._failures:
            if failure.method == api.lower() and failure.chat_id in (None, chat_id):
                self._failures.remove(failure)
                body: dict[str, Any] = {
                    "ok": False,
                    "error_code": failure.error_code,
                    "description": failure.description,
                }
                if failure.parameters:
                    body["parameters"] = failure.parameters
                return failure.error_code, body
        if isinstance(method, AnswerCallbackQuery):
            if method.callback_query_id in self._answered:
                return 400, {"ok": False, "error_code": 400, "description": QUERY_TOO_OLD}
            self._answered.add(method.callback_query_id)
            return 200, {"ok": True, "result": True}
        if api in ("sendMessage", "editMessageText"):
            message = {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "text": getattr(method, "text", ""),
            }
            return 200, {"ok": True, "result": message}
        return 200, {"ok": True, "result": True}

    async def close(self) -> None:
        """Nothing to close."""

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 - aiogram's signature
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        """Downloads are not part of this double."""
        raise NotImplementedError
        yield b""  # pragma: no cover
